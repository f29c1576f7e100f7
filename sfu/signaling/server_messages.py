"""Server messages (docs/protocol.md, server → client): one frozen value per message type,
each with the one ``to_wire()`` that makes its JSON object; and ``from_event``, the mapping
from the media layer's domain events (sfu/events.py) to the messages that carry them.

Nothing else in the server builds a wire dict for a client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import SignalingError
from ..events import ConsumerBound, LayersNeeded, MediaEvent, SubscribeOfferReady, TrackQualityChanged
from ..forwarding import Producer
from .messages import PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """The wire's track object."""

    id: str
    kind: str
    source: str
    muted: bool
    layers: tuple[str | None, ...] | None = None  # RIDs, lowest first, for a simulcast video

    @classmethod
    def of(cls, producer: Producer) -> TrackInfo:
        layers = tuple(layer.rid for layer in producer.layers) if producer.simulcast else None
        return cls(producer.id, producer.kind, producer.source, producer.muted, layers)

    def to_wire(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "kind": self.kind, "source": self.source, "muted": self.muted}
        if self.layers is not None:
            d["layers"] = list(self.layers)
        return d


@dataclass(frozen=True, slots=True)
class ParticipantInfo:
    """The wire's participant object."""

    id: str
    name: str
    tracks: tuple[TrackInfo, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "tracks": [t.to_wire() for t in self.tracks]}


class ServerMessage:
    """Base of every server message: ``TYPE`` is its wire ``type``."""

    __slots__ = ()
    TYPE: ClassVar[str]

    def to_wire(self) -> dict[str, Any]:
        raise NotImplementedError

    def encode(self) -> str:
        """The text frame."""
        return json.dumps(self.to_wire(), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class JoinInfo:
    """What ``joined`` tells about the server and the connection."""

    ice_servers: tuple[Mapping[str, Any], ...]
    heartbeat_interval_s: float
    max_message_bytes: int


@dataclass(frozen=True, slots=True)
class Joined(ServerMessage):
    TYPE: ClassVar[str] = "joined"
    participant_id: str
    room: str
    participants: tuple[ParticipantInfo, ...]
    info: JoinInfo

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "protocol": PROTOCOL_VERSION,
            "id": self.participant_id,
            "room": self.room,
            "participants": [p.to_wire() for p in self.participants],
            "ice_servers": [dict(s) for s in self.info.ice_servers],
            "heartbeat_interval_s": self.info.heartbeat_interval_s,
            "max_message_bytes": self.info.max_message_bytes,
        }


@dataclass(frozen=True, slots=True)
class ParticipantJoined(ServerMessage):
    TYPE: ClassVar[str] = "participant-joined"
    participant: ParticipantInfo

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "participant": self.participant.to_wire()}


@dataclass(frozen=True, slots=True)
class ParticipantLeft(ServerMessage):
    TYPE: ClassVar[str] = "participant-left"
    participant_id: str
    reason: str  # left, timeout, disconnected, kicked

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.participant_id, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class TrackPublished(ServerMessage):
    TYPE: ClassVar[str] = "track-published"
    participant_id: str
    track: TrackInfo

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "participant": self.participant_id, "track": self.track.to_wire()}


@dataclass(frozen=True, slots=True)
class TrackUnpublished(ServerMessage):
    TYPE: ClassVar[str] = "track-unpublished"
    participant_id: str
    track_id: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "participant": self.participant_id, "track": self.track_id}


@dataclass(frozen=True, slots=True)
class PublishAnswer(ServerMessage):
    TYPE: ClassVar[str] = "answer"
    sdp: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "pc": "publish", "sdp": self.sdp}


@dataclass(frozen=True, slots=True)
class SubscribeOffer(ServerMessage):
    TYPE: ClassVar[str] = "offer"
    sdp: str
    consumers: tuple[ConsumerBound, ...]

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "pc": "subscribe",
            "sdp": self.sdp,
            "consumers": [
                {"mid": c.mid, "participant": c.participant_id, "track": c.track_id, "kind": c.kind, "source": c.source}
                for c in self.consumers
            ],
        }


@dataclass(frozen=True, slots=True)
class MuteChanged(ServerMessage):
    TYPE: ClassVar[str] = "mute"
    participant_id: str
    track_id: str
    muted: bool

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "participant": self.participant_id, "track": self.track_id, "muted": self.muted}


@dataclass(frozen=True, slots=True)
class ChatRelayed(ServerMessage):
    TYPE: ClassVar[str] = "chat"
    sender_id: str
    name: str
    text: str
    ts_ms: int

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "from": self.sender_id, "name": self.name, "text": self.text, "ts_ms": self.ts_ms}


@dataclass(frozen=True, slots=True)
class TrackQuality(ServerMessage):
    TYPE: ClassVar[str] = "track-quality"
    track_id: str
    paused: bool
    reason: str
    estimate_bps: int | None

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "track": self.track_id,
            "paused": self.paused,
            "reason": self.reason,
            "estimate_bps": self.estimate_bps,
        }


@dataclass(frozen=True, slots=True)
class Layers(ServerMessage):
    TYPE: ClassVar[str] = "layers"
    track_id: str
    active: tuple[str, ...]
    paused: bool

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "track": self.track_id, "active": list(self.active), "paused": self.paused}


@dataclass(frozen=True, slots=True)
class ActiveSpeaker(ServerMessage):
    TYPE: ClassVar[str] = "active-speaker"
    participant_id: str | None

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "participant": self.participant_id}


@dataclass(frozen=True, slots=True)
class Recording(ServerMessage):
    TYPE: ClassVar[str] = "recording"
    active: bool
    participant_ids: tuple[str, ...]  # whose media is being written to files now

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "active": self.active, "participants": list(self.participant_ids)}


@dataclass(frozen=True, slots=True)
class Pong(ServerMessage):
    TYPE: ClassVar[str] = "pong"

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE}


@dataclass(frozen=True, slots=True)
class ServerShutdown(ServerMessage):
    TYPE: ClassVar[str] = "server-shutdown"
    grace_s: float

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "grace_s": self.grace_s}


@dataclass(frozen=True, slots=True)
class Error(ServerMessage):
    TYPE: ClassVar[str] = "error"
    error: SignalingError
    request: str | None = None  # the type of the message that failed

    def to_wire(self) -> dict[str, Any]:
        return self.error.to_wire(self.request)


@dataclass(frozen=True, slots=True)
class DataError(ServerMessage):
    """Data channel messages of this sender that were not relayed (docs/protocol.md, Data
    channels): ``dropped`` of them since the last ``data-error`` with this code."""

    TYPE: ClassVar[str] = "data-error"
    error: SignalingError
    reliable: bool
    dropped: int = 1
    ref: str | None = None  # the frame's own ``ref``, when it had one

    def to_wire(self) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "type": self.TYPE,
            "code": self.error.code,
            "message": self.error.message,
            "channel": "reliable" if self.reliable else "lossy",
            "dropped": self.dropped,
        }
        if self.ref is not None:
            msg["ref"] = self.ref
        return msg


SERVER_MESSAGES: tuple[type[ServerMessage], ...] = (
    Joined,
    ParticipantJoined,
    ParticipantLeft,
    TrackPublished,
    TrackUnpublished,
    PublishAnswer,
    SubscribeOffer,
    MuteChanged,
    ChatRelayed,
    TrackQuality,
    Layers,
    ActiveSpeaker,
    Recording,
    Pong,
    ServerShutdown,
    Error,
    DataError,
)
SERVER_TYPES = frozenset(m.TYPE for m in SERVER_MESSAGES)


def from_event(event: MediaEvent) -> ServerMessage:
    """The message that tells the client about a media-layer event."""
    match event:
        case LayersNeeded(track_id=track, active_rids=rids, paused=paused):
            return Layers(track, rids, paused)
        case SubscribeOfferReady(sdp=sdp, consumers=consumers):
            return SubscribeOffer(sdp, consumers)
        case TrackQualityChanged(track_id=track, paused=paused, reason=reason, estimate_bps=estimate):
            return TrackQuality(track, paused, reason, estimate)
    raise TypeError(f"not a media event: {event!r}")

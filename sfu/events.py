"""Domain events the media layer emits; the signaling layer turns them into wire messages.

The media layer (rtc/, forwarding, bwe/) never builds wire dicts: a peer is given an
``EventSink`` and hands it one of these values. ``sfu/signaling`` maps each to the message of
docs/protocol.md (``layers``, ``offer`` on the subscribe connection, ``track-quality``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LayersNeeded:
    """Dynacast: the publisher should send exactly these simulcast layers of a track."""

    track_id: str
    active_rids: tuple[str, ...]
    paused: bool


@dataclass(frozen=True, slots=True)
class ConsumerBound:
    """One m-section of a subscribe offer and the track it carries."""

    mid: str
    participant_id: str
    track_id: str
    kind: str
    source: str


@dataclass(frozen=True, slots=True)
class SubscribeOfferReady:
    """The server's subscribe offer, to be answered by the client."""

    sdp: str
    consumers: tuple[ConsumerBound, ...]
    restart: bool = False  # the first offer of a renewed connection


@dataclass(frozen=True, slots=True)
class TrackQualityChanged:
    """A subscriber's video was paused (or resumed) for lack of downlink bandwidth."""

    track_id: str
    paused: bool
    reason: str
    estimate_bps: int | None


MediaEvent = LayersNeeded | SubscribeOfferReady | TrackQualityChanged
EventSink = Callable[[MediaEvent], Awaitable[None]]

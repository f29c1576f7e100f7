"""Client messages (docs/protocol.md, client → server): parsed and validated once, at the
boundary, into frozen values; everything past ``parse`` works with these types only.

``parse`` raises ``BadRequest`` (``bad-json``, ``unknown-type``, ``bad-message``) and nothing
else, whatever the input (the fuzzer in tests/fuzz holds it to that).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ..errors import BadRequest

PROTOCOL_VERSION = 1
ROOM_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # always with fullmatch
SOURCES = frozenset({"camera", "microphone", "screen"})
# An SDP has no length limit of its own: the frame it comes in does (max_message_bytes, checked
# before parsing), so that raising max_m_sections_per_sdp and max_message_bytes together is
# enough for a big room's offers and answers.
MAX_SDP_CHARS = sys.maxsize
MAX_CHAT_CHARS = 2000
MAX_TOKEN_CHARS = 4096
MAX_RESUME_TOKEN_CHARS = 128
MAX_NAME_CHARS = 64
MAX_TRACK_CHARS = 128
MAX_CANDIDATE_CHARS = 1024
MAX_SOURCES = 64
MAX_HEIGHT_PX = 8192

PcName = Literal["publish", "subscribe"]


@dataclass(frozen=True, slots=True)
class Join:
    TYPE: ClassVar[str] = "join"
    room: str
    name: str
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Resume:
    """The first message of a new socket that takes a lost session back."""

    TYPE: ClassVar[str] = "resume"
    room: str
    token: str
    participant_id: str | None = None


@dataclass(frozen=True, slots=True)
class PublishOffer:
    TYPE: ClassVar[str] = "offer"
    sdp: str
    sources: Mapping[str, str]
    restart: bool = False  # the first offer of a new publish connection for the same tracks


@dataclass(frozen=True, slots=True)
class Renew:
    """Ask for a new subscribe connection (the server answers with an offer, restart: true)."""

    TYPE: ClassVar[str] = "renew"
    pc: PcName


@dataclass(frozen=True, slots=True)
class SubscribeAnswer:
    TYPE: ClassVar[str] = "answer"
    sdp: str


@dataclass(frozen=True, slots=True)
class IceCandidate:
    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None

    def to_wire(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "sdp_mid": self.sdp_mid, "sdp_mline_index": self.sdp_mline_index}


@dataclass(frozen=True, slots=True)
class Candidate:
    TYPE: ClassVar[str] = "candidate"
    pc: PcName
    candidate: IceCandidate | None  # None: end of candidates


@dataclass(frozen=True, slots=True)
class Mute:
    TYPE: ClassVar[str] = "mute"
    track: str
    muted: bool


@dataclass(frozen=True, slots=True)
class Subscription:
    TYPE: ClassVar[str] = "subscription"
    track: str
    max_height: int | None = None
    paused: bool = False
    pinned: bool = False


@dataclass(frozen=True, slots=True)
class Chat:
    TYPE: ClassVar[str] = "chat"
    text: str


@dataclass(frozen=True, slots=True)
class Ping:
    TYPE: ClassVar[str] = "ping"


@dataclass(frozen=True, slots=True)
class Leave:
    TYPE: ClassVar[str] = "leave"


ClientMessage = (
    Join | Resume | Renew | PublishOffer | SubscribeAnswer | Candidate | Mute | Subscription | Chat | Ping | Leave
)


def _bad(message: str) -> BadRequest:
    return BadRequest("bad-message", message)


def _str(msg: Mapping[str, Any], key: str, max_len: int, min_len: int = 1) -> str:
    value = msg.get(key)
    if not isinstance(value, str):
        raise _bad(f"'{key}' must be a string")
    if not min_len <= len(value) <= max_len:
        raise _bad(f"'{key}' must be {min_len}..{max_len} characters")
    return value


def _bool(msg: Mapping[str, Any], key: str, default: bool | None = None) -> bool:
    value = msg.get(key, default)
    if not isinstance(value, bool):
        raise _bad(f"'{key}' must be true or false")
    return value


def _pc(msg: Mapping[str, Any], allowed: PcName) -> None:
    if msg.get("pc") != allowed:
        raise _bad(f"'pc' must be \"{allowed}\" for {msg['type']}")


def _join(msg: Mapping[str, Any]) -> Join:
    room = _str(msg, "room", 64)
    if not ROOM_RE.fullmatch(room):
        raise _bad("'room' may contain only A-Z a-z 0-9 _ - .")
    name = _str(msg, "name", MAX_NAME_CHARS).strip()
    if not name:
        raise _bad("'name' must not be blank")
    token = None if msg.get("token") is None else _str(msg, "token", MAX_TOKEN_CHARS)
    return Join(room, name, token)


def _resume(msg: Mapping[str, Any]) -> Resume:
    room = _str(msg, "room", 64)
    if not ROOM_RE.fullmatch(room):
        raise _bad("'room' may contain only A-Z a-z 0-9 _ - .")
    token = _str(msg, "token", MAX_RESUME_TOKEN_CHARS)
    participant_id = None if msg.get("id") is None else _str(msg, "id", MAX_TRACK_CHARS)
    return Resume(room, token, participant_id)


def _renew(msg: Mapping[str, Any]) -> Renew:
    _pc(msg, "subscribe")
    return Renew("subscribe")


def _offer(msg: Mapping[str, Any]) -> PublishOffer:
    _pc(msg, "publish")
    sdp = _str(msg, "sdp", MAX_SDP_CHARS)
    sources = msg.get("sources")
    if sources is None:
        sources = {}
    if (
        not isinstance(sources, dict)
        or len(sources) > MAX_SOURCES
        or not all(isinstance(k, str) and isinstance(v, str) and v in SOURCES for k, v in sources.items())
    ):
        raise _bad("'sources' must map mids to camera/microphone/screen")
    return PublishOffer(sdp, dict(sources), _bool(msg, "restart", False))


def _answer(msg: Mapping[str, Any]) -> SubscribeAnswer:
    _pc(msg, "subscribe")
    return SubscribeAnswer(_str(msg, "sdp", MAX_SDP_CHARS))


def _candidate(msg: Mapping[str, Any]) -> Candidate:
    pc = msg.get("pc")
    if pc != "publish" and pc != "subscribe":
        raise _bad('\'pc\' must be "publish" or "subscribe"')
    cand = msg.get("candidate")
    if cand is None:
        return Candidate(pc, None)
    if not isinstance(cand, dict) or not isinstance(cand.get("candidate"), str):
        raise _bad("'candidate' must be null or {candidate, sdp_mid, sdp_mline_index}")
    text = cand["candidate"]
    if len(text) > MAX_CANDIDATE_CHARS:
        raise _bad("'candidate' is too long")
    mid = cand.get("sdp_mid")
    index = cand.get("sdp_mline_index")
    if mid is not None and (not isinstance(mid, str) or len(mid) > 64):
        raise _bad("'sdp_mid' must be a string")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 1024):
        raise _bad("'sdp_mline_index' must be a non-negative integer")
    return Candidate(pc, IceCandidate(text, mid, index))


def _mute(msg: Mapping[str, Any]) -> Mute:
    return Mute(_str(msg, "track", MAX_TRACK_CHARS), _bool(msg, "muted"))


def _subscription(msg: Mapping[str, Any]) -> Subscription:
    track = _str(msg, "track", MAX_TRACK_CHARS)
    height = msg.get("max_height")
    if height is not None and (
        not isinstance(height, int) or isinstance(height, bool) or not 0 <= height <= MAX_HEIGHT_PX
    ):
        raise _bad(f"'max_height' must be null or 0..{MAX_HEIGHT_PX}")
    return Subscription(track, height, _bool(msg, "paused", False), _bool(msg, "pinned", False))


def _chat(msg: Mapping[str, Any]) -> Chat:
    return Chat(_str(msg, "text", MAX_CHAT_CHARS))


_PARSERS: dict[str, Callable[[Mapping[str, Any]], ClientMessage]] = {
    "join": _join,
    "resume": _resume,
    "renew": _renew,
    "offer": _offer,
    "answer": _answer,
    "candidate": _candidate,
    "mute": _mute,
    "subscription": _subscription,
    "chat": _chat,
    "ping": lambda _: Ping(),
    "leave": lambda _: Leave(),
}
CLIENT_TYPES = frozenset(_PARSERS)


def parse(text: str | bytes) -> ClientMessage:
    """Decode one frame into a typed client message, or raise ``BadRequest``."""
    try:
        msg = json.loads(text)
    except RecursionError as exc:  # nested deeper than the decoder can follow
        raise BadRequest("bad-json", "message is nested too deeply") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("bad-json", f"message is not valid JSON: {exc}") from exc
    if not isinstance(msg, dict):
        raise BadRequest("bad-json", "message must be a JSON object")
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in _PARSERS:
        raise BadRequest("unknown-type", f"unknown message type {kind!r:.80}")
    try:
        return _PARSERS[kind](msg)
    except BadRequest as exc:
        exc.request = kind
        raise

"""Parsing and validation of client messages (docs/protocol.md), once, at the boundary."""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import SignalingError

PROTOCOL_VERSION = 1
ROOM_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
SOURCES = {"camera", "microphone", "screen"}
MAX_SDP_CHARS = 60000
MAX_CHAT_CHARS = 2000
MAX_TOKEN_CHARS = 4096

CLIENT_TYPES = {"join", "offer", "answer", "candidate", "mute", "subscription", "chat", "ping", "leave"}
MAX_HEIGHT_PX = 8192


def _str(msg: dict[str, Any], key: str, max_len: int, min_len: int = 1) -> str:
    value = msg.get(key)
    if not isinstance(value, str):
        raise SignalingError("bad-message", f"'{key}' must be a string")
    if not min_len <= len(value) <= max_len:
        raise SignalingError("bad-message", f"'{key}' must be {min_len}..{max_len} characters")
    return value


def _pc(msg: dict[str, Any], allowed: str) -> None:
    if msg.get("pc") != allowed:
        raise SignalingError("bad-message", f"'pc' must be \"{allowed}\" for {msg['type']}")


def parse(text: str | bytes) -> dict[str, Any]:
    """Decode one frame into a validated message dict, or raise SignalingError."""
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignalingError("bad-json", f"message is not valid JSON: {exc}") from exc
    if not isinstance(msg, dict):
        raise SignalingError("bad-json", "message must be a JSON object")
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        raise SignalingError("unknown-type", f"unknown message type {kind!r}")
    validate = _VALIDATORS.get(kind)
    if validate is not None:
        validate(msg)
    return msg


def _join(msg: dict[str, Any]) -> None:
    room = _str(msg, "room", 64)
    if not ROOM_RE.match(room):
        raise SignalingError("bad-message", "'room' may contain only A-Z a-z 0-9 _ - .")
    name = _str(msg, "name", 64).strip()
    if not name:
        raise SignalingError("bad-message", "'name' must not be blank")
    msg["name"] = name
    token = msg.get("token")
    if token is not None:
        _str(msg, "token", MAX_TOKEN_CHARS)


def _offer(msg: dict[str, Any]) -> None:
    _pc(msg, "publish")
    _str(msg, "sdp", MAX_SDP_CHARS)
    sources = msg.get("sources", {})
    if sources is None:
        sources = {}
    if not isinstance(sources, dict) or not all(isinstance(k, str) and v in SOURCES for k, v in sources.items()):
        raise SignalingError("bad-message", "'sources' must map mids to camera/microphone/screen")
    msg["sources"] = sources


def _answer(msg: dict[str, Any]) -> None:
    _pc(msg, "subscribe")
    _str(msg, "sdp", MAX_SDP_CHARS)


def _candidate(msg: dict[str, Any]) -> None:
    if msg.get("pc") not in ("publish", "subscribe"):
        raise SignalingError("bad-message", '\'pc\' must be "publish" or "subscribe"')
    cand = msg.get("candidate")
    if cand is None:
        return
    if not isinstance(cand, dict) or not isinstance(cand.get("candidate"), str):
        raise SignalingError("bad-message", "'candidate' must be null or {candidate, sdp_mid, sdp_mline_index}")
    if len(cand["candidate"]) > 1024:
        raise SignalingError("bad-message", "'candidate' is too long")
    mid = cand.get("sdp_mid")
    index = cand.get("sdp_mline_index")
    if mid is not None and not isinstance(mid, str):
        raise SignalingError("bad-message", "'sdp_mid' must be a string")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
        raise SignalingError("bad-message", "'sdp_mline_index' must be a non-negative integer")


def _mute(msg: dict[str, Any]) -> None:
    _str(msg, "track", 128)
    if not isinstance(msg.get("muted"), bool):
        raise SignalingError("bad-message", "'muted' must be true or false")


def _subscription(msg: dict[str, Any]) -> None:
    _str(msg, "track", 128)
    height = msg.get("max_height")
    if height is not None and (
        not isinstance(height, int) or isinstance(height, bool) or not 0 <= height <= MAX_HEIGHT_PX
    ):
        raise SignalingError("bad-message", f"'max_height' must be null or 0..{MAX_HEIGHT_PX}")
    paused = msg.get("paused", False)
    if not isinstance(paused, bool):
        raise SignalingError("bad-message", "'paused' must be true or false")
    pinned = msg.get("pinned", False)
    if not isinstance(pinned, bool):
        raise SignalingError("bad-message", "'pinned' must be true or false")
    msg["max_height"] = height
    msg["paused"] = paused
    msg["pinned"] = pinned


def _chat(msg: dict[str, Any]) -> None:
    _str(msg, "text", MAX_CHAT_CHARS)


_VALIDATORS = {
    "join": _join,
    "offer": _offer,
    "answer": _answer,
    "candidate": _candidate,
    "mute": _mute,
    "subscription": _subscription,
    "chat": _chat,
}

"""The data channel frame (docs/protocol.md, Data channels): one message on a data channel.

Both ways, every data channel message is one binary frame::

    byte 0      version (1)
    byte 1      flags: 0x01 the payload is UTF-8 text; the other bits are zero
    bytes 2-3   header length H, big-endian (0..MAX_HEADER_BYTES)
    H bytes     header: a JSON object (UTF-8); H = 0 is the empty header
    the rest    payload (any bytes; UTF-8 when flagged as text)

Header fields: from a client, ``topic`` (a string), ``to`` (participant ids: only they get
it; absent: everyone else in the room) and ``ref`` (a string echoed in a ``data-error`` about
this frame); from the server, ``from`` (the sender's participant id) and ``topic``. Unknown
fields are ignored. Pure: no I/O; ``decode`` raises ``MalformedFrame`` and nothing else.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

VERSION = 1
FLAG_TEXT = 0x01
PREFIX = struct.Struct("!BBH")
MAX_HEADER_BYTES = 4096
MAX_TOPIC_CHARS = 128
MAX_DESTINATIONS = 64
MAX_ID_CHARS = 64  # a participant id in ``to``/``from``, and a ``ref``


class MalformedFrame(ValueError):
    """A frame that does not follow the format; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class DataFrame:
    """One data channel message: its payload and the header's fields."""

    payload: bytes
    text: bool = False
    topic: str | None = None
    to: tuple[str, ...] | None = None  # None: everyone (from a client only)
    sender: str | None = None  # "from" (from the server only)
    ref: str | None = None

    @classmethod
    def of_text(cls, text: str, **fields: Any) -> DataFrame:
        return cls(text.encode(), text=True, **fields)

    def as_text(self) -> str:
        """The payload as text (a text frame decodes; a binary one is read as UTF-8)."""
        return self.payload.decode("utf-8", "replace")


def encode(frame: DataFrame) -> bytes:
    """The wire form of a frame (raises ValueError for a field out of range)."""
    header: dict[str, Any] = {}
    if frame.sender is not None:
        header["from"] = frame.sender
    if frame.topic is not None:
        header["topic"] = frame.topic
    if frame.to is not None:
        header["to"] = list(frame.to)
    if frame.ref is not None:
        header["ref"] = frame.ref
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode() if header else b""
    if len(raw) > MAX_HEADER_BYTES:
        raise ValueError(f"the header is {len(raw)} bytes; at most {MAX_HEADER_BYTES}")
    return PREFIX.pack(VERSION, FLAG_TEXT if frame.text else 0, len(raw)) + raw + frame.payload


def relayed(frame: DataFrame, sender_id: str) -> bytes:
    """The frame the server delivers: the sender's id and the topic, and the payload."""
    return encode(DataFrame(frame.payload, frame.text, frame.topic, sender=sender_id))


def decode(data: bytes) -> DataFrame:
    """Parse and check one frame; raises MalformedFrame."""
    if len(data) < PREFIX.size:
        raise MalformedFrame(f"a frame has at least {PREFIX.size} bytes, this one {len(data)}")
    version, flags, header_len = PREFIX.unpack_from(data)
    if version != VERSION:
        raise MalformedFrame(f"unknown frame version {version} (this server speaks {VERSION})")
    if flags & ~FLAG_TEXT:
        raise MalformedFrame(f"unknown flags 0x{flags:02x}")
    if header_len > MAX_HEADER_BYTES:
        raise MalformedFrame(f"the header is {header_len} bytes; at most {MAX_HEADER_BYTES}")
    end = PREFIX.size + header_len
    if end > len(data):
        raise MalformedFrame(f"the header is {header_len} bytes but only {len(data) - PREFIX.size} follow")
    payload = bytes(data[end:])
    text = bool(flags & FLAG_TEXT)
    if text:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedFrame(f"a text payload must be UTF-8: {exc.reason} at byte {exc.start}") from None
    if header_len == 0:
        return DataFrame(payload, text)
    try:
        header = json.loads(bytes(data[PREFIX.size : end]))
    except RecursionError:
        raise MalformedFrame("the header is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedFrame(f"the header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise MalformedFrame("the header must be a JSON object")
    return DataFrame(
        payload,
        text,
        topic=_optional_str(header, "topic", MAX_TOPIC_CHARS),
        to=_destinations(header),
        sender=_optional_str(header, "from", MAX_ID_CHARS),
        ref=_optional_str(header, "ref", MAX_ID_CHARS),
    )


def peek_ref(data: bytes) -> str | None:
    """The ``ref`` of a frame that is refused whole (too large), if its header has a valid one."""
    if len(data) < PREFIX.size:
        return None
    header_len = PREFIX.unpack_from(data)[2]
    try:
        return decode(bytes(data[: PREFIX.size + header_len])).ref
    except MalformedFrame:
        return None


def _optional_str(header: dict[str, Any], key: str, max_chars: int) -> str | None:
    value = header.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= max_chars:
        raise MalformedFrame(f"'{key}' must be a string of 1..{max_chars} characters")
    return value


def _destinations(header: dict[str, Any]) -> tuple[str, ...] | None:
    value = header.get("to")
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= MAX_DESTINATIONS
        or not all(isinstance(v, str) and 1 <= len(v) <= MAX_ID_CHARS for v in value)
    ):
        raise MalformedFrame(f"'to' must be a list of 1..{MAX_DESTINATIONS} participant ids")
    return tuple(dict.fromkeys(value))

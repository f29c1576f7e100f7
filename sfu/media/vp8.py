"""VP8 payload descriptor (RFC 7741): reading it, and rewriting picture ID and TL0PICIDX.

When a consumer switches between simulcast layers, each layer has its own picture ID and
TL0PICIDX sequence. The subscriber's decoder must see one continuous sequence, so the consumer
rewrites both, keeping their sizes (7- or 15-bit picture ID) so the payload length is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .compiled import twin


@dataclass(slots=True)
class Vp8Descriptor:
    picture_id: int  # -1 when absent
    picture_id_pos: int  # offset of the first picture ID byte
    picture_id_bits: int  # 7 or 15
    tl0picidx: int  # -1 when absent
    tl0picidx_pos: int
    start_of_frame: bool  # S bit with partition index 0
    header_size: int


def parse_descriptor(payload: bytes) -> Vp8Descriptor | None:
    n = len(payload)
    if n < 1:
        return None
    b0 = payload[0]
    pos = 1
    pid, pid_pos, pid_bits, tl0, tl0_pos = -1, -1, 0, -1, -1
    if b0 & 0x80:
        if n < 2:
            return None
        x = payload[1]
        pos = 2
        if x & 0x80:
            if n <= pos:
                return None
            pid_pos = pos
            if payload[pos] & 0x80:
                if n <= pos + 1:
                    return None
                pid = ((payload[pos] & 0x7F) << 8) | payload[pos + 1]
                pid_bits = 15
                pos += 2
            else:
                pid = payload[pos] & 0x7F
                pid_bits = 7
                pos += 1
        if x & 0x40:
            if n <= pos:
                return None
            tl0, tl0_pos = payload[pos], pos
            pos += 1
        if x & 0x30:
            pos += 1
    if pos > n:
        return None
    return Vp8Descriptor(pid, pid_pos, pid_bits, tl0, tl0_pos, bool(b0 & 0x10) and not b0 & 0x07, pos)


def keyframe_size(payload: bytes) -> tuple[int, int] | None:
    """(width, height) from the first packet of a VP8 keyframe, or None."""
    d = parse_descriptor(payload)
    if d is None or not d.start_of_frame:
        return None
    p = d.header_size
    if len(payload) < p + 10 or payload[p] & 0x01:
        return None
    if payload[p + 3 : p + 6] != b"\x9d\x01\x2a":
        return None
    width = (payload[p + 6] | (payload[p + 7] << 8)) & 0x3FFF
    height = (payload[p + 8] | (payload[p + 9] << 8)) & 0x3FFF
    return width, height


# The descriptor of the payload parsed last: every consumer of a packet rewrites the same
# payload object (the producer slices it once), so it is parsed once, not once per consumer.
# The cache holds the payload itself, so its identity cannot be reused by another object.
_last_payload: bytes = b""
_last_descriptor: Vp8Descriptor | None = None


def parse_descriptor_once(payload: bytes) -> Vp8Descriptor | None:
    """``parse_descriptor`` of ``payload``, from the one-entry cache when it was the last one
    parsed. The descriptor is shared: read it, never change it."""
    global _last_payload, _last_descriptor
    if payload is not _last_payload:
        _last_descriptor = parse_descriptor(payload)
        _last_payload = payload
    return _last_descriptor


class PyVp8Munger:
    """Keeps picture ID and TL0PICIDX continuous across restarts and layer switches (the
    reference implementation; ``Vp8Munger`` is its compiled twin when built, compiled.py)."""

    __slots__ = ("_pending", "_pid_offset", "_started", "_tl0_offset", "last_pid", "last_tl0")

    def __init__(self) -> None:
        self._pid_offset = 0
        self._tl0_offset = 0
        self.last_pid = -1
        self.last_tl0 = -1
        self._started = False
        self._pending = False

    def restart(self) -> None:
        """The next packet (a keyframe of any layer) continues from the last values sent."""
        self._pending = True

    def rewrite(self, payload: bytes) -> bytes:
        d = _last_descriptor if payload is _last_payload else parse_descriptor_once(payload)
        if d is None or d.picture_id < 0:
            return payload
        mask = 0x7FFF if d.picture_id_bits == 15 else 0x7F
        if self._pending or not self._started:
            if self._started and self.last_pid >= 0:
                self._pid_offset = (self.last_pid + 1 - d.picture_id) & 0x7FFF
                if d.tl0picidx >= 0 and self.last_tl0 >= 0:
                    self._tl0_offset = (self.last_tl0 + 1 - d.tl0picidx) & 0xFF
            self._started = True
            self._pending = False
        if self._pid_offset == 0 and self._tl0_offset == 0:
            self._remember(d.picture_id, d.tl0picidx, mask)
            return payload
        pid = (d.picture_id + self._pid_offset) & mask
        buf = bytearray(payload)
        if d.picture_id_bits == 15:
            buf[d.picture_id_pos] = 0x80 | (pid >> 8)
            buf[d.picture_id_pos + 1] = pid & 0xFF
        else:
            buf[d.picture_id_pos] = pid
        tl0 = -1
        if d.tl0picidx >= 0:
            tl0 = (d.tl0picidx + self._tl0_offset) & 0xFF
            buf[d.tl0picidx_pos] = tl0
        self._remember(pid, tl0, mask)
        return bytes(buf)

    def _remember(self, pid: int, tl0: int, mask: int) -> None:
        # Only move forward (a late packet of an older frame must not pull the state back),
        # judged in the picture ID's own width (a 7-bit ID wraps from 127 to 0).
        if self.last_pid < 0 or ((pid - self.last_pid) & mask) <= mask >> 1:
            self.last_pid = pid
        if tl0 >= 0 and (self.last_tl0 < 0 or ((tl0 - self.last_tl0) & 0xFF) < 0x80):
            self.last_tl0 = tl0


# The compiled twin (sfu/rtc/_media.c: it parses each payload, no one-entry cache) when built.
if TYPE_CHECKING:
    Vp8Munger = PyVp8Munger
else:
    Vp8Munger = twin("Vp8Munger") or PyVp8Munger

"""Whole frames from RTP payloads, for recording: VP8 (RFC 7741) and H.264 (RFC 6184), Opus
as is. Nothing is decoded: a frame is the concatenation of its packets' payloads without the
RTP payload headers (VP8) or turned into Annex B byte stream (H.264: single NAL units, STAP-A
aggregates, FU-A fragments).

``FrameAssembler`` puts a stream's packets back in order (they may arrive late: NACK
repairs), holds an incomplete frame for up to ``hold_ms`` waiting for the repair, and hands out
complete frames in order. A frame whose packets do not all come is dropped, and so is every
frame after it until the next keyframe (a decoder would show errors in between): the caller
asks the publisher for that keyframe. Video starts on a keyframe. Pure: time is an argument.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .keyframe import h264_keyframe_start, vp8_keyframe_start
from .seq import SeqUnwrapper
from .vp8 import parse_descriptor

ANNEX_B_START = b"\x00\x00\x00\x01"
# How long a frame with a missing packet waits for the packet (a retransmission takes a round
# trip and the NACK delay, a retransmission lost again one more; a recording is not in a hurry),
# and how many packets may wait at most.
DEFAULT_HOLD_MS = 1000
MAX_PENDING_PACKETS = 2048


class MalformedPayload(ValueError):
    """An RTP payload that does not parse as its codec's payload format."""


def vp8_frame_part(payload: bytes) -> bytes:
    """The VP8 data of one RTP payload: the payload descriptor stripped."""
    d = parse_descriptor(payload)
    if d is None:
        raise MalformedPayload("VP8 payload descriptor truncated")
    return payload[d.header_size :]


def vp8_frame_start(payload: bytes) -> bool:
    """The packet begins a VP8 frame (S bit, partition index 0)."""
    return bool(payload) and bool(payload[0] & 0x10) and not payload[0] & 0x07


def h264_frame_part(payload: bytes) -> bytes:
    """The Annex B bytes of one H.264 RTP payload (packetization modes 0 and 1)."""
    n = len(payload)
    if n < 1:
        raise MalformedPayload("empty H.264 payload")
    nal_type = payload[0] & 0x1F
    if nal_type == 24:  # STAP-A: (16-bit size, NAL unit)*
        parts: list[bytes] = []
        pos = 1
        while pos < n:
            if pos + 2 > n:
                raise MalformedPayload("STAP-A size truncated")
            size = (payload[pos] << 8) | payload[pos + 1]
            pos += 2
            if size == 0 or pos + size > n:
                raise MalformedPayload("STAP-A NAL unit truncated")
            parts.append(ANNEX_B_START)
            parts.append(payload[pos : pos + size])
            pos += size
        return b"".join(parts)
    if nal_type == 28:  # FU-A: FU indicator, FU header, fragment
        if n < 2:
            raise MalformedPayload("FU-A header truncated")
        fu = payload[1]
        if fu & 0x80:  # start: the NAL header is rebuilt from indicator and FU header
            return ANNEX_B_START + bytes([(payload[0] & 0xE0) | (fu & 0x1F)]) + payload[2:]
        return payload[2:]
    if 1 <= nal_type <= 23:
        return ANNEX_B_START + payload
    raise MalformedPayload(f"H.264 packetization type {nal_type} is not supported")


def h264_frame_start(payload: bytes) -> bool:
    """The packet begins at a NAL unit boundary (not a FU-A continuation)."""
    if not payload:
        return False
    if payload[0] & 0x1F == 28:
        return len(payload) > 1 and bool(payload[1] & 0x80)
    return True


def h264_parameter_sets(annex_b: bytes) -> bytes:
    """The SPS and PPS NAL units of an Annex B access unit, as Annex B (a stream header)."""
    out: list[bytes] = []
    for nal in annex_b.split(ANNEX_B_START):
        if nal and nal[0] & 0x1F in (7, 8):
            out.append(ANNEX_B_START + nal)
    return b"".join(out)


@dataclass(slots=True)
class Frame:
    """One complete frame: its RTP timestamp, data, whether it is a keyframe, and what the
    caller attached to its first packet (``meta``)."""

    timestamp: int
    data: bytes
    keyframe: bool
    meta: object = None


@dataclass(slots=True)
class _Packet:
    timestamp: int
    marker: int
    payload: bytes
    arrival_ms: int
    meta: object


class FrameAssembler:
    """One stream's packets in, its complete frames out, in order.

    ``codec`` is "VP8", "H264" or an audio codec (one packet is one frame, nothing waits).
    ``push`` returns the frames completed by the packet; ``poll`` the ones released by time
    (an incomplete frame given up). ``keyframe_wanted`` turns True when a frame was lost, and
    again with every frame dropped while the keyframe has not come: the caller asks for one
    (at its own rate) and calls ``keyframe_asked``.
    """

    def __init__(self, codec: str, hold_ms: int = DEFAULT_HOLD_MS) -> None:
        name = codec.upper()
        self.video = name in ("VP8", "H264")
        self._part: Callable[[bytes], bytes] | None
        self._start: Callable[[bytes], bool]
        self._keyframe: Callable[[bytes], bool]
        if name == "VP8":
            self._part, self._start, self._keyframe = vp8_frame_part, vp8_frame_start, vp8_keyframe_start
        elif name == "H264":
            self._part, self._start, self._keyframe = h264_frame_part, h264_frame_start, h264_keyframe_start
        else:
            self._part, self._start, self._keyframe = None, bool, bool
        self.hold_ms = hold_ms
        self._seqs = SeqUnwrapper()
        self._pending: dict[int, _Packet] = {}
        self._next = -1  # extended seq of the next packet to hand out (-1: not started)
        self.waiting_for_keyframe = self.video
        self.keyframe_wanted = self.video
        self.frames = 0
        self.frames_dropped = 0  # lost, incomplete, or skipped while waiting for a keyframe
        self.packets_late = 0  # arrived after their frame was handed out or given up
        self.malformed = 0

    def keyframe_asked(self) -> None:
        self.keyframe_wanted = False

    def restart(self) -> None:
        """Drop what waits and start again on the next keyframe (video)."""
        self._pending.clear()
        self._next = -1
        if self.video:
            self.waiting_for_keyframe = True
            self.keyframe_wanted = True

    def push(
        self, seq: int, timestamp: int, marker: int, payload: bytes, now_ms: int, meta: object = None
    ) -> list[Frame]:
        ext = self._seqs.unwrap(seq)
        if not self.video:
            if ext < self._next:
                self.packets_late += 1
                return []
            self._next = ext + 1
            self.frames += 1
            return [Frame(timestamp, payload, True, meta)]
        if ext < self._next or ext in self._pending:
            self.packets_late += 1
            return []
        if self._next < 0 or (
            self.waiting_for_keyframe and ext > self._next and self._new_keyframe(timestamp, payload)
        ):
            if not self._keyframe(payload):
                self.frames_dropped += marker
                self.keyframe_wanted |= bool(marker)  # a whole frame went by: ask again
                return []
            # Start, or resume after a loss, on a keyframe: what waits before it is useless.
            older = [s for s in self._pending if s < ext]
            self.frames_dropped += len({self._pending[s].timestamp for s in older})
            for s in older:
                del self._pending[s]
            self._next = ext
        self._pending[ext] = _Packet(timestamp, marker, payload, now_ms, meta)
        out = self._release()
        if len(self._pending) > MAX_PENDING_PACKETS:
            out += self._give_up()
        return out

    def _new_keyframe(self, timestamp: int, payload: bytes) -> bool:
        """The packet begins a keyframe that none of the waiting packets belongs to (an H.264
        keyframe has several packets that each look like a start: parameter sets, slices)."""
        return self._keyframe(payload) and all(p.timestamp != timestamp for p in self._pending.values())

    def poll(self, now_ms: int) -> list[Frame]:
        """Give up on a frame whose missing packet has been awaited for ``hold_ms``."""
        out: list[Frame] = []
        while self._pending:
            oldest = min(p.arrival_ms for p in self._pending.values())
            if now_ms - oldest < self.hold_ms:
                break
            out += self._give_up()
        return out

    def _release(self) -> list[Frame]:
        """Hand out every complete frame from ``_next`` on."""
        out: list[Frame] = []
        pending = self._pending
        while True:
            first = pending.get(self._next)
            if first is None:
                return out
            end = self._next
            while True:
                p = pending.get(end)
                if p is None:
                    return out  # a packet of this frame is still missing
                if p.timestamp != first.timestamp:
                    break  # the next frame began: this one lost its end (e.g. a layer switch)
                if p.marker:
                    break
                end += 1
            if not pending[end].marker or pending[end].timestamp != first.timestamp:
                for s in range(self._next, end):
                    del pending[s]
                self._next = end
                if self._keyframe(pending[end].payload):
                    self.frames_dropped += 1
                    self.waiting_for_keyframe = True  # and the keyframe that follows ends the wait
                else:
                    self._lost()
                continue
            packets = [pending.pop(s) for s in range(self._next, end + 1)]
            self._next = end + 1
            frame = self._frame(packets)
            if frame is not None:
                out.append(frame)

    def _frame(self, packets: list[_Packet]) -> Frame | None:
        first = packets[0].payload
        keyframe = self._keyframe(first)
        if self.waiting_for_keyframe and not keyframe:
            self.frames_dropped += 1
            # Still waiting: the keyframe asked for may never come (lost, or asked for while the
            # publisher was paused), so ask again; the caller's requests are rate-limited.
            self.keyframe_wanted = True
            return None
        if not self._start(first):
            self._lost()
            return None
        try:
            assert self._part is not None
            data = b"".join(self._part(p.payload) for p in packets)
        except MalformedPayload:
            self.malformed += 1
            self._lost()
            return None
        self.waiting_for_keyframe = False
        self.frames += 1
        return Frame(packets[0].timestamp, data, keyframe, packets[0].meta)

    def _lost(self) -> None:
        self.frames_dropped += 1
        self.waiting_for_keyframe = True
        self.keyframe_wanted = True  # (again: the one asked for may be the frame lost)

    def _give_up(self) -> list[Frame]:
        """The packet at the first hole is not coming: drop the frame it belonged to and go on
        from the next frame that starts after the hole (every frame until a keyframe is
        dropped). Always moves ``_next`` forward."""
        pending = self._pending
        if not pending:
            return []
        self._lost()
        hole = self._next
        while hole in pending:
            hole += 1
        resume = -1
        for ext in sorted(s for s in pending if s > hole):
            prev = pending.get(ext - 1)
            p = pending[ext]
            if (prev is not None and (prev.marker or prev.timestamp != p.timestamp)) or (
                self._keyframe(p.payload) and all(q.timestamp != p.timestamp for s, q in pending.items() if s < ext)
            ):
                resume = ext
                break
        if resume < 0:
            self._next = max(hole, *pending) + 1
            pending.clear()
            return []
        for ext in [s for s in pending if s < resume]:
            del pending[ext]
        self._next = resume
        return self._release()

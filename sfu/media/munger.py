"""Per-consumer rewriting of sequence numbers and timestamps.

A consumer sends one continuous outgoing stream whatever happens upstream: the first packet
it forwards (a keyframe for video) follows the last packet it sent before, and every later
packet keeps its distance from that first one. Gaps stay gaps (so the subscriber NACKs them),
reordering is preserved (a late or retransmitted packet takes the number its place gives it),
and packets older than the (re)start point, or than a skipped padding packet, are dropped.

Incoming sequence numbers are extended (unwrapped) once on arrival by the producer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .compiled import twin
from .seq import seq_diff


class PyRtpMunger:
    """The reference implementation; ``RtpMunger`` is its compiled twin when built (compiled.py)."""

    __slots__ = (
        "_highest_ext_seq",
        "_seq_offset",
        "_skipped_ext_seq",
        "_start_ext_seq",
        "_ts_offset",
        "last_seq",
        "last_ts",
        "started",
    )

    def __init__(self, initial_seq: int, initial_ts: int) -> None:
        # Outgoing state: the "previous" packet before the first one we send.
        self.last_seq = (initial_seq - 1) & 0xFFFF
        self.last_ts = initial_ts & 0xFFFFFFFF
        self._seq_offset = 0
        self._ts_offset = 0
        self._start_ext_seq = -1
        self._highest_ext_seq = -1
        self._skipped_ext_seq = -1
        self.started = False

    def start(self, ext_seq: int, timestamp: int, ts_gap: int) -> None:
        """(Re)start on the incoming packet (ext_seq, timestamp).

        It will go out as last_seq + 1 with a timestamp ts_gap after the last one sent
        (ts_gap >= 1 keeps timestamps strictly increasing across a switch).
        """
        out_seq = self.last_seq + 1
        out_ts = self.last_ts + max(1, ts_gap) if self.started else self.last_ts
        self._seq_offset = out_seq - ext_seq
        self._ts_offset = (out_ts - timestamp) & 0xFFFFFFFF
        self._start_ext_seq = ext_seq
        self._highest_ext_seq = ext_seq - 1
        self._skipped_ext_seq = -1
        self.started = True

    def map(self, ext_seq: int, timestamp: int) -> tuple[int, int] | None:
        """Outgoing (seq, timestamp) for an incoming packet, or None to drop it."""
        if ext_seq < self._start_ext_seq or ext_seq < self._skipped_ext_seq:
            return None  # before the (re)start, or a late packet from before a skip
        out_seq = (ext_seq + self._seq_offset) & 0xFFFF
        out_ts = (timestamp + self._ts_offset) & 0xFFFFFFFF
        if ext_seq > self._highest_ext_seq:
            self._highest_ext_seq = ext_seq
            self.last_seq = out_seq
            if 0 < (out_ts - self.last_ts) & 0xFFFFFFFF < 0x80000000:  # ts_diff(out_ts, last_ts) > 0
                self.last_ts = out_ts
        return out_seq, out_ts

    def skip(self, ext_seq: int) -> None:
        """Leave out the next incoming packet (e.g. padding) without a gap in the output."""
        if self.started and ext_seq == self._highest_ext_seq + 1:
            self._highest_ext_seq = ext_seq
            self._skipped_ext_seq = ext_seq
            self._seq_offset -= 1

    def reverse(self, out_seq: int) -> int | None:
        """The incoming extended sequence number that ``out_seq`` stands for in the current
        epoch (since the last start or skip), or None if it belongs to an earlier one."""
        if not self.started or self._highest_ext_seq < self._start_ext_seq:
            return None
        ext_seq = self._highest_ext_seq + seq_diff(out_seq, self.last_seq)
        if not self._start_ext_seq <= ext_seq <= self._highest_ext_seq or ext_seq <= self._skipped_ext_seq:
            return None
        return ext_seq

    def out_timestamp(self, timestamp: int) -> int:
        """The outgoing timestamp that an incoming timestamp maps to (for sender reports)."""
        return (timestamp + self._ts_offset) & 0xFFFFFFFF


# The compiled twin (sfu/rtc/_media.c) when the extension is built and not switched off.
if TYPE_CHECKING:
    RtpMunger = PyRtpMunger
else:
    RtpMunger = twin("RtpMunger") or PyRtpMunger

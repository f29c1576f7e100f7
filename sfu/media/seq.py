"""Wrap-around arithmetic for RTP sequence numbers and timestamps."""

from __future__ import annotations

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b between two 16-bit sequence numbers, in [-32768, 32767]."""
    d = (a - b) & 0xFFFF
    return d - SEQ_MOD if d >= 0x8000 else d


def ts_diff(a: int, b: int) -> int:
    """Signed distance a - b between two 32-bit timestamps."""
    d = (a - b) & 0xFFFFFFFF
    return d - TS_MOD if d >= 0x80000000 else d


class SeqUnwrapper:
    """Turns 16-bit sequence numbers into monotonic 64-bit extended ones.

    The first number seen is mapped to itself plus 2**16, so that slightly older packets
    (reordered before the first one) still get a positive extended number.
    """

    __slots__ = ("highest",)

    def __init__(self) -> None:
        self.highest = -1

    def unwrap(self, seq: int) -> int:
        if self.highest < 0:
            self.highest = seq + SEQ_MOD
            return self.highest
        ext = self.highest + seq_diff(seq, self.highest & 0xFFFF)
        if ext > self.highest:
            self.highest = ext
        return ext

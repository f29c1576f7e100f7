"""Receive-side statistics of one incoming RTP stream (RFC 3550 appendix A.3 and A.8)."""

from __future__ import annotations

from .seq import SeqUnwrapper


class ReceiveStats:
    __slots__ = (
        "_expected_prior",
        "_last_transit",
        "_received_prior",
        "base_ext_seq",
        "bytes",
        "clock_rate",
        "jitter_q4",
        "packets",
        "unwrapper",
    )

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.unwrapper = SeqUnwrapper()
        self.base_ext_seq = -1
        self.packets = 0
        self.bytes = 0
        self.jitter_q4 = 0  # interarrival jitter in timestamp units, times 16
        self._last_transit: int | None = None
        self._expected_prior = 0
        self._received_prior = 0

    def update(self, seq: int, timestamp: int, arrival_ms: int, size: int) -> int:
        """Account for one packet; returns its extended sequence number."""
        ext = self.unwrapper.unwrap(seq)
        if self.base_ext_seq < 0 or ext < self.base_ext_seq:
            self.base_ext_seq = ext
        self.packets += 1
        self.bytes += size
        transit = (arrival_ms * self.clock_rate) // 1000 - timestamp
        if self._last_transit is not None:
            d = abs(transit - self._last_transit)
            if d < self.clock_rate * 10:  # ignore timestamp jumps (e.g. after a pause)
                self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4)
        self._last_transit = transit
        return ext

    @property
    def highest_ext_seq(self) -> int:
        return self.unwrapper.highest

    @property
    def jitter(self) -> int:
        return self.jitter_q4 >> 4

    @property
    def cumulative_lost(self) -> int:
        if self.base_ext_seq < 0:
            return 0
        expected = self.highest_ext_seq - self.base_ext_seq + 1
        return max(0, min(expected - self.packets, 0x7FFFFF))

    def fraction_lost(self) -> int:
        """Fraction lost since the previous call, in 1/256 (for one receiver report)."""
        if self.base_ext_seq < 0:
            return 0
        expected = self.highest_ext_seq - self.base_ext_seq + 1
        expected_interval = expected - self._expected_prior
        received_interval = self.packets - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.packets
        lost = expected_interval - received_interval
        if expected_interval <= 0 or lost <= 0:
            return 0
        return min(255, (lost << 8) // expected_interval)

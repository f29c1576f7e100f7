"""A token bucket: how much a sender may send, at a rate with a burst. Pure; the caller
passes the time."""

from __future__ import annotations


class TokenBucket:
    """``rate_bps`` bits per second on average, bursts of ``burst_s`` seconds' worth."""

    __slots__ = ("_at_s", "_tokens", "burst_bytes", "rate_bytes_per_s")

    def __init__(self, rate_bps: int, now_s: float, burst_s: float = 1.0) -> None:
        self.rate_bytes_per_s = rate_bps / 8
        self.burst_bytes = self.rate_bytes_per_s * burst_s
        self._tokens = self.burst_bytes
        self._at_s = now_s

    def take(self, size_bytes: int, now_s: float) -> bool:
        """Whether ``size_bytes`` may go now (they are then counted); False: over the rate."""
        elapsed = now_s - self._at_s
        if elapsed > 0:
            self._tokens = min(self.burst_bytes, self._tokens + elapsed * self.rate_bytes_per_s)
            self._at_s = now_s
        if self._tokens < size_bytes:
            return False
        self._tokens -= size_bytes
        return True

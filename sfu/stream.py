"""What one incoming stream is: its negotiated codec, and its layers.

A Layer is one encoding of a producer (a simulcast layer, or the only stream without
simulcast): its SSRC once learnt, receive statistics, size, bitrate, the publisher's last
sender report and its upstream NACK generator. Pure: no I/O, time is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from .media.nack import NackGenerator
from .media.stats import ReceiveStats

# A simulcast layer that has sent nothing for this long is taken as stopped.
LAYER_TIMEOUT_MS = 500


@dataclass(frozen=True, slots=True)
class Codec:
    """A negotiated codec: its name ("VP8", "opus", "H264"), clock rate and fmtp parameters."""

    name: str
    clock_rate: int
    parameters: tuple[tuple[str, str], ...] = ()

    def matches(self, other: Codec) -> bool:
        if self.name.lower() != other.name.lower() or self.clock_rate != other.clock_rate:
            return False
        if self.name.upper() == "H264":
            mine, theirs = dict(self.parameters), dict(other.parameters)
            if mine.get("packetization-mode", "0") != theirs.get("packetization-mode", "0"):
                return False
            return mine.get("profile-level-id", "")[:2] == theirs.get("profile-level-id", "")[:2]
        return True


class Layer:
    """One encoding of a producer: a simulcast layer, or the only stream without simulcast."""

    __slots__ = (
        "_measured_at_ms",
        "_measured_bytes",
        "bitrate_bps",
        "height",
        "index",
        "last_arrival_ms",
        "last_keyframe_request_s",
        "last_timestamp",
        "nack",
        "rid",
        "sr_ntp",
        "sr_rtp",
        "ssrc",
        "stats",
        "stopped_bps",
        "width",
    )

    def __init__(self, index: int, rid: str | None, clock_rate: int) -> None:
        self.index = index
        self.rid = rid
        self.ssrc: int | None = None
        self.stats = ReceiveStats(clock_rate)
        self.width = 0
        self.height = 0
        self.last_arrival_ms = 0
        self.last_timestamp: int | None = None
        # Last sender report from the publisher: NTP time (64-bit) and RTP timestamp.
        self.sr_ntp: int | None = None
        self.sr_rtp = 0
        self.last_keyframe_request_s = -1e9
        self.bitrate_bps = 0
        self.stopped_bps = 0  # the bitrate it had when it last stopped
        # Upstream loss repair (video layers of a producer that can send NACKs).
        self.nack: NackGenerator | None = None
        self._measured_at_ms = 0
        self._measured_bytes = 0

    def restart_source(self) -> None:
        """The publisher's stream starts anew (a new connection: new SSRC, sequence numbers and
        timestamps): forget what was learnt of the old one; size and bitrate stay as estimates."""
        self.ssrc = None
        self.stats = ReceiveStats(self.stats.clock_rate)
        self.last_arrival_ms = 0
        self.last_timestamp = None
        self.sr_ntp = None
        self.sr_rtp = 0
        self.last_keyframe_request_s = -1e9
        if self.nack is not None:
            self.nack = NackGenerator()
        self._measured_at_ms = 0
        self._measured_bytes = 0

    def measure(self, now_ms: int) -> int:
        """The layer's incoming bitrate, re-measured at most every 500 ms (0 when stopped)."""
        elapsed = now_ms - self._measured_at_ms
        if elapsed >= 500:
            if self._measured_at_ms:
                rate = (self.stats.bytes - self._measured_bytes) * 8000 // elapsed
                self.bitrate_bps = rate if self.bitrate_bps == 0 else (self.bitrate_bps + rate) // 2
            self._measured_at_ms = now_ms
            self._measured_bytes = self.stats.bytes
        if not self.active(now_ms):
            self.stopped_bps = self.bitrate_bps or self.stopped_bps
            self.bitrate_bps = 0
        elif self.bitrate_bps == 0:
            # Restarted (e.g. by dynacast) and not measured yet: assume what it had, so the
            # allocator can move subscribers onto it without waiting for a measurement.
            return self.stopped_bps
        return self.bitrate_bps

    def active(self, now_ms: int) -> bool:
        return self.last_arrival_ms > 0 and now_ms - self.last_arrival_ms < LAYER_TIMEOUT_MS

    def describe(self) -> dict[str, object]:
        return {"rid": self.rid, "width": self.width, "height": self.height}

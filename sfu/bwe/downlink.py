"""One subscriber's downlink: estimate, allocation, probing, send rate and priorities.

The subscribe peer feeds the estimator (transport-cc feedback, REMB, receiver reports) and,
every tick, describes each of its consumers as a ``StreamInput``; ``update`` fits the videos
into the estimate (sfu/bwe/allocator.py), decides whether to probe for more bandwidth
(sfu/bwe/probe.py) and returns a ``DownlinkDecision``: the allocation of each video (handed to
its consumer as is), the tracks whose bandwidth pause started or ended (to be told to the
client) and the padding rate to send. The peer applies the decision; nothing here does I/O.

Priorities: screen shares first, then what the subscriber pinned, then the active speaker's
video, then the others (bwe/allocator.py orders by priority, then by requested height).

Pure: no aiortc, no asyncio; the time is an argument.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from .allocator import PAUSED, Allocation, Priority, Reason, StreamAllocator, VideoDemand
from .estimator import BandwidthEstimator
from .probe import Prober

SEND_RATE_WINDOW_MS = 500
UNCAPPED_HEIGHT = 100_000  # the requested height of a video without a height cap


@dataclass(frozen=True, slots=True)
class StreamInput:
    """One consumer of the subscriber, as the controller needs to see it at one tick."""

    key: Hashable  # what the decision is keyed by (the consumer)
    track_id: str
    participant_id: str  # the publisher
    kind: str  # "audio" or "video"
    source: str  # "camera", "screen", "microphone", ...
    muted: bool  # the publisher muted it
    paused: bool  # the subscriber paused it
    desired_layer: int  # the highest layer within the subscriber's height cap
    max_height: int | None
    layer_bps: tuple[int, ...]  # what each layer needs now, lowest first (0: not sent)
    layer_bitrate_bps: tuple[int, ...]  # each layer's measured bitrate (0: stopped)


@dataclass(frozen=True, slots=True)
class QualityChange:
    """A video's pause for lack of bandwidth started (paused) or ended."""

    track_id: str
    paused: bool
    reason: Reason
    estimate_bps: int | None


@dataclass(frozen=True, slots=True)
class DownlinkDecision:
    estimate_bps: int | None
    allocations: dict[Hashable, Allocation]  # by StreamInput.key, videos only
    priorities: dict[Hashable, Priority]
    quality_changes: tuple[QualityChange, ...]
    padding_bps: float  # RTX padding to send over the next tick (0: no probe)


class DownlinkController:
    """Decisions for one subscriber's downlink."""

    def __init__(self, initial_bps: int = 1_000_000) -> None:
        self.estimator = BandwidthEstimator(initial_bps)
        self.allocator = StreamAllocator()
        self.prober = Prober()
        self.pinned: set[str] = set()  # track ids the subscriber pinned
        self.active_speaker: str | None = None  # participant id
        self.send_bps = 0
        self._rate_window: tuple[int, int] = (0, 0)  # (time, bytes) at the last measurement
        self._told: dict[str, bool] = {}  # track id -> paused for bandwidth, as last told

    def measure_send_rate(self, now_ms: int, bytes_sent: int) -> int:
        """Update the send rate from the running count of bytes sent (every 500 ms at most)."""
        at, sent = self._rate_window
        if now_ms - at >= SEND_RATE_WINDOW_MS:
            if at:
                self.send_bps = (bytes_sent - sent) * 8000 // (now_ms - at)
            self._rate_window = (now_ms, bytes_sent)
        return self.send_bps

    def priority(self, source: str, track_id: str, participant_id: str) -> Priority:
        """Screen shares, then what this subscriber pinned, then the active speaker's video."""
        if source == "screen":
            return Priority.SCREEN
        if track_id in self.pinned:
            return Priority.PINNED
        if participant_id == self.active_speaker:
            return Priority.SPEAKER
        return Priority.NORMAL

    def update(self, now_ms: int, streams: Sequence[StreamInput], probe: bool = True) -> DownlinkDecision:
        """Fit the videos into the estimate; with ``probe``, also decide the padding rate."""
        estimator = self.estimator
        estimate = estimator.estimate_bps
        demands = []
        priorities: dict[Hashable, Priority] = {}
        audio = 0
        audio_bps = 0
        for s in streams:
            if s.kind == "audio":
                if not s.muted:
                    audio += 1
                    audio_bps += s.layer_bps[0] if s.layer_bps else 0
                continue
            wanted = PAUSED if s.paused or s.muted else s.desired_layer
            priority = priorities[s.key] = self.priority(s.source, s.track_id, s.participant_id)
            demands.append(VideoDemand(s.key, priority, wanted, s.layer_bps, s.max_height or UNCAPPED_HEIGHT))
        allocations = self.allocator.update(
            now_ms, estimate, audio, demands, estimator.loss_limited, audio_bps=audio_bps or None
        )
        changes = []
        by_key = {s.key: s for s in streams}
        for key, alloc in allocations.items():
            paused = alloc.paused_for_bandwidth
            track_id = by_key[key].track_id
            if self._told.get(track_id, False) != paused:
                self._told[track_id] = paused
                changes.append(QualityChange(track_id, paused, alloc.reason, estimate))
        padding = self._probe(now_ms, estimate, allocations, by_key) if probe else 0.0
        return DownlinkDecision(estimate, allocations, priorities, tuple(changes), padding)

    def _probe(
        self,
        now_ms: int,
        estimate: int | None,
        allocations: dict[Hashable, Allocation],
        streams: dict[Hashable, StreamInput],
    ) -> float:
        """While bandwidth holds a video back, test for more with padding (sfu/bwe/probe.py).

        With transport-cc the server's own estimator judges the probe; without it, the
        subscriber's REMB does (its receive-side estimate may rise to 1.5x what arrives, so a
        REMB-limited subscriber that only ever receives its current layers would never climb).
        """
        estimator = self.estimator
        if not (estimator.transport_cc or estimator.remb_bps is not None):
            return 0.0
        limited = any(a.reason is Reason.BANDWIDTH for a in allocations.values())
        successes = self.prober.successes
        padding_bps = self.prober.padding_bps(
            now_ms,
            estimate,
            videos_bps(allocations, streams, step_up=False),
            videos_bps(allocations, streams, step_up=True) if limited else 0.0,
            estimator.congestion_events,
            estimator.owd_ms,
        )
        if self.prober.successes > successes and estimate is not None:
            self.allocator.confirm(now_ms, estimate)  # the probe showed the estimate gets through
        return padding_bps

    def describe(self, now_ms: int) -> dict[str, object]:
        return {
            "bandwidth": self.estimator.describe(now_ms),
            "send_bps": self.send_bps,
            "probe": self.prober.describe(),
        }


def videos_bps(allocations: dict[Hashable, Allocation], streams: dict[Hashable, StreamInput], step_up: bool) -> float:
    """What the allocated videos need together; with ``step_up``, if each video held back by
    bandwidth got one layer more."""
    total = 0.0
    for key, alloc in allocations.items():
        bitrates = streams[key].layer_bitrate_bps
        index = alloc.layer + 1 if step_up and alloc.reason is Reason.BANDWIDTH else alloc.layer
        if 0 <= index < len(bitrates):
            total += bitrates[index]
    return total

"""Send-side bandwidth estimation for one subscriber's downlink, in the spirit of Google
Congestion Control (draft-ietf-rmcat-gcc-02), plus the simpler signals (REMB, receiver-report
loss) for subscribers that do not negotiate transport-cc.

- delay-based: packets are grouped into 5 ms send bursts; the growth of one-way delay between
  groups is smoothed and its trend (a least-squares slope over the last 20 groups) compared
  with an adaptive threshold: overuse, normal or underuse. An AIMD controller turns that into a
  rate: multiplicative increase (8 %/s) while normal, a cut to 85 % of the acknowledged rate on
  overuse, hold on underuse. The rate never runs ahead of 1.5 × what actually got through.
- loss-based: loss over the last second above 10 % cuts the rate by half the loss ratio; below
  2 % it may grow again.
- the estimate is the minimum of both and of the subscriber's REMB, if it sends one.

Everything takes the current time as an argument; nothing here does I/O.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..media.compiled import twin
from ..media.seq import SeqUnwrapper
from .twcc import TwccFeedback

logger = logging.getLogger(__name__)

BURST_MS = 5
TRENDLINE_WINDOW = 20
TRENDLINE_SMOOTHING = 0.9
TRENDLINE_GAIN = 4.0
OVERUSE_TIME_MS = 10
THRESHOLD_INIT_MS = 12.5
THRESHOLD_UP = 0.0087
THRESHOLD_DOWN = 0.039
DECREASE_FACTOR = 0.85
INCREASE_PER_S = 1.08  # near the rate where the link last congested
FAST_INCREASE_PER_S = 1.35  # far from it (or before any congestion)
ACKED_WINDOW_MS = 750
LOSS_WINDOW_MS = 1000
HIGH_LOSS = 0.10
LOW_LOSS = 0.02
REMB_CUT = 0.9  # a REMB below 90 % of the previous one counts as a congestion signal
LOSS_HOLD_MS = 3000  # a loss-based limit lapses this long after the last high-loss cut
MIN_BPS = 30_000
MAX_BPS = 50_000_000

OVERUSE, NORMAL, UNDERUSE = "overuse", "normal", "underuse"


class PySendHistory:
    """What we sent, by transport-wide sequence number: send time and size (the reference
    implementation; ``SendHistory`` is its compiled twin when built, media/compiled.py)."""

    def __init__(self, size: int = 8192) -> None:
        self._size = size
        self._entries: list[tuple[int, float, int] | None] = [None] * size
        self._unwrapper = SeqUnwrapper()

    def add(self, seq: int, send_ms: float, size: int) -> None:
        ext = self._unwrapper.unwrap(seq)
        self._entries[ext % self._size] = (ext, send_ms, size)

    def get(self, seq: int) -> tuple[float, int] | None:
        highest = self._unwrapper.highest
        if highest < 0:
            return None
        ext = highest - ((highest - seq) & 0xFFFF)
        entry = self._entries[ext % self._size]
        if entry is None or entry[0] != ext:
            return None
        return entry[1], entry[2]


# The compiled twin (sfu/rtc/_media.c, the unwrapper inline) when the extension is built.
if TYPE_CHECKING:
    SendHistory = PySendHistory
else:
    SendHistory = twin("SendHistory") or PySendHistory


@dataclass
class _Group:
    first_send_ms: float
    last_send_ms: float
    last_arrival_ms: float
    size: int


class DelayBasedEstimator:
    def __init__(self, initial_bps: int) -> None:
        self.rate_bps = float(initial_bps)
        self.state = NORMAL
        self.threshold_ms = THRESHOLD_INIT_MS
        self.trend = 0.0
        self._group: _Group | None = None
        self._prev_group: _Group | None = None
        self._accumulated = 0.0
        self._smoothed = 0.0
        self._points: deque[tuple[float, float]] = deque(maxlen=TRENDLINE_WINDOW)
        self._first_arrival_ms: float | None = None
        self._num_deltas = 0
        self._overuse_ms = -1.0
        self._overuse_count = 0
        self._prev_trend = 0.0
        self._last_update_ms: float | None = None
        self._last_threshold_ms: float | None = None
        self._hold = False
        self._congested_at_bps: float | None = None  # the rate when overuse was last seen
        self.congested = False  # whether the link has ever shown a growing queue
        self.cuts = 0  # how many times overuse has cut the rate

    def on_packet(self, send_ms: float, arrival_ms: float, size: int) -> None:
        g = self._group
        if g is None:
            self._group = _Group(send_ms, send_ms, arrival_ms, size)
            return
        if send_ms < g.first_send_ms:
            return  # reordered across groups: ignored, as GCC does
        if send_ms - g.first_send_ms <= BURST_MS:
            g.last_send_ms = max(g.last_send_ms, send_ms)
            g.last_arrival_ms = max(g.last_arrival_ms, arrival_ms)
            g.size += size
            return
        if self._prev_group is not None:
            send_delta = g.last_send_ms - self._prev_group.last_send_ms
            arrival_delta = g.last_arrival_ms - self._prev_group.last_arrival_ms
            self._update_trend(arrival_delta - send_delta, g.last_arrival_ms, send_delta)
        self._prev_group = g
        self._group = _Group(send_ms, send_ms, arrival_ms, size)

    def _update_trend(self, delay_delta_ms: float, arrival_ms: float, send_delta_ms: float) -> None:
        self._num_deltas = min(self._num_deltas + 1, 1000)
        if self._first_arrival_ms is None:
            self._first_arrival_ms = arrival_ms
        self._accumulated += delay_delta_ms
        self._smoothed = TRENDLINE_SMOOTHING * self._smoothed + (1 - TRENDLINE_SMOOTHING) * self._accumulated
        self._points.append((arrival_ms - self._first_arrival_ms, self._smoothed))
        if len(self._points) == TRENDLINE_WINDOW:
            n = len(self._points)
            mean_x = sum(p[0] for p in self._points) / n
            mean_y = sum(p[1] for p in self._points) / n
            num = sum((x - mean_x) * (y - mean_y) for x, y in self._points)
            den = sum((x - mean_x) ** 2 for x, _ in self._points)
            slope = num / den if den else 0.0
            self.trend = slope * min(self._num_deltas, 60) * TRENDLINE_GAIN
            self._detect(send_delta_ms, arrival_ms)

    def _detect(self, send_delta_ms: float, now_ms: float) -> None:
        trend = self.trend
        if trend > self.threshold_ms:
            self._overuse_ms = send_delta_ms / 2 if self._overuse_ms < 0 else self._overuse_ms + send_delta_ms
            self._overuse_count += 1
            if self._overuse_ms > OVERUSE_TIME_MS and self._overuse_count > 1 and trend >= self._prev_trend:
                self._overuse_ms = 0
                self._overuse_count = 0
                self.state = OVERUSE
        elif trend < -self.threshold_ms:
            self._overuse_ms = -1
            self._overuse_count = 0
            self.state = UNDERUSE
        else:
            self._overuse_ms = -1
            self._overuse_count = 0
            self.state = NORMAL
        self._prev_trend = trend
        # Adapt the threshold towards |trend| (slowly up, faster down), ignoring spikes.
        if self._last_threshold_ms is None:
            self._last_threshold_ms = now_ms
        if abs(trend) < self.threshold_ms + 15:
            k = THRESHOLD_DOWN if abs(trend) < self.threshold_ms else THRESHOLD_UP
            dt = min(now_ms - self._last_threshold_ms, 100)
            self.threshold_ms += k * (abs(trend) - self.threshold_ms) * dt
            self.threshold_ms = max(6.0, min(600.0, self.threshold_ms))
        self._last_threshold_ms = now_ms

    def update_rate(self, now_ms: float, acked_bps: float | None) -> None:
        dt_s = 0.0 if self._last_update_ms is None else min(1.0, (now_ms - self._last_update_ms) / 1000)
        self._last_update_ms = now_ms
        if self.state == OVERUSE:
            self.congested = True
            self.cuts += 1
            self._congested_at_bps = acked_bps or self.rate_bps
            if acked_bps:
                self.rate_bps = min(self.rate_bps, DECREASE_FACTOR * acked_bps)
            else:
                self.rate_bps *= DECREASE_FACTOR
            self.state = NORMAL
            self._hold = True
        elif self.state == UNDERUSE:
            self._hold = True
        elif self._hold:
            self._hold = False
        else:
            previous = self.rate_bps
            near = self._congested_at_bps is not None and self.rate_bps > 0.7 * self._congested_at_bps
            if self._congested_at_bps is not None and self.rate_bps > 1.25 * self._congested_at_bps:
                self._congested_at_bps = None  # the link got better: forget the old ceiling
            self.rate_bps *= (INCREASE_PER_S if near else FAST_INCREASE_PER_S) ** dt_s
            if acked_bps:
                # What gets through without queues building is evidently available.
                self.rate_bps = max(self.rate_bps, acked_bps)
                # Never run far ahead of what actually gets through (but an app-limited
                # sender is not a reason to lower the estimate).
                self.rate_bps = min(self.rate_bps, max(previous, 1.5 * acked_bps + 10_000))
        self.rate_bps = max(MIN_BPS, min(MAX_BPS, self.rate_bps))


class BandwidthEstimator:
    """The estimate for one subscriber's downlink."""

    def __init__(self, initial_bps: int = 1_000_000) -> None:
        self.history = SendHistory()
        self.delay = DelayBasedEstimator(initial_bps)
        self.loss_bps: float | None = None  # a limit set by loss; None while loss is low
        self.remb_bps: int | None = None
        self.transport_cc = False
        self.loss_ratio = 0.0
        self._acked: deque[tuple[float, int]] = deque()  # (arrival on our clock, size)
        self._loss: deque[tuple[float, int, int]] = deque()  # (time, received, lost)
        self._last_loss_update_ms: float | None = None
        self._last_cut_ms = -1e9
        self._loss_cuts = 0
        self._remb_cuts = 0
        self._clock_offset_ms: float | None = None  # receiver clock → ours
        # One-way delay of the newest packet reported, relative to the first one (ms): its
        # growth is a queue building up, which a probe watches to stop before anything is lost.
        self.owd_ms: float | None = None

    def on_sent(self, seq: int, now_ms: float, size: int) -> None:
        self.history.add(seq, now_ms, size)

    def on_feedback(self, fb: TwccFeedback, now_ms: float) -> None:
        self.transport_cc = True
        received = lost = 0
        for seq, arrival_us in fb.packets:
            sent = self.history.get(seq)
            if sent is None:
                continue
            send_ms, size = sent
            if arrival_us is None:
                lost += 1
                continue
            received += 1
            arrival_ms = arrival_us / 1000
            if self._clock_offset_ms is None:
                self._clock_offset_ms = send_ms - arrival_ms
            self.delay.on_packet(send_ms, arrival_ms, size)
            self._acked.append((arrival_ms + self._clock_offset_ms, size))
            self.owd_ms = arrival_ms + self._clock_offset_ms - send_ms
        self._loss.append((now_ms, received, lost))
        self._update(now_ms)

    def on_receiver_report(self, fraction_lost: int, now_ms: float, send_bps: float) -> None:
        """Loss from RTCP receiver reports, for subscribers without transport-cc."""
        if self.transport_cc:
            return
        ratio = fraction_lost / 256
        self._loss.append((now_ms, int(1000 * (1 - ratio)), int(1000 * ratio)))
        self._update(now_ms, send_bps)

    def on_remb(self, bitrate_bps: int) -> None:
        if self.remb_bps is not None and bitrate_bps < REMB_CUT * self.remb_bps:
            self._remb_cuts += 1  # the receiver saw congestion
        self.remb_bps = bitrate_bps

    def acked_bps(self, now_ms: float) -> float | None:
        """What got through lately (bits per second over up to ACKED_WINDOW_MS of arrivals)."""
        if not self._acked:
            return None
        newest = self._acked[-1][0]
        while self._acked and self._acked[0][0] < newest - ACKED_WINDOW_MS:
            self._acked.popleft()
        span_ms = newest - self._acked[0][0]
        if span_ms < ACKED_WINDOW_MS / 3:
            return None  # too little to tell
        return sum(size for _, size in self._acked) * 8 * 1000 / span_ms

    def _update(self, now_ms: float, send_bps: float | None = None) -> None:
        while self._loss and self._loss[0][0] < now_ms - LOSS_WINDOW_MS:
            self._loss.popleft()
        received = sum(r for _, r, _ in self._loss)
        lost = sum(lo for _, _, lo in self._loss)
        self.loss_ratio = lost / (received + lost) if received + lost else 0.0
        dt_s = 0.0 if self._last_loss_update_ms is None else min(1.0, (now_ms - self._last_loss_update_ms) / 1000)
        self._last_loss_update_ms = now_ms
        acked = self.acked_bps(now_ms) if self.transport_cc else send_bps
        if self.transport_cc:
            self.delay.update_rate(now_ms, acked)
        # What the link carries now: the delay-based rate, or what we send without transport-cc.
        reference = self.delay.rate_bps if self.transport_cc else (send_bps or 0.0)
        if self.loss_ratio > HIGH_LOSS:
            if now_ms - self._last_cut_ms > 300:
                current = min(self.loss_bps or reference, reference) if reference else (self.loss_bps or MIN_BPS)
                cut = current * (1 - 0.5 * self.loss_ratio)
                # Never below most of what still gets through: the loss is measured at the old rate.
                self.loss_bps = max(MIN_BPS, cut, 0.8 * (acked or 0.0))
                self._last_cut_ms = now_ms
                self._loss_cuts += 1
                self._loss.clear()  # judge the new rate on new feedback only
        elif self.loss_ratio < LOW_LOSS and self.loss_bps is not None:
            # Grow again, and never stay below what now gets through without loss.
            self.loss_bps = max(self.loss_bps * INCREASE_PER_S**dt_s, 0.9 * (acked or 0.0))
            if self.loss_bps > 2 * max(reference, MIN_BPS) or now_ms - self._last_cut_ms > LOSS_HOLD_MS:
                self.loss_bps = None  # loss no longer limits anything

    @property
    def congestion_events(self) -> int:
        """A running count of congestion cuts (delay-based overuse, high loss, a falling REMB)."""
        return self.delay.cuts + self._loss_cuts + self._remb_cuts

    @property
    def loss_limited(self) -> bool:
        """Whether loss (or the subscriber's own REMB) limits the estimate, not only delay."""
        return self.loss_bps is not None or self.remb_bps is not None

    @property
    def estimate_bps(self) -> int | None:
        """The downlink estimate; None when nothing limits it (no congestion signal at all)."""
        limits = [x for x in (self.loss_bps, self.remb_bps) if x is not None]
        if self.transport_cc and self.delay.congested:
            # Until a queue has built up once, the delay-based rate only says what we sent
            # (the sender is application-limited), not what the link carries.
            limits.append(self.delay.rate_bps)
        if not limits:
            return None
        return int(max(MIN_BPS, min(limits)))

    def describe(self, now_ms: float) -> dict[str, object]:
        acked = self.acked_bps(now_ms)
        return {
            "estimate_bps": self.estimate_bps,
            "delay_based_bps": int(self.delay.rate_bps) if self.transport_cc else None,
            "loss_based_bps": int(self.loss_bps) if self.loss_bps is not None else None,
            "remb_bps": self.remb_bps,
            "acked_bps": int(acked) if acked else None,
            "loss_ratio": round(self.loss_ratio, 4),
            "delay_state": self.delay.state,
            "delay_trend": round(self.delay.trend, 3),
            "transport_cc": self.transport_cc,
        }

"""When to probe a subscriber's downlink for more bandwidth, and how hard.

A subscriber held back by bandwidth receives only what its current layers need, so the
estimator only ever sees that rate get through: an application-limited sender learns nothing
about spare capacity. Probing adds RTX padding so that, for a while, more gets sent; if it
arrives without queues building or loss, the estimator's acknowledged rate (and with it the
estimate) rises to it.

The prober works in rounds (in the spirit of LiveKit's prober and libwebrtc's probe
controller):

- a probe sends up to ``ratio`` times the current estimate, and never more than the next step
  up needs with GOAL_MARGIN to spare (the allocator steps up only with headroom), for
  PROBE_FOR_MS;
- a congestion signal during the probe ends it at once as a failure: a delay-based overuse or
  a loss cut, or, sooner than either, the one-way delay growing by MAX_DELAY_GROWTH_MS over
  its lowest since the probe began (a queue building up: stop before the bottleneck's buffer
  overflows and media is lost). The next probe waits PROBE_BACKOFF_MS and starts gently;
- a probe that completes is a success: the next one follows after PROBE_GAP_MS (long enough
  for the allocator's hold), aiming higher (``PROBE_RATIO_AFTER_SUCCESS``), so a link that got
  better is found in a few rounds instead of by slow multiplicative growth.

Everything takes the current time as an argument; nothing here does I/O.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

PROBE_FOR_MS = 600
PROBE_GAP_MS = 400
PROBE_BACKOFF_MS = 4000
PROBE_RATIO = 1.5  # first probe, and after a failure: up to 1.5 x the estimate in total
PROBE_RATIO_AFTER_SUCCESS = 2.0
GOAL_MARGIN = 1.3
MAX_DELAY_GROWTH_MS = 30.0


class Prober:
    def __init__(self) -> None:
        self.probing = False
        self.ratio = PROBE_RATIO
        self.successes = 0
        self.failures = 0
        self._until_ms = 0.0
        self._next_ms = 0.0
        self._events_at_start = 0
        self._padding_bps = 0.0
        self._min_owd_ms: float | None = None

    def padding_bps(
        self,
        now_ms: float,
        estimate_bps: float | None,
        media_bps: float,
        goal_bps: float,
        congestion_events: int,
        owd_ms: float | None = None,
    ) -> float:
        """The padding rate to send now.

        ``media_bps``: what the subscriber's media needs now; ``goal_bps``: what all its media
        would need one step up (0 when nothing is held back by bandwidth);
        ``congestion_events``: the estimator's running count of congestion cuts; ``owd_ms``: the
        one-way delay of the newest packet reported (any fixed offset).
        """
        if self.probing:
            if owd_ms is not None:
                self._min_owd_ms = owd_ms if self._min_owd_ms is None else min(self._min_owd_ms, owd_ms)
            queue_grew = owd_ms is not None and owd_ms - self._min_owd_ms > MAX_DELAY_GROWTH_MS  # type: ignore[operator]
            if congestion_events != self._events_at_start or queue_grew:
                self._finish(now_ms, success=False)
                return 0.0
            if now_ms >= self._until_ms:
                self._finish(now_ms, success=True)
            else:
                return self._padding_bps
        if estimate_bps is None or goal_bps <= media_bps or now_ms < self._next_ms:
            return 0.0
        target = min(GOAL_MARGIN * goal_bps, self.ratio * estimate_bps)
        if target <= media_bps:
            return 0.0
        self.probing = True
        self._until_ms = now_ms + PROBE_FOR_MS
        self._events_at_start = congestion_events
        self._min_owd_ms = owd_ms
        self._padding_bps = target - media_bps
        return self._padding_bps

    def _finish(self, now_ms: float, success: bool) -> None:
        logger.debug(
            "probe with %d bps of padding %s", self._padding_bps, "succeeded" if success else "ended by congestion"
        )
        self.probing = False
        self._padding_bps = 0.0
        if success:
            self.successes += 1
            self.ratio = PROBE_RATIO_AFTER_SUCCESS
            self._next_ms = now_ms + PROBE_GAP_MS
        else:
            self.failures += 1
            self.ratio = PROBE_RATIO
            self._next_ms = now_ms + PROBE_BACKOFF_MS

    def describe(self) -> dict[str, object]:
        return {
            "probing": self.probing,
            "padding_bps": int(self._padding_bps),
            "ratio": self.ratio,
            "successes": self.successes,
            "failures": self.failures,
        }

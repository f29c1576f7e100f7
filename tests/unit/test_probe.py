"""Probing for bandwidth: the prober's rounds, and a simulated subscriber whose link is capped
and then freed (estimator + allocator + prober together, fake clock)."""

import random

from sfu.bwe.allocator import StreamAllocator, VideoDemand
from sfu.bwe.estimator import BandwidthEstimator
from sfu.bwe.probe import (
    GOAL_MARGIN,
    MAX_DELAY_GROWTH_MS,
    PROBE_BACKOFF_MS,
    PROBE_FOR_MS,
    PROBE_GAP_MS,
    PROBE_RATIO,
    PROBE_RATIO_AFTER_SUCCESS,
    Prober,
)
from sfu.bwe.twcc import build_feedback, parse_feedback, split_compound

LAYERS = (150_000, 500_000, 1_500_000)


def test_no_probe_while_nothing_is_held_back():
    p = Prober()
    assert p.padding_bps(0, 1_000_000, 400_000, goal_bps=0, congestion_events=0) == 0
    assert p.padding_bps(0, None, 400_000, goal_bps=900_000, congestion_events=0) == 0
    assert not p.probing


def test_a_probe_pads_towards_the_goal_but_not_beyond_the_ratio():
    p = Prober()
    pad = p.padding_bps(0, 400_000, 150_000, goal_bps=5_000_000, congestion_events=0)
    assert pad == PROBE_RATIO * 400_000 - 150_000
    p2 = Prober()
    assert p2.padding_bps(0, 400_000, 150_000, goal_bps=400_000, congestion_events=0) == GOAL_MARGIN * 400_000 - 150_000


def test_success_probes_again_soon_and_harder_failure_backs_off():
    p = Prober()
    p.padding_bps(0, 400_000, 150_000, 5_000_000, 0)
    assert p.padding_bps(PROBE_FOR_MS - 10, 400_000, 150_000, 5_000_000, 0) > 0  # still probing
    assert p.padding_bps(PROBE_FOR_MS, 600_000, 150_000, 5_000_000, 0) == 0  # done: a success
    assert p.successes == 1 and p.ratio == PROBE_RATIO_AFTER_SUCCESS
    t = PROBE_FOR_MS + PROBE_GAP_MS
    assert p.padding_bps(t, 600_000, 150_000, 5_000_000, 0) == PROBE_RATIO_AFTER_SUCCESS * 600_000 - 150_000
    # congestion during the probe ends it at once
    assert p.padding_bps(t + 200, 600_000, 150_000, 5_000_000, 1) == 0
    assert p.failures == 1 and p.ratio == PROBE_RATIO and not p.probing
    assert p.padding_bps(t + 200 + PROBE_BACKOFF_MS - 10, 500_000, 150_000, 5_000_000, 1) == 0
    assert p.padding_bps(t + 200 + PROBE_BACKOFF_MS, 500_000, 150_000, 5_000_000, 1) > 0


class TbfLink:
    """A token-bucket-like bottleneck: FIFO at capacity_bps, drops what would wait > max_queue_ms."""

    def __init__(self, capacity_bps, delay_ms=20, max_queue_ms=200, seed=3):
        self.capacity_bps = capacity_bps
        self.delay_ms = delay_ms
        self.max_queue_ms = max_queue_ms
        self.free_at_ms = 0.0
        self.rng = random.Random(seed)

    def send(self, now_ms, size):
        start = max(now_ms, self.free_at_ms)
        if start - now_ms > self.max_queue_ms:
            return None
        self.free_at_ms = start + size * 8 * 1000 / self.capacity_bps
        return self.free_at_ms + self.delay_ms + self.rng.random()  # a little jitter


def simulate(link, seconds, state=None, cap_events=()):
    """One subscriber of one three-layer video: media at the allocated layer, padding from the
    prober, transport-cc feedback every 100 ms. Returns per-200 ms (time, layer, estimate)."""
    if state is None:
        state = {
            "now": 0.0,
            "seq": 0,
            "fb": 0,
            "pending": [],
            "credit": 0.0,
            "pad_credit": 0.0,
            "est": BandwidthEstimator(initial_bps=1_000_000),
            "alloc": StreamAllocator(),
            "prober": Prober(),
            "layer": 2,
            "sent_media": 0,
            "lost_media": 0,
        }
    s = state
    est, alloc, prober = s["est"], s["alloc"], s["prober"]
    trace = []
    end = s["now"] + seconds * 1000
    padding = 0.0
    while s["now"] < end:
        now = s["now"]
        if int(now) % 200 == 0:
            estimate = est.estimate_bps
            [a] = alloc.update(now, estimate, 0, [VideoDemand("v", 0, 2, LAYERS, 720)]).values()
            s["layer"] = max(0, a.layer)
            media = LAYERS[s["layer"]]
            goal = LAYERS[s["layer"] + 1] if a.reason == "bandwidth" and s["layer"] < 2 else 0
            successes = prober.successes
            padding = prober.padding_bps(now, estimate, media, goal, est.congestion_events, est.owd_ms)
            if prober.successes > successes and estimate is not None:
                alloc.confirm(now, estimate)
            trace.append((now, s["layer"], estimate))
        s["credit"] += LAYERS[s["layer"]] * 10 / 1000 / 8
        s["pad_credit"] += padding * 10 / 1000 / 8
        for key, size in (("credit", 1200), ("pad_credit", 255)):
            while s[key] >= size:
                s[key] -= size
                arrival = link.send(now, size)
                if key == "credit":
                    s["sent_media"] += 1
                    s["lost_media"] += arrival is None
                tw = s["seq"] & 0xFFFF
                est.on_sent(tw, now, size)
                s["pending"].append((tw, arrival, arrival if arrival is not None else now + link.delay_ms))
                s["seq"] += 1
        s["now"] = now + 10
        if int(s["now"]) % 100 == 0:
            ready = [p for p in s["pending"] if p[2] <= s["now"]]
            s["pending"] = [p for p in s["pending"] if p[2] > s["now"]]
            ready.sort(key=lambda p: p[0])
            if ready:
                # one feedback for a contiguous run of sequence numbers
                first = ready[0][0]
                arrivals = {seq: a for seq, a, _ in ready}
                span = [arrivals.get((first + i) & 0xFFFF) for i in range(ready[-1][0] - first + 1)]
                body = split_compound(
                    build_feedback(1, 2, first, s["fb"], [None if a is None else int(a * 1000) for a in span])
                )
                s["fb"] += 1
                est.on_feedback(parse_feedback(body[0][2]), s["now"])
    return trace, s


def test_capped_subscriber_settles_low_then_climbs_to_the_top_fast_after_the_cap_is_lifted():
    link = TbfLink(300_000)
    trace, state = simulate(link, 20)
    settled = [layer for t, layer, _ in trace if t > 8_000]
    assert set(settled) == {0}, "capped at 300 kbit/s only the lowest layer fits"
    state["sent_media"] = state["lost_media"] = 0
    trace, state = simulate(link, 10, state)
    assert state["lost_media"] / state["sent_media"] < 0.02, "probing on the capped link costs little media"
    assert state["prober"].failures >= 1, "probes on the capped link fail and back off"
    link.capacity_bps = 10_000_000
    lifted_at = state["now"]
    trace, state = simulate(link, 20, state)
    t_top = next(t for t, layer, _ in trace if layer == 2) - lifted_at
    assert t_top < 9_000, f"top layer {t_top / 1000:.1f}s after the cap was lifted"
    assert all(layer == 2 for t, layer, _ in trace if t > lifted_at + t_top), "and stays there"


def test_a_growing_queue_ends_the_probe_before_any_loss():
    p = Prober()
    assert p.padding_bps(0, 400_000, 150_000, 5_000_000, 0, owd_ms=12.0) > 0
    assert p.padding_bps(200, 400_000, 150_000, 5_000_000, 0, owd_ms=10.0) > 0  # jitter: fine
    assert p.padding_bps(400, 400_000, 150_000, 5_000_000, 0, owd_ms=10.0 + MAX_DELAY_GROWTH_MS - 1) > 0
    assert p.padding_bps(500, 400_000, 150_000, 5_000_000, 0, owd_ms=10.0 + MAX_DELAY_GROWTH_MS + 1) == 0
    assert p.failures == 1 and not p.probing


def test_a_falling_remb_is_a_congestion_signal_that_ends_a_probe():
    est = BandwidthEstimator()
    est.on_remb(1_000_000)
    est.on_remb(1_050_000)
    est.on_remb(950_000)  # within 10 %: noise
    assert est.congestion_events == 0
    p = Prober()
    assert p.padding_bps(0, est.estimate_bps, 600_000, 2_000_000, est.congestion_events) > 0
    est.on_remb(700_000)  # the subscriber's receive-side estimator backed off
    assert est.congestion_events == 1
    assert p.padding_bps(200, est.estimate_bps, 600_000, 2_000_000, est.congestion_events) == 0
    assert p.failures == 1

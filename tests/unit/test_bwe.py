"""Bandwidth estimation and allocation, with a fake clock and simulated links."""

import random
from itertools import pairwise

import pytest

from sfu.bwe.allocator import (
    PAUSED,
    PRIORITY_NORMAL,
    PRIORITY_SCREEN,
    REASON_BANDWIDTH,
    UPGRADE_HOLD_MS,
    StreamAllocator,
    VideoDemand,
    allocate,
)
from sfu.bwe.estimator import BandwidthEstimator
from sfu.bwe.twcc import build_feedback, parse_feedback, split_compound

# -- transport-cc feedback ------------------------------------------------------------------


def test_feedback_round_trip_with_losses_and_large_and_negative_deltas():
    arrivals = [1_000_000, 1_000_250, None, 1_005_000, 1_200_000, None, 1_199_000, 1_199_500, 1_300_000]
    packet = build_feedback(1, 2, 65534, 7, arrivals)
    [(pt, fmt, body, raw)] = split_compound(packet)
    assert raw == packet
    assert (pt, fmt) == (205, 15)
    fb = parse_feedback(body)
    assert (fb.sender_ssrc, fb.media_ssrc, fb.base_seq, fb.fb_count) == (1, 2, 65534, 7)
    assert [seq for seq, _ in fb.packets] == [65534, 65535] + list(range(0, 7))
    for (_, got), want in zip(fb.packets, arrivals, strict=True):
        if want is None:
            assert got is None
        else:
            assert abs(got - want) <= 250


def test_feedback_with_run_length_and_one_bit_vector_chunks():
    # base 10, 20 packets: run of 14 "received small", then a 1-bit vector with 6 used symbols
    body = bytes.fromhex("00000001 00000002 000a 0014 000001 00".replace(" ", ""))
    body += (0x2000 | 14).to_bytes(2, "big")  # run length: symbol 1 x 14
    body += (0x8000 | 0b10101000000000).to_bytes(2, "big")  # 1-bit vector: 1,0,1,0,1,0 ...
    body += bytes([4] * 14 + [4, 4, 4])  # deltas of 1 ms for the 17 received packets
    body += b"\0" * (-len(body) % 4)
    fb = parse_feedback(body)
    assert len(fb.packets) == 20
    received = [a for _, a in fb.packets if a is not None]
    assert len(received) == 17
    assert fb.packets[15][1] is None and fb.packets[14][1] is not None
    assert received[1] - received[0] == 1000


@pytest.mark.parametrize("body", [b"", b"\0" * 15, bytes.fromhex("00000001000000020000000a00000000") + b"\x20"])
def test_malformed_feedback_raises(body):
    with pytest.raises(ValueError):
        parse_feedback(body)


# -- estimator ------------------------------------------------------------------------------


class Link:
    """A bottleneck of capacity_bps with a FIFO queue, a fixed delay and optional random loss."""

    def __init__(self, capacity_bps, delay_ms=20, loss=0.0, seed=1):
        self.capacity_bps = capacity_bps
        self.delay_ms = delay_ms
        self.loss = loss
        self.free_at_ms = 0.0
        self.rng = random.Random(seed)

    def send(self, now_ms, size):
        start = max(now_ms, self.free_at_ms)
        self.free_at_ms = start + size * 8 * 1000 / self.capacity_bps
        if self.rng.random() < self.loss:
            return None
        return self.free_at_ms + self.delay_ms


def current(est):
    """The rate the estimator allows: its estimate, or before any congestion its delay-based rate."""
    return est.estimate_bps or int(est.delay.rate_bps)


def run(est, link, seconds, now_ms=0.0, seq=0, source_bps=None):
    """Send at the estimate (or at most source_bps) through the link; feedback every 100 ms."""
    pending = []  # (seq, arrival or None, due): due is when the receiver knows about it
    trace = []
    end = now_ms + seconds * 1000
    fb_count = 0
    credit = 0.0
    while now_ms < end:
        rate = current(est)
        if source_bps is not None:
            rate = min(rate, source_bps)
        credit += rate * 10 / 1000 / 8
        while credit >= 1200:
            credit -= 1200
            arrival = link.send(now_ms, 1200)
            est.on_sent(seq & 0xFFFF, now_ms, 1200)
            pending.append((seq & 0xFFFF, arrival, arrival if arrival is not None else now_ms + link.delay_ms))
            seq += 1
        now_ms += 10
        if int(now_ms) % 100 == 0:
            ready = []
            while pending and pending[0][2] <= now_ms:
                ready.append(pending.pop(0))
            if ready:
                arrivals = [None if a is None else int(a * 1000) for _, a, _ in ready]
                [(_, _, body, _)] = split_compound(build_feedback(1, 2, ready[0][0], fb_count, arrivals))
                fb_count += 1
                est.on_feedback(parse_feedback(body), now_ms)
            trace.append((now_ms, current(est)))
    return now_ms, seq, trace


def test_estimate_converges_to_the_link_capacity():
    est = BandwidthEstimator(initial_bps=300_000)
    link = Link(2_000_000)
    now, seq, trace = run(est, link, 20)
    late = [e for t, e in trace if t > 12_000]
    assert 0.6 * 2_000_000 < sum(late) / len(late) < 1.3 * 2_000_000, late[-5:]


def test_estimate_drops_fast_when_the_link_shrinks_and_recovers_when_it_grows():
    est = BandwidthEstimator(initial_bps=1_500_000)
    link = Link(3_000_000)
    now, seq, _ = run(est, link, 8)
    assert current(est) > 1_500_000
    link.capacity_bps = 300_000
    now, seq, trace = run(est, link, 5, now, seq)
    t_low = next(t for t, e in trace if e < 400_000) - trace[0][0]
    assert t_low < 3000, "within 3 s the estimate is under 400 kbps"
    assert all(e < 450_000 for t, e in trace if t > trace[0][0] + 3500)
    link.capacity_bps = 3_000_000
    now, seq, trace = run(est, link, 20, now, seq)
    assert max(e for _, e in trace) > 1_500_000, "the estimate climbs back"


def test_random_loss_lowers_the_loss_based_limit():
    est = BandwidthEstimator(initial_bps=2_000_000)
    link = Link(10_000_000, loss=0.2)
    run(est, link, 5)
    # (the loss window restarts after each cut, so look at the limit, not the last ratio)
    assert est.loss_bps is not None and est.estimate_bps < 1_500_000


def test_no_constraint_until_the_link_has_congested_once():
    est = BandwidthEstimator(initial_bps=300_000)
    run(est, Link(50_000_000), 3)
    assert est.transport_cc and est.estimate_bps is None  # an app-limited sender learns nothing
    est2 = BandwidthEstimator(initial_bps=3_000_000)
    run(est2, Link(500_000), 3)
    assert est2.estimate_bps is not None and est2.estimate_bps < 700_000


def test_without_transport_cc_only_loss_or_remb_limit():
    est = BandwidthEstimator()
    assert est.estimate_bps is None  # nothing limits a subscriber that gives no feedback
    est.on_receiver_report(0, 0, send_bps=800_000)
    assert est.estimate_bps is None
    est.on_receiver_report(64, 1000, send_bps=800_000)  # 25 % loss
    assert est.estimate_bps is not None and est.estimate_bps < 800_000
    est.on_remb(200_000)
    assert est.estimate_bps == 200_000


# -- allocator ------------------------------------------------------------------------------

LAYERS = (150_000, 500_000, 1_500_000)


def demand(key, wanted=2, priority=PRIORITY_NORMAL, height=360, layers=LAYERS):
    return VideoDemand(key, priority, wanted, layers, height)


def test_audio_first_then_lowest_layers_then_upgrades_in_priority_order():
    demands = [demand("cam"), demand("screen", priority=PRIORITY_SCREEN)]
    alloc = allocate(100_000 + 2 * 50_000 + 150_000 + 500_000 + 100_000, 2, demands)
    assert alloc["screen"].layer == 1 and alloc["cam"].layer == 0
    assert alloc["cam"].reason == REASON_BANDWIDTH


def test_a_video_that_does_not_fit_even_at_its_lowest_layer_is_paused():
    alloc = allocate(250_000, 1, [demand("a"), demand("b", height=720)])
    assert alloc["b"].layer == 0  # the bigger tile first
    assert alloc["a"] == type(alloc["a"])(PAUSED, REASON_BANDWIDTH)


def test_requested_cap_and_pause_are_respected():
    alloc = allocate(10_000_000, 0, [demand("a", wanted=1), demand("b", wanted=PAUSED)])
    assert alloc["a"].layer == 1 and alloc["b"].layer == PAUSED


def test_layers_the_publisher_does_not_send_are_skipped():
    alloc = allocate(10_000_000, 0, [demand("a", layers=(150_000, 500_000, 0))])
    assert alloc["a"].layer == 1


def test_steps_down_at_once_and_up_only_after_the_estimate_held():
    a = StreamAllocator()
    demands = [demand("v")]
    assert a.update(0, 3_000_000, 0, demands)["v"].layer == 2
    assert a.update(200, 600_000, 0, demands)["v"].layer == 1  # down fast
    t = 200
    ups = []
    while t < 6000:
        t += 200
        ups.append((t, a.update(t, 3_000_000, 0, demands)["v"].layer))
    first_up = next(t for t, layer in ups if layer == 2)
    assert UPGRADE_HOLD_MS * 0.8 <= first_up - 200 <= UPGRADE_HOLD_MS + 1000


def test_an_estimate_oscillating_around_a_layer_boundary_does_not_flap():
    """Recorded-style series: the estimate wobbles ±15 % around what the top layer needs."""
    a = StreamAllocator()
    demands = [demand("v")]
    need = sum(LAYERS[2:3])
    layers = []
    rng = random.Random(3)
    t = 0
    for i in range(300):  # 60 s at 200 ms
        t += 200
        estimate = int(need * (1.0 + 0.15 * (1 if (i // 3) % 2 else -1)) + rng.randint(-20_000, 20_000))
        layers.append(a.update(t, estimate, 0, demands)["v"].layer)
    changes = sum(1 for x, y in pairwise(layers) if x != y)
    assert changes <= 2, f"{changes} layer changes in 60 s"


def test_no_estimate_means_no_constraint():
    a = StreamAllocator()
    assert a.update(0, None, 3, [demand("v", wanted=2)])["v"].layer == 2


def test_offer_gets_transport_cc_on_media_sections_only():
    from sfu.bwe.twcc import TWCC_URI
    from sfu.rtc.sdp import add_transport_cc

    sdp = "v=0\r\nm=video 9 X 97 98\r\na=mid:0\r\na=rtpmap:97 VP8/90000\r\na=rtpmap:98 rtx/90000\r\nm=application 9 X\r\na=mid:1\r\n"
    out = add_transport_cc(sdp, 5)
    assert f"a=extmap:5 {TWCC_URI}" in out.split("m=application")[0]
    assert "a=rtcp-fb:97 transport-cc" in out and "a=rtcp-fb:98" not in out
    assert out.count("extmap") == 1

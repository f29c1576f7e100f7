"""One subscriber's downlink controller: decisions as values, with a fake clock."""

from sfu.bwe.allocator import PAUSED, UPGRADE_HOLD_MS, Priority, Reason
from sfu.bwe.downlink import DownlinkController, StreamInput
from sfu.bwe.probe import PROBE_FOR_MS, PROBE_RATIO

LAYERS = (150_000, 500_000, 1_500_000)
TICK_MS = 200


def video(key, source="camera", participant="p1", paused=False, muted=False, layers=LAYERS, max_height=None):
    return StreamInput(
        key=key,
        track_id=f"{participant}-{key}",
        participant_id=participant,
        kind="video",
        source=source,
        muted=muted,
        paused=paused,
        desired_layer=len(layers) - 1,
        max_height=max_height,
        layer_bps=layers,
        layer_bitrate_bps=layers,
    )


def audio(key, participant="p1", muted=False):
    return StreamInput(
        key, f"{participant}-{key}", participant, "audio", "microphone", muted, False, 0, None, (40_000,), (40_000,)
    )


def run(controller, streams, start_ms, seconds, probe=True):
    """Tick for a while; returns the decisions, one per tick."""
    decisions = []
    t = start_ms
    while t < start_ms + seconds * 1000:
        t += TICK_MS
        decisions.append(controller.update(t, streams, probe))
    return t, decisions


def test_without_an_estimate_nothing_is_limited_and_nothing_is_told():
    controller = DownlinkController()
    decision = controller.update(1000, [video("a"), audio("m")])
    assert decision.estimate_bps is None
    assert set(decision.allocations) == {"a"}, "audio is not allocated, only counted"
    assert decision.allocations["a"].reason is Reason.UNCONSTRAINED
    assert decision.allocations["a"].layer_cap is None
    assert decision.quality_changes == () and decision.padding_bps == 0


def test_priorities_are_screen_then_pinned_then_the_active_speaker_then_the_rest():
    controller = DownlinkController()
    controller.pinned.add("p2-b")
    controller.active_speaker = "p3"
    streams = [video("a", source="screen"), video("b", participant="p2"), video("c", participant="p3"), video("d")]
    decision = controller.update(1000, streams)
    assert [decision.priorities[k] for k in "abcd"] == [
        Priority.SCREEN,
        Priority.PINNED,
        Priority.SPEAKER,
        Priority.NORMAL,
    ]
    assert Priority.SPEAKER.label == "active-speaker"


def test_a_tight_remb_pauses_the_lowest_priority_video_and_tells_it_once_each_way():
    controller = DownlinkController()
    controller.pinned.add("p1-a")
    streams = [video("a"), video("b"), audio("m")]
    controller.estimator.on_remb(250_000)  # room for audio and one lowest layer
    t, decisions = run(controller, streams, 0, 3)
    last = decisions[-1]
    assert last.allocations["a"].layer == 0
    assert last.allocations["b"].layer == PAUSED and last.allocations["b"].paused_for_bandwidth
    told = [c for d in decisions for c in d.quality_changes]
    assert [(c.track_id, c.paused, c.reason) for c in told] == [("p1-b", True, Reason.BANDWIDTH)]
    assert told[0].estimate_bps == 250_000
    controller.estimator.on_remb(5_000_000)
    t, decisions = run(controller, streams, t, 3)
    told = [c for d in decisions for c in d.quality_changes]
    assert [(c.track_id, c.paused) for c in told] == [("p1-b", False)]
    assert not decisions[-1].allocations["b"].paused_for_bandwidth


def test_a_paused_or_muted_video_is_not_a_bandwidth_pause():
    controller = DownlinkController()
    controller.estimator.on_remb(5_000_000)
    decision = controller.update(1000, [video("a", paused=True), video("b", muted=True)])
    for key in "ab":
        alloc = decision.allocations[key]
        assert alloc.layer == PAUSED and alloc.reason is Reason.REQUESTED and not alloc.paused_for_bandwidth
    assert decision.quality_changes == ()


def test_a_video_held_back_by_remb_is_probed_and_a_completed_probe_confirms_the_estimate():
    controller = DownlinkController()
    streams = [video("a")]
    controller.estimator.on_remb(700_000)  # carries layer 1, not the top layer
    t, decisions = run(controller, streams, 0, UPGRADE_HOLD_MS / 1000 + 1)
    assert decisions[-1].allocations["a"].layer == 1
    assert decisions[-1].allocations["a"].reason is Reason.BANDWIDTH
    padded = [d.padding_bps for d in decisions if d.padding_bps > 0]
    assert padded, "held back by bandwidth: a probe pads"
    assert padded[0] == PROBE_RATIO * 700_000 - LAYERS[1], "the first probe: up to the ratio, less the media"
    t, _ = run(controller, streams, t, PROBE_FOR_MS / 1000 + 0.4)
    assert controller.prober.successes >= 1
    # without probing, no padding at all
    assert all(d.padding_bps == 0 for d in run(controller, streams, t, 2, probe=False)[1])


def test_nothing_is_probed_without_transport_cc_or_remb():
    controller = DownlinkController()
    controller.estimator.on_receiver_report(64, 0, 800_000)  # 25 % loss: a loss-based limit only
    _, decisions = run(controller, [video("a")], 0, 3)
    assert decisions[-1].estimate_bps is not None
    assert all(d.padding_bps == 0 for d in decisions)


def test_the_send_rate_is_measured_over_half_second_windows():
    controller = DownlinkController()
    assert controller.measure_send_rate(1000, 0) == 0
    assert controller.measure_send_rate(1200, 50_000) == 0, "not half a second yet"
    assert controller.measure_send_rate(1500, 62_500) == 1_000_000
    assert controller.measure_send_rate(2000, 62_500) == 0

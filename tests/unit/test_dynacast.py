"""Dynacast: which layers a publisher is asked to send, with a fake clock."""

from sfu.bwe.allocator import Allocation, Reason
from sfu.dynacast import HOLD_MS, LayerNeed, needed_layers, wanted_layer
from sfu.forwarding import Codec, Consumer, OutStream, Producer

VP8 = Codec("VP8", 90000)


def simulcast_producer(heights=(180, 360, 720), on_demand_changed=None):
    producer = Producer(
        "p-1",
        "p",
        "video",
        "camera",
        VP8,
        96,
        request_keyframe=lambda producer, layer: None,
        rids=["q", "h", "f"],
        on_demand_changed=on_demand_changed,
    )
    for layer, height in zip(producer.layers, heights, strict=True):
        layer.height = height
    return producer


def consumer_of(producer, max_height=None, paused=False):
    consumer = Consumer(producer, "s", OutStream(1, 0, 0), 97, send=lambda b: True, now_s=lambda: 0.0)
    producer.add_consumer(consumer, 0.0)
    consumer.set_preferences(max_height, paused, 0)
    return consumer


def test_need_is_the_union_of_the_layers_up_to_each_consumers_cap():
    producer = simulcast_producer()
    consumer_of(producer, max_height=200)
    assert needed_layers(producer.consumers, producer.layers)[0] == 1
    consumer_of(producer, max_height=400)
    assert needed_layers(producer.consumers, producer.layers)[0] == 2
    consumer_of(producer, max_height=None)
    assert needed_layers(producer.consumers, producer.layers)[0] == 3


def test_no_consumers_need_nothing():
    producer = simulcast_producer()
    count, reason = needed_layers(producer.consumers, producer.layers)
    assert count == 0 and reason == "no subscribers"
    consumer = consumer_of(producer)
    consumer.close()
    assert needed_layers(producer.consumers, producer.layers)[0] == 0


def test_paused_consumers_are_ignored_but_bandwidth_limited_ones_count():
    producer = simulcast_producer()
    paused = consumer_of(producer, max_height=None, paused=True)
    assert needed_layers(producer.consumers, producer.layers) == (0, "all 1 subscribers paused it")
    limited = consumer_of(producer, max_height=400)
    limited.set_allocation(Allocation(0, Reason.BANDWIDTH), 0)  # its downlink carries only the lowest layer now
    assert needed_layers(producer.consumers, producer.layers)[0] == 2  # what it asked for, not what fits
    paused.set_preferences(None, False, 0)
    assert needed_layers(producer.consumers, producer.layers)[0] == 3


def test_a_layer_of_unknown_height_counts_as_needed_until_measured():
    producer = simulcast_producer(heights=(0, 0, 0))
    assert wanted_layer(100, producer.layers) == 2  # must run so its keyframes tell its height
    producer.layers[0].height, producer.layers[1].height = 90, 180
    assert wanted_layer(100, producer.layers) == 0  # heights grow: the top one cannot fit either
    assert wanted_layer(200, producer.layers) == 2
    assert wanted_layer(0, simulcast_producer().layers) == 0  # the lowest layer is always wanted


def test_upgrade_takes_effect_at_once():
    need = LayerNeed(3, now_ms=0)
    assert need.update(HOLD_MS + 1, 1) and need.active == 1
    assert need.update(HOLD_MS + 2, 3) and need.active == 3  # no hold on the way up
    assert not need.update(HOLD_MS + 3, 3)


def test_downgrade_only_after_the_need_was_gone_for_the_hold_time():
    need = LayerNeed(3, now_ms=0)
    assert not need.update(100, 3)
    assert not need.update(200, 1)  # the viewer's tile shrank
    assert not need.update(200 + HOLD_MS - 1, 1) and need.active == 3
    assert need.update(200 + HOLD_MS, 1) and need.active == 1


def test_a_brief_dip_in_need_toggles_nothing():
    need = LayerNeed(3, now_ms=0)
    changes = 0
    for step in range(40):  # a tile resized back and forth every 500 ms for 20 s
        changes += need.update(step * 500, 1 if step % 2 else 3)
    assert changes == 0 and need.active == 3


def test_steps_down_to_the_highest_layer_needed_within_the_hold():
    need = LayerNeed(3, now_ms=0)
    need.update(1000, 0)  # nobody watches...
    need.update(2000, 2)  # ...then someone wants the middle layer
    need.update(2100, 0)  # and goes away again
    assert need.update(3000, 0) and need.active == 2  # the top layer went unneeded at 0 + HOLD_MS
    assert not need.update(2100 + HOLD_MS - 1, 0)  # needed until 2100
    assert need.update(2100 + HOLD_MS, 0) and need.active == 0  # nothing: the video stops


def test_a_new_producer_keeps_every_layer_for_the_hold_time():
    need = LayerNeed(3, now_ms=5000)
    assert not need.update(5000 + HOLD_MS - 1, 0) and need.active == 3
    assert need.update(5000 + HOLD_MS, 0) and need.active == 0


def test_a_single_layer_video_is_on_or_off_as_a_whole():
    producer = Producer("p-2", "p", "video", "camera", VP8, 96, request_keyframe=lambda producer, layer: None)
    need = LayerNeed(len(producer.layers), now_ms=0)
    consumer = consumer_of(producer, max_height=90)
    assert needed_layers(producer.consumers, producer.layers)[0] == 1
    consumer.set_preferences(90, True, 0)
    assert need.update(HOLD_MS, needed_layers(producer.consumers, producer.layers)[0]) and need.active == 0
    consumer.set_preferences(90, False, 0)
    assert need.update(HOLD_MS + 1, needed_layers(producer.consumers, producer.layers)[0]) and need.active == 1


def test_consumers_changes_call_the_producers_demand_hook():
    calls = []
    producer = simulcast_producer(on_demand_changed=lambda p: calls.append(len(p.consumers)))
    consumer = consumer_of(producer, max_height=200)  # added, then its preferences
    consumer.set_preferences(None, False, 0)
    consumer.close()
    assert calls == [1, 1, 1, 0]


def test_a_restarted_layer_is_offered_to_the_allocator_at_its_last_bitrate():
    producer = simulcast_producer()
    top = producer.layers[2]
    top.last_arrival_ms = 1000
    top.bitrate_bps = 1_200_000
    assert top.measure(1100) == 1_200_000
    assert top.measure(5000) == 0  # stopped
    top.last_arrival_ms = 6000  # restarted, not measured yet
    assert top.measure(6010) == top.stopped_bps > 0


def test_a_restarted_layer_is_taken_on_its_first_keyframe_without_a_keyframe_request():
    from tests.unit.test_forwarding import Simulcast, assert_continuous, make, out_fields

    started = []
    producer, consumer, sent, requests, clock = make(
        rids=["q", "h", "f"], on_layer_started=lambda: started.append(consumer.current)
    )
    sim = Simulcast(producer)
    consumer.set_preferences(max_height=200, paused=False, now_ms=sim.ms)
    sim.frame(key=True)  # sizes learnt; the consumer takes the low layer
    sim.frame()
    assert consumer.current == 0
    for _ in range(20):  # dynacast stopped the upper layers a while ago
        sim.frame(layers=(0,))
    sim.ms += 1000
    sim.frame(layers=(0,))
    consumer.set_preferences(max_height=None, paused=False, now_ms=sim.ms)
    clock.t += 10
    assert consumer.target == 0  # the top layer is not arriving yet: stay
    requests.clear()
    sim.frame(layers=(0, 1, 2), key=True)  # the publisher restarts them, each with a keyframe
    assert consumer.current == 2 and started[-1] == 0
    assert consumer.layer_switches == 1, "straight to the top layer, not through the middle one"
    assert requests == []  # the restart's own keyframe was enough
    assert_continuous(out_fields(sent))

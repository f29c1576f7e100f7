"""Producer → consumer forwarding, single-layer and simulcast, with a fake clock and transport."""

import struct
from itertools import pairwise

from sfu.forwarding import LAYER_TIMEOUT_MS, Codec, Consumer, OutStream, Producer
from sfu.media.rtp import parse_rtp, write_header
from sfu.media.vp8 import parse_descriptor

VP8 = Codec("VP8", 90000)


def vp8_payload(pid: int, tl0: int, key: bool, size: tuple[int, int] | None = None, start: bool = True) -> bytes:
    """A VP8 RTP payload: descriptor with 15-bit picture id and TL0PICIDX, then a frame header."""
    b0 = 0x80 | (0x10 if start else 0)
    desc = bytes([b0, 0xC0, 0x80 | (pid >> 8), pid & 0xFF, tl0])
    if not key:
        return desc + bytes([0x01]) + b"d" * 20
    w, h = size or (320, 180)
    return desc + bytes([0x00, 0x00, 0x00]) + b"\x9d\x01\x2a" + struct.pack("<HH", w, h) + b"k" * 20


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def make(kind="video", rids=None, **consumer_options):
    clock = Clock()
    requests = []
    producer = Producer(
        "p-1", "p", kind, "camera", VP8, 96, request_keyframe=lambda p, layer: requests.append(layer.index), rids=rids
    )
    for i, layer in enumerate(producer.layers):
        layer.ssrc = 1111 + i
    sent = []
    consumer = Consumer(
        producer,
        "s",
        OutStream(2222, 1000, 5000),
        97,
        send=lambda b: sent.append(b) or True,
        now_s=clock,
        **consumer_options,
    )
    producer.add_consumer(consumer, clock())
    return producer, consumer, sent, requests, clock


def push(producer, seq, ts, payload, arrival_ms=0, layer=0):
    data = write_header(0, 96, seq, ts, 1111 + layer) + payload
    producer.on_rtp(producer.layers[layer], data, parse_rtp(data), arrival_ms)


KEY = vp8_payload(100, 5, key=True)
DELTA = vp8_payload(101, 5, key=False)


def test_consumer_waits_for_keyframe_then_rewrites_header():
    producer, consumer, sent, requests, clock = make()
    push(producer, 10, 0, DELTA)
    assert sent == []
    push(producer, 11, 3000, KEY)
    push(producer, 12, 6000, DELTA)
    out = [parse_rtp(p) for p in sent]
    assert [(v.seq, v.timestamp, v.ssrc, v.payload_type) for v in out] == [
        (1000, 5000, 2222, 97),
        (1001, 8000, 2222, 97),
    ]
    assert sent[0][12:] == KEY  # payload bytes untouched on a single layer


def test_keyframe_requests_are_throttled_to_one_per_500ms():
    producer, consumer, sent, requests, clock = make()
    assert len(requests) == 1  # on consumer start
    for _ in range(20):
        consumer.on_keyframe_request()
    assert len(requests) == 1
    clock.t += 0.6
    consumer.on_keyframe_request()
    assert len(requests) == 2


def test_nack_is_answered_from_the_cache():
    producer, consumer, sent, requests, clock = make()
    push(producer, 11, 0, KEY)
    push(producer, 12, 0, DELTA)
    consumer.on_nack([1001, 999])
    assert sent[-1] == sent[1]
    assert consumer.retransmitted == 1 and consumer.nacks_unserved == 1


def test_mute_stops_forwarding_and_unmute_resumes_on_keyframe():
    producer, consumer, sent, requests, clock = make()
    push(producer, 1, 0, KEY)
    producer.set_muted(True, clock())
    push(producer, 2, 3000, KEY)
    assert len(sent) == 1
    clock.t += 1
    producer.set_muted(False, clock())
    push(producer, 3, 6000, DELTA)
    assert len(sent) == 1  # waiting for a keyframe
    push(producer, 4, 9000, vp8_payload(104, 6, key=True))
    assert parse_rtp(sent[-1]).seq == 1001  # continuous output after the pause


def test_audio_starts_immediately_and_foreign_payload_types_are_dropped():
    producer, consumer, sent, requests, clock = make(kind="audio")
    push(producer, 1, 0, b"opus")
    assert len(sent) == 1 and requests == []
    data = write_header(0, 97, 2, 960, 1111) + b"rtx"
    producer.on_rtp(producer.layers[0], data, parse_rtp(data), 0)
    assert len(sent) == 1 and producer.packets_dropped == 1


def test_closed_consumer_gets_nothing():
    producer, consumer, sent, requests, clock = make()
    consumer.close()
    push(producer, 1, 0, KEY)
    assert sent == [] and producer.consumers == []


def test_sender_report_timestamp_follows_publisher_clock():
    producer, consumer, sent, requests, clock = make()
    push(producer, 1, 90000, KEY, arrival_ms=1000)
    ntp = 1000 << 32
    producer.on_sender_report(producer.layers[0], ntp, 90000)
    # one second later on the publisher's clock: 90000 ticks later, shifted by the munger offset
    assert consumer.sender_report_timestamp(ntp + (1 << 32), 2000) == (5000 + 90000) & 0xFFFFFFFF


def test_sender_report_timestamp_without_a_publisher_report_follows_the_last_packet():
    producer, consumer, sent, requests, clock = make()
    push(producer, 1, 90000, KEY, arrival_ms=1000)
    # half a second after the packet arrived (media clock), whatever the wall clock says
    assert consumer.sender_report_timestamp(123 << 32, 1500) == (5000 + 45000) & 0xFFFFFFFF


# -- simulcast -------------------------------------------------------------------------------

SIZES = [(320, 180), (640, 360), (1280, 720)]


class Simulcast:
    """Three layers with unrelated sequence numbers, timestamps and picture ids."""

    def __init__(self, producer):
        self.producer = producer
        self.seq = [100, 30000, 65530]
        self.ts = [1000, 500000, 0xFFFFF000]
        self.pid = [10, 2000, 32760]
        self.tl0 = [1, 100, 250]
        self.ms = 10_000

    def frame(self, layers=(0, 1, 2), key=False, packets=2):
        self.ms += 33
        for i in layers:
            for n in range(packets):
                payload = vp8_payload(self.pid[i], self.tl0[i], key=key and n == 0, size=SIZES[i], start=n == 0)
                push(self.producer, self.seq[i] & 0xFFFF, self.ts[i] & 0xFFFFFFFF, payload, self.ms, layer=i)
                self.seq[i] += 1
            self.ts[i] += 3000
            self.pid[i] = (self.pid[i] + 1) & 0x7FFF
            self.tl0[i] = (self.tl0[i] + 1) & 0xFF


def out_fields(sent):
    rows = []
    for p in sent:
        v = parse_rtp(p)
        d = parse_descriptor(p[v.payload_start :])
        rows.append((v.seq, v.timestamp, d.picture_id, d.tl0picidx))
    return rows


def assert_continuous(rows):
    for (s0, t0, p0, l0), (s1, t1, p1, l1) in pairwise(rows):
        assert (s1 - s0) & 0xFFFF == 1, rows
        assert 0 <= (t1 - t0) & 0xFFFFFFFF < 0x80000000, "timestamps never go back"
        assert (p1 - p0) & 0x7FFF in (0, 1), "picture id continues"
        assert (l1 - l0) & 0xFF in (0, 1), "TL0PICIDX continues"


def test_switches_layer_only_on_keyframe_with_continuous_output():
    producer, consumer, sent, requests, clock = make(rids=["q", "h", "f"])
    sim = Simulcast(producer)
    consumer.set_preferences(max_height=200, paused=False, now_ms=sim.ms)
    assert consumer.target == 0
    sim.frame(layers=(1, 2), key=True)
    sim.frame()
    assert sent == []  # waiting for a keyframe of the low layer
    sim.frame(key=True)  # every layer sends a keyframe: sizes are learnt
    assert [(layer.width, layer.height) for layer in producer.layers] == SIZES
    for _ in range(3):
        sim.frame()
    assert consumer.current == 0
    assert len(sent) == 2 * 4
    # Raise the cap: keep forwarding the low layer until the high layer's keyframe.
    requests.clear()
    clock.t += 1
    consumer.set_preferences(max_height=None, paused=False, now_ms=sim.ms)
    assert consumer.target == 2 and requests == [2]
    sim.frame()
    assert consumer.current == 0 and len(sent) == 2 * 5
    sim.frame(layers=(2,), key=True)
    sim.frame(layers=(0, 1))  # late packets of the old layer are dropped
    sim.frame()
    assert consumer.current == 2 and consumer.layer_switches == 1
    rows = out_fields(sent)
    assert len(rows) == 2 * 7
    assert_continuous(rows)
    # Lower it again.
    consumer.set_preferences(max_height=400, paused=False, now_ms=sim.ms)
    assert consumer.target == 1
    sim.frame(layers=(1,), key=True)
    sim.frame()
    assert consumer.current == 1
    assert_continuous(out_fields(sent))


def test_paused_consumer_sends_nothing_and_resumes_on_keyframe():
    producer, consumer, sent, requests, clock = make(rids=["q", "h", "f"])
    sim = Simulcast(producer)
    sim.frame(key=True)
    sim.frame()
    count = len(sent)
    assert count > 0
    consumer.set_preferences(max_height=None, paused=True, now_ms=sim.ms)
    for _ in range(5):
        sim.frame(key=True)
    assert len(sent) == count
    consumer.set_preferences(max_height=None, paused=False, now_ms=sim.ms)
    sim.frame()
    assert len(sent) == count  # resumes on a keyframe only
    sim.frame(key=True)
    assert len(sent) == count + 2
    assert_continuous(out_fields(sent))


def test_falls_back_when_the_forwarded_layer_stops_and_returns_when_it_comes_back():
    producer, consumer, sent, requests, clock = make(rids=["q", "h", "f"])
    sim = Simulcast(producer)
    sim.frame(key=True)
    assert consumer.current == 2
    # The publisher drops its top layer (e.g. its uplink got worse).
    for _ in range(LAYER_TIMEOUT_MS // 33 + 2):
        sim.frame(layers=(0, 1))
    assert consumer.select(sim.ms) == 1
    sim.frame(layers=(0,))
    sim.frame(layers=(1,), key=True)
    assert consumer.current == 1
    # It comes back.
    sim.frame(layers=(0, 1, 2))
    assert consumer.select(sim.ms) == 2
    sim.frame(layers=(0, 1))
    sim.frame(layers=(2,), key=True)
    assert consumer.current == 2
    assert_continuous(out_fields(sent))


def test_layer_switch_across_output_picture_id_wraparound():
    producer, consumer, sent, requests, clock = make(rids=["q", "h"])
    sim = Simulcast(producer)
    sim.pid = [32765, 5]
    sim.frame(layers=(0, 1), key=True)
    consumer.set_preferences(max_height=200, paused=False, now_ms=sim.ms)
    sim.frame(layers=(0,), key=True)
    for _ in range(5):
        sim.frame(layers=(0, 1))
    consumer.set_preferences(max_height=None, paused=False, now_ms=sim.ms)
    sim.frame(layers=(1,), key=True)
    rows = out_fields(sent)
    assert rows[-1][2] < 100  # wrapped past 32767
    assert_continuous(rows)


def test_a_source_restart_goes_on_from_its_keyframe_with_continuous_output():
    # The publisher's stream comes over a new connection: new sequence numbers and timestamps
    # far from the old ones. The consumer waits for a keyframe, as on a layer switch, and its
    # output goes on where it stopped, with no NACK storm for the jump.
    producer, consumer, sent, requests, clock = make()
    producer.layers[0].nack = None
    push(producer, 10, 0, KEY, arrival_ms=1000)
    push(producer, 11, 3000, DELTA, arrival_ms=1033)
    assert len(sent) == 2
    producer.source_restarted()
    assert producer.layers[0].ssrc is None and producer.layers[0].stats.highest_ext_seq < 0
    producer.layers[0].ssrc = 1111  # learnt again by the router from the new connection
    clock.t += 1.0
    asked = len(requests)
    push(producer, 40000, 7_000_000, DELTA, arrival_ms=2033)
    assert len(sent) == 2  # not a keyframe: dropped, and one asked for
    assert len(requests) == asked + 1
    push(producer, 40001, 7_003_000, KEY, arrival_ms=2066)
    push(producer, 40002, 7_006_000, DELTA, arrival_ms=2100)
    out = [parse_rtp(p) for p in sent]
    assert [v.seq for v in out] == [1000, 1001, 1002, 1003]
    assert out[2].timestamp - out[1].timestamp == (2066 - 1033) * 90  # the gap on the clock
    assert out[3].timestamp - out[2].timestamp == 3000


def test_a_stream_back_after_a_silence_resumes_on_a_keyframe_asked_for_at_once():
    producer, consumer, sent, requests, clock = make()
    push(producer, 10, 0, KEY, arrival_ms=1000)
    push(producer, 11, 3000, DELTA, arrival_ms=1033)
    asked = len(requests)
    # Back 3 s later, with the numbers the publisher went on with meanwhile.
    push(producer, 100, 270_000, DELTA, arrival_ms=4033)
    assert len(sent) == 2, "a delta frame after the silence cannot be decoded: not forwarded"
    assert len(requests) == asked + 1, "a keyframe is asked for at once"
    push(producer, 101, 273_000, KEY, arrival_ms=4066)
    out = [parse_rtp(p) for p in sent]
    assert [v.seq for v in out] == [1000, 1001, 1002]  # no hole for the receiver to NACK
    # A short gap (below the silence) is forwarded as it is.
    push(producer, 103, 279_000, DELTA, arrival_ms=4400)
    assert len(sent) == 4
    assert parse_rtp(sent[-1]).seq == 1004

"""Producer → consumer forwarding with a fake clock and a fake transport."""

from sfu.forwarding import Codec, Consumer, OutStream, Producer
from sfu.media.rtp import parse_rtp, write_header

VP8 = Codec("VP8", 90000)
KEY = bytes([0x90, 0x80, 0x81, 0x23, 0x10]) + b"k" * 20
DELTA = bytes([0x90, 0x80, 0x81, 0x23, 0x11]) + b"d" * 20


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def make(kind="video"):
    clock = Clock()
    requests = []
    producer = Producer("p-1", "p", kind, "camera", VP8, 96, request_keyframe=requests.append)
    producer.ssrc = 1111
    sent = []
    consumer = Consumer(producer, "s", OutStream(2222, 1000, 5000), 97, send=lambda b: sent.append(b) or True, now_s=clock)
    producer.add_consumer(consumer, clock())
    return producer, consumer, sent, requests, clock


def push(producer, seq, ts, payload, arrival_ms=0):
    data = write_header(0, 96, seq, ts, 1111) + payload
    producer.on_rtp(data, parse_rtp(data), arrival_ms)


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
    assert sent[0][12:] == KEY  # payload bytes untouched


def test_keyframe_requests_are_throttled_to_one_per_500ms():
    producer, consumer, sent, requests, clock = make()
    assert len(requests) == 1  # on consumer start
    for i in range(20):
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
    push(producer, 4, 9000, KEY)
    assert parse_rtp(sent[-1]).seq == 1001  # continuous output after the pause


def test_audio_starts_immediately_and_foreign_payload_types_are_dropped():
    producer, consumer, sent, requests, clock = make(kind="audio")
    push(producer, 1, 0, b"opus")
    assert len(sent) == 1 and requests == []
    data = write_header(0, 97, 2, 960, 1111) + b"rtx"
    producer.on_rtp(data, parse_rtp(data), 0)
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
    producer.on_sender_report(ntp, 90000, clock())
    # one second later on the publisher's clock: 90000 ticks later, shifted by the munger offset
    assert consumer.sender_report_timestamp(ntp + (1 << 32)) == (5000 + 90000) & 0xFFFFFFFF

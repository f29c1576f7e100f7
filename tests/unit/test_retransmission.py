"""Loss repair: RTX wrap/unwrap, the upstream NACK generator (fake clock), the reverse
sequence mapping, and the consumer/producer paths that tie them together."""

import struct

import pytest
from aiortc.rtp import RtcpPacket

from sfu.forwarding import MAX_NACK_SEQS, Consumer, OutStream, Producer
from sfu.media.munger import RtpMunger
from sfu.media.nack import (
    MAX_AGE_MS,
    MAX_MISSING,
    MAX_TRIES,
    MIN_RETRY_MS,
    REORDER_WAIT_MS,
    NackGenerator,
    ResendBudget,
    nack_packet,
)
from sfu.media.rtp import parse_rtp, write_header
from sfu.media.rtx import unwrap_rtx, wrap_rtx
from tests.unit.test_forwarding import DELTA, KEY, VP8, Clock, vp8_payload

# -- RTX (RFC 4588) ---------------------------------------------------------------------


def test_rtx_wrap_keeps_timestamp_and_marker_and_prefixes_the_original_seq():
    packet = write_header(1, 97, 0xBEEF, 123456, 2222) + b"payload"
    rtx = wrap_rtx(packet, 98, 7, 3333)
    view = parse_rtp(rtx)
    assert (view.payload_type, view.seq, view.ssrc, view.timestamp, view.marker) == (98, 7, 3333, 123456, 1)
    assert rtx[view.payload_start : view.payload_end] == b"\xbe\xefpayload"


def test_rtx_unwrap_restores_the_original_packet_view():
    packet = write_header(1, 97, 0xBEEF, 123456, 2222) + b"payload"
    rtx = wrap_rtx(packet, 98, 7, 3333)
    original = unwrap_rtx(rtx, parse_rtp(rtx), 97, 2222)
    assert original is not None
    assert (original.payload_type, original.seq, original.ssrc, original.timestamp, original.marker) == (
        97,
        0xBEEF,
        2222,
        123456,
        1,
    )
    assert rtx[original.payload_start : original.payload_end] == b"payload"


def test_rtx_unwrap_keeps_header_extensions_and_drops_padding():
    # extension header (one word) and 3 bytes of padding around "xy"
    hdr = struct.pack("!BBHII", 0xB0, 98, 5, 9000, 3333) + b"\xbe\xde\x00\x01\x10\xaa\x00\x00"
    rtx = hdr + b"\x00\x10xy" + b"\x00\x00\x03"
    original = unwrap_rtx(rtx, parse_rtp(rtx), 96, 1111)
    assert original is not None and original.seq == 0x10 and original.ext_start == 12
    assert rtx[original.payload_start : original.payload_end] == b"xy"


@pytest.mark.parametrize("payload", [b"", b"\x01"])
def test_rtx_too_short_for_an_original_seq_is_rejected(payload):
    rtx = write_header(0, 98, 5, 0, 3333) + payload
    assert unwrap_rtx(rtx, parse_rtp(rtx), 96, 1111) is None


# -- the upstream NACK generator --------------------------------------------------------


def test_gap_is_nacked_after_the_reorder_wait():
    g = NackGenerator()
    for seq in (100, 101, 104):
        g.on_packet(seq, 0)
    assert g.missing == [102, 103]
    assert g.poll(REORDER_WAIT_MS - 1) == []
    assert g.poll(REORDER_WAIT_MS) == [102, 103]
    assert g.nacks_sent == 2


def test_packet_reordered_within_the_wait_is_never_nacked():
    g = NackGenerator()
    g.on_packet(100, 0)
    g.on_packet(102, 0)
    assert g.on_packet(101, 3) is True  # fills the hole
    assert g.poll(REORDER_WAIT_MS + 1) == []
    assert g.nacks_sent == 0 and g.packets_repaired == 0


def test_nack_is_retried_spaced_by_rtt_until_repaired():
    g = NackGenerator()
    g.rtt_ms = 50
    g.on_packet(1, 0)
    g.on_packet(3, 0)
    assert g.poll(10) == [2]
    assert g.poll(10 + g.retry_interval_ms - 1) == []
    assert g.poll(10 + g.retry_interval_ms) == [2]
    assert g.on_packet(2, 100) is True
    assert g.packets_repaired == 1 and g.missing == []
    assert g.poll(1000) == []


def test_retry_interval_has_a_floor():
    g = NackGenerator()
    g.rtt_ms = 1
    assert g.retry_interval_ms == MIN_RETRY_MS


def test_rtt_is_learned_from_first_try_repairs_only():
    g = NackGenerator()
    g.on_packet(1, 0)
    g.on_packet(3, 0)
    g.on_packet(5, 0)
    g.poll(10)  # NACKs 2 and 4 at t=10
    g.on_packet(2, 30)  # repaired 20 ms later
    assert g.rtt_ms == pytest.approx(0.8 * 100 + 0.2 * 20)
    rtt = g.rtt_ms
    g.poll(10 + g.retry_interval_ms)  # second NACK of 4
    g.on_packet(4, 500)  # NACKed twice: ambiguous, not sampled
    assert g.rtt_ms == rtt


def test_gives_up_after_max_tries_and_asks_for_a_keyframe():
    g = NackGenerator()
    g.rtt_ms = 1  # retry every MIN_RETRY_MS
    g.on_packet(1, 0)
    g.on_packet(3, 0)
    now, nacked = 0.0, 0
    while g.missing and now < MAX_AGE_MS:
        now += 5
        nacked += len(g.poll(now))
    assert nacked == MAX_TRIES
    assert g.missing == [] and g.packets_given_up == 1
    assert g.take_keyframe_request() is True
    assert g.take_keyframe_request() is False  # once


def test_gives_up_on_packets_older_than_max_age():
    g = NackGenerator()
    g.rtt_ms = 400  # few tries fit in the age limit
    g.on_packet(1, 0)
    g.on_packet(3, 0)
    g.poll(REORDER_WAIT_MS)
    assert g.poll(MAX_AGE_MS + 1) == []
    assert g.missing == [] and g.keyframe_needed


def test_a_gap_too_long_to_nack_asks_for_a_keyframe_instead():
    g = NackGenerator()
    g.on_packet(1, 0)
    g.on_packet(3, 0)
    g.on_packet(3 + MAX_MISSING + 2, 0)
    assert g.missing == [] and g.list_overflows == 1
    assert g.take_keyframe_request() is True
    assert g.poll(100) == []


def test_duplicates_and_old_packets_fill_no_hole():
    g = NackGenerator()
    g.on_packet(10, 0)
    g.on_packet(11, 0)
    assert g.on_packet(11, 1) is False
    assert g.on_packet(5, 1) is False


def test_downstream_request_is_deduplicated_and_throttled():
    g = NackGenerator()
    g.rtt_ms = 100
    g.on_packet(1, 0)
    g.on_packet(3, 0)
    assert g.poll(10) == [2]
    # two subscribers ask right after: already asked for, nothing new
    assert g.request(2, 20) and g.request(2, 21)
    assert g.poll(21) == []
    # one asks again later than half a retry interval: asked for again at once
    assert g.request(2, 10 + g.retry_interval_ms / 2)
    assert g.poll(10 + g.retry_interval_ms / 2) == [2]
    # a packet that is not missing is not asked for
    assert g.request(1, 100) is False


def test_nack_packet_packs_extended_seqs_across_the_wrap():
    data = nack_packet(1, 2, [65534, 65535, 65536, 65537, 70000])
    (packet,) = RtcpPacket.parse(data)
    assert packet.ssrc == 1 and packet.media_ssrc == 2
    assert [seq & 0xFFFF for seq in packet.lost] == [65534, 65535, 0, 1, 70000 & 0xFFFF]


# -- reverse sequence mapping -----------------------------------------------------------


def test_reverse_maps_an_outgoing_seq_back_to_the_incoming_one():
    m = RtpMunger(initial_seq=65534, initial_ts=0)
    m.start(70000, 0, 1)
    for ext in (70000, 70001, 70003, 70010):  # 70002 and 70004-70009 lost upstream
        m.map(ext, 0)
    out = (70002 - 70000 + 65534) & 0xFFFF
    assert out < 100  # wrapped
    assert m.reverse(out) == 70002
    assert m.reverse(m.last_seq) == 70010
    assert m.reverse((m.last_seq + 1) & 0xFFFF) is None  # not sent yet
    assert m.reverse(65533) is None  # before the start


def test_reverse_and_late_packets_stop_at_a_skip_and_a_restart():
    m = RtpMunger(initial_seq=100, initial_ts=0)
    m.start(10, 0, 1)
    m.map(10, 0)
    m.map(12, 0)  # 11 missing
    m.skip(13)  # padding
    assert m.map(11, 0) is None  # its number would collide after the skip
    assert m.reverse(101) is None
    m.start(50, 0, 1)
    assert m.reverse(m.last_seq) is None  # nothing sent in this epoch yet
    assert m.map(49, 0) is None


# -- consumer: RTX to the subscriber, forwarding what the cache lacks --------------------


def make(rtx=True, **consumer_options):
    clock = Clock()
    nacks: list[tuple[int, list[int]]] = []
    plis: list[int] = []
    producer = Producer(
        "p-1",
        "p",
        "video",
        "camera",
        VP8,
        96,
        request_keyframe=lambda p, layer: plis.append(layer.index),
        send_nack=lambda p, layer, seqs: nacks.append((layer.index, list(seqs))),
    )
    producer.rtx_payload_type = 99
    producer.layers[0].ssrc = 1111
    sent: list[bytes] = []
    consumer = Consumer(
        producer,
        "s",
        OutStream(2222, 1000, 5000),
        97,
        send=lambda b: sent.append(b) or True,
        now_s=clock,
        rtx_payload_type=98 if rtx else None,
        rtx_ssrc=3333,
        **consumer_options,
    )
    producer.add_consumer(consumer, clock())
    return producer, consumer, sent, nacks, plis


def push(producer, seq, payload, arrival_ms, ts=0):
    data = write_header(0, 96, seq, ts, 1111) + payload
    producer.on_rtp(producer.layers[0], data, parse_rtp(data), arrival_ms)


def push_rtx(producer, rtx_seq, osn, payload, arrival_ms, ts=0):
    data = write_header(0, 99, rtx_seq, ts, 4444) + struct.pack("!H", osn) + payload
    producer.on_rtx(producer.layers[0], data, parse_rtp(data), arrival_ms)


def test_cache_hit_is_resent_as_rtx_with_its_own_sequence_numbers():
    producer, consumer, sent, nacks, plis = make()
    push(producer, 10, KEY, 0)
    push(producer, 11, DELTA, 1)
    original = sent[1]
    consumer.on_nack([1001, 1000], now_ms=10)
    first, second = (parse_rtp(p) for p in sent[2:])
    assert (first.payload_type, first.ssrc, second.seq) == (98, 3333, (first.seq + 1) & 0xFFFF)
    assert sent[2][first.payload_start :] == struct.pack("!H", 1001) + original[12:]
    assert first.timestamp == parse_rtp(original).timestamp
    assert consumer.rtx_sent == 2 and consumer.retransmitted == 2 and consumer.nacks_received == 2


def test_without_rtx_the_resend_is_the_cached_packet():
    producer, consumer, sent, nacks, plis = make(rtx=False)
    push(producer, 10, KEY, 0)
    consumer.on_nack([1000], now_ms=10)
    assert sent[-1] == sent[0] and consumer.rtx_sent == 0


def test_same_packet_is_resent_at_most_once_per_rtt():
    producer, consumer, sent, nacks, plis = make()
    consumer.rtt_ms = 50
    push(producer, 10, KEY, 0)
    consumer.on_nack([1000], now_ms=10)
    consumer.on_nack([1000], now_ms=30)
    assert consumer.retransmitted == 1 and consumer.nacks_throttled == 1
    consumer.on_nack([1000], now_ms=70)
    assert consumer.retransmitted == 2


def test_unknown_rtt_resends_at_most_every_100_ms():
    producer, consumer, sent, nacks, plis = make()
    push(producer, 10, KEY, 0)
    consumer.on_nack([1000], now_ms=10)
    consumer.on_nack([1000], now_ms=60)
    consumer.on_nack([1000], now_ms=111)
    assert consumer.retransmitted == 2


def test_resend_budget_caps_retransmissions_to_a_share_of_the_estimate():
    budget = ResendBudget(share=0.25, window_ms=1000)
    # 100 kbit/s estimate: 25 kbit/s = 3125 bytes per second of retransmissions
    allowed = [budget.allow(1000, t, 100_000) for t in (0, 10, 20, 30)]
    assert allowed == [True, True, True, False] and budget.denied == 1
    assert budget.allow(1000, 1005, 100_000)  # the first one left the window
    assert budget.allow(10**6, 1010, None)  # no estimate yet: no cap


def test_consumers_resends_stop_at_the_budget():
    # room for one packet a second
    producer, consumer, sent, nacks, plis = make(
        resend_budget=ResendBudget(share=0.25), estimate_bps=lambda: 8 * 4 * len(KEY + DELTA)
    )
    push(producer, 10, KEY, 0)
    push(producer, 11, DELTA, 1)
    consumer.on_nack([1000, 1001], now_ms=10)
    assert consumer.retransmitted == 1 and consumer.nacks_throttled == 1


def test_absurd_nack_is_capped_and_harmless():
    producer, consumer, sent, nacks, plis = make()
    push(producer, 10, KEY, 0)
    consumer.on_nack(list(range(70000)) + [1000 + 65536], now_ms=10)
    assert consumer.nacks_received == MAX_NACK_SEQS
    assert consumer.nacks_forwarded == 0  # nothing the publisher could be asked for
    assert nacks == []


def test_publisher_is_nacked_for_a_gap_and_its_rtx_is_forwarded_in_place():
    producer, consumer, sent, nacks, plis = make()
    push(producer, 10, KEY, 0)
    push(producer, 11, DELTA, 1)
    push(producer, 13, DELTA, 2)  # 12 lost
    push(producer, 14, DELTA, 20)  # the next arrival after the reorder wait polls
    assert nacks == [(0, [65536 + 12])]
    assert [parse_rtp(p).seq for p in sent] == [1000, 1001, 1003, 1004]
    late = vp8_payload(101, 5, key=False)
    push_rtx(producer, 500, 12, late, 30)
    assert parse_rtp(sent[-1]).seq == 1002  # its own place in the outgoing sequence
    assert sent[-1][12:] == late
    assert consumer.cache.get(1002) == sent[-1]
    assert producer.layers[0].nack.packets_repaired == 1
    # a second copy (or a retransmission of something we had) is not forwarded again
    push_rtx(producer, 501, 12, late, 31)
    push_rtx(producer, 502, 13, late, 31)
    assert len(sent) == 5 and producer.rtx_duplicates == 2


def test_rtx_padding_and_malformed_rtx_are_dropped_and_counted():
    producer, consumer, sent, nacks, plis = make()
    push(producer, 10, KEY, 0)
    padding = struct.pack("!BBHII", 0xA0, 99, 1, 0, 4444) + bytes(254) + b"\xff"
    producer.on_rtx(producer.layers[0], padding, parse_rtp(padding), 1)
    short = write_header(0, 99, 2, 0, 4444) + b"\x01"
    producer.on_rtx(producer.layers[0], short, parse_rtp(short), 1)
    assert producer.rtx_padding == 1 and producer.rtx_malformed == 1
    assert len(sent) == 1


def test_subscriber_nack_for_a_packet_the_sfu_never_got_is_asked_of_the_publisher():
    producer, consumer, sent, nacks, plis = make()
    push(producer, 10, KEY, 0)
    push(producer, 12, DELTA, 1)  # 11 lost upstream
    push(producer, 13, DELTA, 15)
    assert nacks == [(0, [65536 + 11])]
    # Two subscribers' NACKs in the same RTT: the publisher is not asked again.
    consumer.on_nack([1001], now_ms=20)
    consumer.on_nack([1001], now_ms=25)
    assert consumer.nacks_unserved == 2 and consumer.nacks_forwarded == 2
    assert len(nacks) == 1
    # Later (more than half a retry interval after the last NACK): asked again right away.
    consumer.on_nack([1001], now_ms=200)
    assert nacks[-1] == (0, [65536 + 11])
    assert producer.retransmissions_requested == 3


def test_late_keyframe_does_not_start_a_waiting_consumer():
    producer, consumer, sent, nacks, plis = make()
    push(producer, 10, DELTA, 0)
    push(producer, 12, DELTA, 1)
    push(producer, 11, KEY, 2)  # the keyframe start arrives late (the rest was dropped)
    assert sent == []


def test_giving_up_requests_a_keyframe_on_tick():
    producer, consumer, sent, nacks, plis = make()
    push(producer, 10, KEY, 0)
    push(producer, 12, DELTA, 1)
    before = len(plis)
    producer.tick(1_000_000)  # far past the age limit (and the keyframe request interval)
    assert len(plis) == before + 1
    assert producer.layers[0].nack.packets_given_up == 1


def test_old_layer_repair_after_a_switch_is_dropped():
    clock = Clock()
    producer = Producer(
        "p-1",
        "p",
        "video",
        "camera",
        VP8,
        96,
        request_keyframe=lambda p, layer: None,
        rids=["q", "h"],
        send_nack=lambda p, layer, seqs: None,
    )
    producer.rtx_payload_type = 99
    for i, layer in enumerate(producer.layers):
        layer.ssrc = 1111 + i
    sent = []
    consumer = Consumer(
        producer, "s", OutStream(2222, 1000, 5000), 97, send=lambda b: sent.append(b) or True, now_s=clock
    )
    producer.add_consumer(consumer, clock())

    def on(layer, seq, payload, t):
        data = write_header(0, 96, seq, 0, 1111 + layer) + payload
        producer.on_rtp(producer.layers[layer], data, parse_rtp(data), t)

    consumer.target = 0
    on(0, 10, KEY, 0)
    on(0, 12, DELTA, 1)  # 11 lost on layer 0
    consumer.target = 1
    on(1, 500, vp8_payload(300, 9, key=True), 2)
    assert consumer.current == 1
    n = len(sent)
    data = write_header(0, 99, 1, 0, 5555) + struct.pack("!H", 11) + DELTA
    producer.on_rtx(producer.layers[0], data, parse_rtp(data), 30)
    assert len(sent) == n  # layer 0 is no longer forwarded

"""Transport-cc feedback to publishers: recorded arrivals -> RTCP packets -> the same arrivals."""

import random
import time
from itertools import pairwise

from sfu.bwe.twcc import (
    DELTA_UNIT_US,
    MAX_GAP,
    MAX_RECEIVED_PER_FEEDBACK,
    FeedbackGenerator,
    encode_chunks,
    parse_feedback,
    read_transport_seq,
    split_compound,
)

START_US = 5_000_000_000  # a monotonic clock some way into the process


def parse_all(packets: list[bytes]) -> list:
    out = []
    for packet in packets:
        [(pt, fmt, body, raw)] = split_compound(packet)
        assert (pt, fmt) == (205, 15) and raw == packet
        assert len(packet) <= 1200
        out.append(parse_feedback(body))
    return out


def reported(feedbacks) -> dict[int, int | None]:
    """seq -> arrival as the sender would read them (a later report of a packet wins if received)."""
    out: dict[int, int | None] = {}
    for fb in feedbacks:
        for seq, arrival in fb.packets:
            if arrival is not None or seq not in out:
                out[seq] = arrival
    return out


def relative(arrivals: dict[int, int | None]) -> dict[int, int | None]:
    """Arrival times relative to the first received one (the reference time is arbitrary)."""
    first = min(a for a in arrivals.values() if a is not None)
    return {s: (a - first if a is not None else None) for s, a in arrivals.items()}


def test_a_recorded_series_parses_back_to_the_same_arrivals_with_losses():
    gen = FeedbackGenerator(sender_ssrc=0x1234)
    gen.media_ssrc = 0xABCD
    rng = random.Random(7)
    sent = {}
    t = START_US
    for seq in range(100, 400):
        t += rng.choice([0, 250, 500, 1000, 20_000, 70_000])  # bursts, pacing, a long pause
        if rng.random() < 0.1:
            continue  # lost
        sent[seq] = t
        gen.record(seq, t)
    feedbacks = parse_all(gen.build())
    assert all((fb.sender_ssrc, fb.media_ssrc) == (0x1234, 0xABCD) for fb in feedbacks)
    got = reported(feedbacks)
    first, last = min(sent), max(sent)
    assert sorted(got) == list(range(first, last + 1))  # every number, lost ones included
    want = {s: sent.get(s) for s in range(first, last + 1)}
    assert relative(got) == relative(want)
    assert gen.build() == []  # nothing new


def test_sequence_numbers_wrap_around_and_feedback_counts_go_up_and_wrap():
    gen = FeedbackGenerator(1)
    counts = []
    t = START_US
    for seq in list(range(65500, 65536)) + list(range(0, 300)):
        t += 1000
        gen.record(seq, t)
        if seq % 10 == 0:
            counts += [fb.fb_count for fb in parse_all(gen.build())]
    counts += [fb.fb_count for fb in parse_all(gen.build())]
    assert counts == [i & 0xFF for i in range(len(counts))]
    for _ in range(300):  # the 8-bit count wraps
        gen.record(300 + _, t + _)
        counts += [fb.fb_count for fb in parse_all(gen.build())]
    assert counts[-1] == (len(counts) - 1) & 0xFF and 0 in counts[256:]


def test_wrap_inside_one_report_keeps_the_order():
    gen = FeedbackGenerator(1)
    for i, seq in enumerate([65533, 65534, 65535, 0, 1, 2]):
        gen.record(seq, START_US + i * 1000)
    [fb] = parse_all(gen.build())
    assert fb.base_seq == 65533
    assert [s for s, _ in fb.packets] == [65533, 65534, 65535, 0, 1, 2]
    arrivals = [a for _, a in fb.packets]
    assert [b - a for a, b in pairwise(arrivals)] == [1000] * 5


def test_reordered_packets_are_reported_at_their_own_number():
    gen = FeedbackGenerator(1)
    order = [10, 11, 13, 12, 15, 14, 16]
    for i, seq in enumerate(order):
        gen.record(seq, START_US + i * 500)
    [fb] = parse_all(gen.build())
    got = dict(fb.packets)
    assert list(got) == list(range(10, 17))
    assert got[12] - got[13] == 500 and got[14] - got[15] == 500  # negative deltas survive


def test_a_late_packet_already_reported_lost_is_reported_again_as_received():
    gen = FeedbackGenerator(1)
    for seq in (1, 2, 4, 5):
        gen.record(seq, START_US + seq * 1000)
    [first] = parse_all(gen.build())
    assert dict(first.packets)[3] is None
    gen.record(3, START_US + 9000)  # arrives after the report
    gen.record(6, START_US + 9500)
    [second] = parse_all(gen.build())
    assert second.base_seq == 3
    got = dict(second.packets)
    assert list(got) == [3, 4, 5, 6]
    assert got[4] - got[3] == 4000 - 9000  # 4 and 5 again, with their first arrival times
    assert got[6] - got[3] == 500


def test_duplicates_count_once_and_very_late_packets_are_dropped():
    gen = FeedbackGenerator(1)
    gen.record(100, START_US)
    gen.record(100, START_US + 5000)
    gen.record(101, START_US + 1000)
    [fb] = parse_all(gen.build())
    assert fb.packets == [(100, fb.packets[0][1]), (101, fb.packets[0][1] + 1000)]
    gen.record(3000, START_US + 2000)
    gen.build()
    gen.record(200, START_US + 3000)  # 2800 behind: too late to matter to the sender
    assert gen.build() == [] and gen.late_dropped == 1


def test_a_long_pause_is_split_where_the_delta_would_not_fit():
    gen = FeedbackGenerator(1)
    times = {1: START_US, 2: START_US + 1000, 3: START_US + 20_000_000, 4: START_US + 20_001_000}
    for seq, t in times.items():
        gen.record(seq, t)
    feedbacks = parse_all(gen.build())
    assert [fb.base_seq for fb in feedbacks] == [1, 3]
    assert [fb.fb_count for fb in feedbacks] == [0, 1]
    got = reported(feedbacks)
    assert got[2] - got[1] == 1000 and got[4] - got[3] == 1000
    assert abs((got[3] - got[1]) - 20_000_000) < 64_000  # from the reference times


def test_many_packets_and_a_long_gap_of_losses_split_into_packets_that_fit():
    gen = FeedbackGenerator(1)
    sent = {}
    t = START_US
    for seq in list(range(0, 450)) + list(range(450 + MAX_GAP - 1, 460 + MAX_GAP - 1)):
        t += 250
        sent[seq] = t
        gen.record(seq & 0xFFFF, t)
    packets = gen.build()
    feedbacks = parse_all(packets)
    assert len(feedbacks) == 3
    assert all(sum(a is not None for _, a in fb.packets) <= MAX_RECEIVED_PER_FEEDBACK for fb in feedbacks)
    got = reported(feedbacks)
    assert len(got) == 460 + MAX_GAP - 1  # the gap of MAX_GAP - 1 lost numbers is reported ...
    assert len(packets[-1]) < 100  # ... in a few run-length chunks
    assert relative({s: a for s, a in got.items() if a is not None}) == relative(sent)


def test_a_jump_beyond_the_gap_limit_starts_a_new_window_without_reporting_the_gap():
    gen = FeedbackGenerator(1)
    t = START_US
    seqs = list(range(0, 10)) + list(range(20_000, 20_010))
    for seq in seqs:
        t += 250
        gen.record(seq, t)
    feedbacks = parse_all(gen.build())
    got = reported(feedbacks)
    assert sorted(got) == seqs and all(a is not None for a in got.values())
    assert [fb.base_seq for fb in feedbacks] == [0, 20_000]


def statuses(packets: list[bytes]) -> int:
    """Packet status count (bytes 14-15) summed over feedback packets."""
    return sum((packet[14] << 8) | packet[15] for packet in packets)


def test_sequence_numbers_that_jump_by_half_the_range_cost_one_status_each():
    gen = FeedbackGenerator(1)
    t = START_US
    seq = 0
    produced = []
    cpu = time.process_time()
    for i in range(1000):
        seq = (seq + 32767) & 0xFFFF
        t += 1000
        gen.record(seq, t)
        if i % 50 == 49:  # the publish peer builds feedback after a burst of 50
            produced += gen.build()
    cpu = time.process_time() - cpu
    assert statuses(produced) == 1000  # every packet reported once, no skipped number
    assert len(produced) == 1000
    assert cpu < 0.5, f"{cpu:.2f} s of CPU for 1000 packets"


def test_a_gap_just_under_the_limit_on_every_packet_stays_bounded():
    gen = FeedbackGenerator(1)
    t = START_US
    seq = 0
    total = 0
    for i in range(1000):
        seq = (seq + MAX_GAP) & 0xFFFF
        t += 1000
        gen.record(seq, t)
        if i % 50 == 49:
            total += statuses(gen.build())
    assert total <= 1000 * MAX_GAP


def test_status_chunks_use_run_length_one_bit_and_two_bit_vectors():
    assert encode_chunks([1] * 20) == (0x2000 | 20).to_bytes(2, "big")
    assert encode_chunks([1, 0] * 7) == (0x8000 | 0b10101010101010).to_bytes(2, "big")
    assert encode_chunks([2, 1, 0]) == (0xC000 | (2 << 12) | (1 << 10)).to_bytes(2, "big")
    assert encode_chunks([0] * 9000) == ((0x1FFF).to_bytes(2, "big") + (9000 - 0x1FFF).to_bytes(2, "big"))


def test_arrival_quantisation_does_not_drift():
    gen = FeedbackGenerator(1)
    t = START_US
    for seq in range(150):
        t += 333  # not a multiple of 250 µs
        gen.record(seq, t)
    [fb] = parse_all(gen.build())
    last = fb.packets[-1][1] - fb.packets[0][1]
    assert abs(last - 149 * 333) <= DELTA_UNIT_US


def test_transport_sequence_number_is_read_from_one_and_two_byte_extensions():
    one_byte = bytes(12) + bytes.fromhex("bede0002") + bytes([0x10, 0xAA, 0x51, 0x12, 0x34, 0, 0, 0]) + b"payload"
    assert read_transport_seq(one_byte, 12, 5) == 0x1234
    assert read_transport_seq(one_byte, 12, 3) == -1
    assert read_transport_seq(one_byte, -1, 5) == -1
    two_byte = bytes(12) + bytes.fromhex("10000002") + bytes([7, 1, 0xEE, 5, 2, 0xBE, 0xEF, 0]) + b"x"
    assert read_transport_seq(two_byte, 12, 5) == 0xBEEF
    truncated = bytes(12) + bytes.fromhex("bede0001") + bytes([0x51, 0x12])
    assert read_transport_seq(truncated, 12, 5) == -1

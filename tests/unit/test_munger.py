from sfu.media.munger import RtpMunger
from sfu.media.seq import SeqUnwrapper, seq_diff, ts_diff


def feed(munger: RtpMunger, unwrapper: SeqUnwrapper, seq: int, ts: int):
    return munger.map(unwrapper.unwrap(seq), ts)


def test_seq_diff_across_wrap():
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(100, 90) == 10
    assert ts_diff(5, 0xFFFFFFFF) == 6


def test_unwrapper_is_monotonic_across_wraparound():
    u = SeqUnwrapper()
    exts = [u.unwrap(s) for s in (65533, 65534, 65535, 0, 1, 2)]
    assert exts == sorted(exts)
    assert exts[-1] - exts[0] == 5


def test_unwrapper_handles_reordering_before_first_packet():
    u = SeqUnwrapper()
    first = u.unwrap(0)
    older = u.unwrap(65535)  # arrives late, belongs before the first packet
    assert older == first - 1


def test_output_continues_from_initial_state():
    m, u = RtpMunger(initial_seq=1000, initial_ts=5000), SeqUnwrapper()
    m.start(u.unwrap(40000), 123456, ts_gap=1)
    assert m.map(u.highest, 123456) == (1000, 5000)
    assert feed(m, u, 40001, 123456 + 3000) == (1001, 8000)


def test_rewriting_across_input_wraparound():
    m, u = RtpMunger(initial_seq=10, initial_ts=0), SeqUnwrapper()
    m.start(u.unwrap(65534), 0xFFFFFF00, ts_gap=1)
    out = [feed(m, u, s, (0xFFFFFF00 + i * 3000) & 0xFFFFFFFF) for i, s in enumerate((65534, 65535, 0, 1))]
    assert [o[0] for o in out] == [10, 11, 12, 13]
    assert [o[1] for o in out] == [0, 3000, 6000, 9000]


def test_rewriting_across_output_wraparound():
    m, u = RtpMunger(initial_seq=65535, initial_ts=0xFFFFF000), SeqUnwrapper()
    m.start(u.unwrap(100), 0, ts_gap=1)
    seqs = [feed(m, u, s, s * 10)[0] for s in (100, 101, 102)]
    assert seqs == [65535, 0, 1]
    assert feed(m, u, 103, 4096 * 10 + 30)[1] < 0x1000_0000  # timestamp wrapped too


def test_gap_is_preserved_so_subscriber_can_nack():
    m, u = RtpMunger(initial_seq=0, initial_ts=0), SeqUnwrapper()
    m.start(u.unwrap(500), 0, 1)
    m.map(u.highest, 0)
    assert feed(m, u, 503, 0)[0] == 3  # 501 and 502 lost: a gap of two in the output too


def test_reordered_packet_keeps_its_place():
    m, u = RtpMunger(initial_seq=0, initial_ts=0), SeqUnwrapper()
    m.start(u.unwrap(10), 0, 1)
    m.map(u.highest, 0)
    assert feed(m, u, 12, 0)[0] == 2
    assert feed(m, u, 11, 0)[0] == 1  # late but after the start point: forwarded in place
    assert m.last_seq == 2  # the highest stays the highest


def test_packets_before_the_start_point_are_dropped():
    m, u = RtpMunger(initial_seq=0, initial_ts=0), SeqUnwrapper()
    m.start(u.unwrap(10), 0, 1)
    m.map(u.highest, 0)
    assert feed(m, u, 9, 0) is None


def test_restart_continues_without_gap_and_keeps_timestamps_increasing():
    m, u = RtpMunger(initial_seq=0, initial_ts=0), SeqUnwrapper()
    m.start(u.unwrap(10), 90000, 1)
    for s in range(10, 20):
        m.map(u.unwrap(s), 90000 + (s - 10) * 3000)
    last_seq, last_ts = m.last_seq, m.last_ts
    # A new source (or a resume after mute) with unrelated numbering.
    u2 = SeqUnwrapper()
    m.start(u2.unwrap(50000), 7, ts_gap=3000)
    seq, ts = m.map(u2.highest, 7)
    assert seq == last_seq + 1
    assert ts == last_ts + 3000


def test_skip_closes_the_hole_left_by_padding():
    m, u = RtpMunger(initial_seq=0, initial_ts=0), SeqUnwrapper()
    m.start(u.unwrap(10), 0, 1)
    m.map(u.highest, 0)
    m.skip(u.unwrap(11))  # padding-only packet, not forwarded
    assert feed(m, u, 12, 0)[0] == 1

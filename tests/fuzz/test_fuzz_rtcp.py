"""RTCP (media.rtcp), transport-cc (bwe.twcc) and NACK (media.nack): arbitrary and mutated
packets parse or raise MalformedPacket, nothing else; a parsed packet packs to what parses
to the same packet, and to the same bytes where the encoding is unique; the feedback
generator's work is bounded whatever sequence numbers arrive."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from sfu.bwe.twcc import MAX_GAP, REORDER_WINDOW, FeedbackGenerator
from sfu.media.nack import MAX_MISSING, NackGenerator
from sfu.media.rtcp import (
    MalformedPacket,
    RtcpFir,
    RtcpNack,
    RtcpPli,
    RtcpReceiverReport,
    RtcpRemb,
    RtcpSenderReport,
    RtcpTransportCc,
    RtcpUnknown,
    build_feedback,
    pack_nack,
    parse_compound,
    parse_feedback,
    split_compound,
)
from sfu.media.rtp import is_rtcp

from .corpus import FUZZ, mutations, seeds

RTCP_SEEDS = [s for s in seeds() if is_rtcp(s)]
# Packets that pack back to their own bytes. Not a PLI: bytes after its two SSRCs are ignored
# (libwebrtc reads it so too); nor NACK, FIR, REMB, whose fields have several encodings.
BYTE_EXACT = (RtcpSenderReport, RtcpReceiverReport, RtcpTransportCc, RtcpUnknown)


def check_compound(data: bytes) -> int:
    """Parse a compound packet as the receive path does; the packets it held (0: malformed)."""
    try:
        packets = parse_compound(data)
    except MalformedPacket:
        return 0
    padded = any(raw[0] & 0x20 for _, _, _, raw in split_compound(data))
    for packet in packets:
        [again] = parse_compound(bytes(packet))
        if isinstance(packet, RtcpNack):  # items may list numbers in any order; packed ascending
            assert isinstance(again, RtcpNack) and set(again.lost) == set(packet.lost)
        elif isinstance(packet, (RtcpSenderReport, RtcpReceiverReport)) and padded:
            # the extension is what is left after the padding; packed again it is word-aligned
            assert isinstance(again, type(packet)) and again.reports == packet.reports
            assert again.extension[: len(packet.extension)] == packet.extension
        elif isinstance(packet, RtcpTransportCc):
            assert isinstance(again, RtcpTransportCc) and again.feedback == packet.feedback
        else:
            assert again == packet
    if not padded and all(isinstance(p, BYTE_EXACT) for p in packets):
        assert b"".join(bytes(p) for p in packets) == data
    return len(packets)


@FUZZ
@given(st.binary(max_size=100))
def test_arbitrary_bytes_parse_or_raise_malformed_packet(data):
    check_compound(data)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(0, 31), st.sampled_from([200, 201, 202, 203, 205, 206]), st.binary(max_size=60).map(bytes)
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, 8),
)
def test_well_framed_packets_of_every_type_parse_or_raise_malformed_packet(parts, pad):
    data = b""
    for count, pt, body in parts:
        if pad and pt in (200, 201):
            body += bytes(-(len(body) + pad) % 4 + pad - 1) + bytes((-(len(body) + pad) % 4 + pad,))
            data += struct.pack("!BBH", 0xA0 | count, pt, len(body) // 4) + body
            continue
        body += bytes(-len(body) % 4)
        data += struct.pack("!BBH", 0x80 | count, pt, len(body) // 4) + body
    check_compound(data)


def test_mutated_chromium_and_server_rtcp_parse_or_raise_malformed_packet():
    parsed = sum(check_compound(data) > 0 for data in mutations(RTCP_SEEDS, salt=2))
    assert parsed > 0


@FUZZ
@given(st.binary(max_size=80))
def test_transport_cc_bodies_parse_or_raise_malformed_packet(body):
    try:
        fb = parse_feedback(body)
    except MalformedPacket:
        return
    assert len(fb.packets) == struct.unpack_from("!H", body, 10)[0]


def test_mutated_transport_cc_bodies_parse_or_raise_malformed_packet():
    bodies = [raw[4:] for s in RTCP_SEEDS for pt, fmt, _, raw in split_compound(s) if (pt, fmt) == (205, 15)]
    parsed = 0
    for body in mutations(bodies, salt=3):
        try:
            fb = parse_feedback(body)
        except MalformedPacket:
            continue
        parsed += 1
        assert len(fb.packets) == struct.unpack_from("!H", body, 10)[0]
    assert parsed > 0


arrival_gaps = st.lists(st.one_of(st.none(), st.integers(0, 8_000_000)), min_size=1, max_size=300)


@FUZZ
@given(st.integers(0, 0xFFFF), st.integers(0, 255), arrival_gaps)
def test_transport_cc_feedback_parses_back_to_its_arrivals(base, fb_count, gaps):
    arrivals: list[int | None] = []
    t = 5_000_000_000
    for gap in gaps:
        if gap is None:
            arrivals.append(None)
        else:
            t += gap
            arrivals.append(t)
    [(_, _, body, _)] = split_compound(build_feedback(1, 2, base, fb_count, arrivals))
    fb = parse_feedback(body)
    assert [s for s, _ in fb.packets] == [(base + i) & 0xFFFF for i in range(len(arrivals))]
    assert [a is None for _, a in fb.packets] == [a is None for a in arrivals]
    got = [a for _, a in fb.packets if a is not None]
    want = [a for a in arrivals if a is not None]
    if want:
        # Each delta saturates at about 8 s; below that the quantisation never drifts.
        deltas_fit = all(b - a < 8_000_000 for a, b in zip(want, want[1:], strict=False))
        if deltas_fit:
            assert all(abs((g - got[0]) - (w - want[0])) <= 250 for g, w in zip(got, want, strict=True))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 100_000)), max_size=200), st.integers(1, 60))
def test_the_feedback_generator_reports_any_sequence_numbers_with_bounded_work(packets, burst):
    gen = FeedbackGenerator(1)
    t = 1_000_000
    statuses = 0
    for i, (seq, gap) in enumerate(packets):
        t += gap
        gen.record(seq, t)
        if i % burst == burst - 1:
            for packet in gen.build():
                [(_, _, body, _)] = split_compound(packet)
                statuses += len(parse_feedback(body).packets)
    for packet in gen.build():
        [(_, _, body, _)] = split_compound(packet)
        statuses += len(parse_feedback(body).packets)
    assert statuses <= len(packets) * (REORDER_WINDOW + MAX_GAP + 1)


@FUZZ
@given(st.lists(st.integers(0, 40), min_size=1, max_size=120), st.integers(0, 0x20000))
def test_nack_lists_pack_and_parse_back(steps, start):
    seqs = []
    seq = start
    for step in steps:
        seq += step + 1
        seqs.append(seq)
    [nack] = parse_compound(pack_nack(7, 8, seqs))
    assert isinstance(nack, RtcpNack) and (nack.sender_ssrc, nack.media_ssrc) == (7, 8)
    assert nack.lost == [s & 0xFFFF for s in seqs]


@FUZZ
@given(st.integers(0, 1 << 64), st.lists(st.integers(0, 0xFFFFFFFF), max_size=300))
def test_remb_packs_and_parses_back(bitrate, ssrcs):
    [remb] = parse_compound(bytes(RtcpRemb(3, bitrate, ssrcs)))
    assert isinstance(remb, RtcpRemb) and remb.ssrcs == ssrcs[:255]
    assert remb.bitrate_bps <= bitrate and (bitrate - remb.bitrate_bps) <= bitrate >> 17


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 255)), max_size=20))
def test_fir_and_pli_pack_and_parse_back(entries):
    assert parse_compound(bytes(RtcpFir(1, 0, entries))) == [RtcpFir(1, 0, entries)]
    assert parse_compound(bytes(RtcpPli(1, 2)) * 2) == [RtcpPli(1, 2)] * 2


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(["packet", "poll", "request"]), st.integers(0, 1 << 20), st.integers(0, 500)),
        max_size=200,
    )
)
def test_the_nack_generator_stays_bounded_whatever_arrives(events):
    gen = NackGenerator()
    now = 0.0
    for kind, seq, dt in events:
        now += dt
        if kind == "packet":
            gen.on_packet(seq, now)
        elif kind == "poll":
            assert len(gen.poll(now)) <= MAX_MISSING
        else:
            gen.request(seq, now)
        assert len(gen.missing) <= MAX_MISSING

"""RTP parsing and writing (media.rtp, media.rtx): arbitrary and mutated packets give a view
within the packet or MalformedPacket, nothing else; what we write parses back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sfu.media.rtp import (
    MalformedPacket,
    RtpView,
    find_extension,
    header_extensions,
    is_rtcp,
    one_byte_extensions,
    padding_packet,
    parse_rtp,
    rewrite,
    with_transport_seq,
    write_header,
    write_header_flags,
)
from sfu.media.rtx import unwrap_rtx, wrap_rtx
from sfu.speaker import read_audio_level

from .corpus import FUZZ, mutations, seeds

RTP_SEEDS = [s for s in seeds("chromium_") if not is_rtcp(s)]


def check_packet(data: bytes) -> RtpView | None:
    """Everything the receive path reads from one RTP packet; only MalformedPacket escapes."""
    try:
        view = parse_rtp(data)
    except MalformedPacket:
        return None
    assert 12 <= view.payload_start <= view.payload_end <= len(data)
    assert 0 <= view.payload_type < 128 and view.marker in (0, 1)
    elements = header_extensions(data, view.ext_start)
    for ext_id in range(16):
        pos, size = find_extension(data, view.ext_start, ext_id)
        if pos >= 0:
            assert view.ext_start < pos and pos + size <= len(data)
            assert ext_id in elements  # the one walker finds what it lists
        read_audio_level(data, view.ext_start, ext_id)
    for ext_id, value in elements.items():
        assert 0 < ext_id < 256 and len(value) <= 255
    original = unwrap_rtx(data, view, 96, 1234)
    if original is not None:
        assert original.payload_start == view.payload_start + 2 and original.seq < 65536
    return view


@FUZZ
@given(st.binary(max_size=120))
def test_arbitrary_bytes_parse_or_raise_malformed_packet(data):
    check_packet(data)


@FUZZ
@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(min_size=10, max_size=10),
    st.binary(max_size=80),
)
def test_headers_with_any_first_bytes_parse_or_raise_malformed_packet(b0, b1, rest, tail):
    check_packet(bytes((b0 | 0x80 if b0 & 1 else b0, b1)) + rest + tail)


def test_mutated_chromium_packets_parse_or_raise_malformed_packet():
    parsed = 0
    for data in mutations(RTP_SEEDS, salt=1):
        parsed += check_packet(data) is not None
    assert parsed > 0


elements_strategy = st.lists(st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=16)), max_size=6)


@FUZZ
@given(
    st.integers(0, 1),
    st.integers(0, 127),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    elements_strategy,
    st.binary(max_size=64),
    st.integers(0, 255),
)
def test_what_we_write_parses_back(marker, pt, seq, ts, ssrc, elements, payload, pad):
    ext = one_byte_extensions(elements) if elements else b""
    padding = bytes(pad - 1) + bytes((pad,)) if pad else b""
    header = write_header_flags(marker, pt, seq, ts, ssrc, extension=bool(ext), padding=bool(pad))
    data = header + ext + payload + padding
    view = parse_rtp(data)
    assert (view.marker, view.payload_type, view.seq, view.timestamp, view.ssrc) == (marker, pt, seq, ts, ssrc)
    assert data[view.payload_start : view.payload_end] == payload
    assert header_extensions(data, view.ext_start) == dict(elements)
    for ext_id, _ in elements:
        pos, size = find_extension(data, view.ext_start, ext_id)
        first = next(v for i, v in elements if i == ext_id)
        assert data[pos : pos + size] == first
    moved = rewrite(data, (seq + 1) & 0xFFFF, ts ^ 1, ssrc ^ 1)
    assert parse_rtp(moved).seq == (seq + 1) & 0xFFFF and moved[12:] == data[12:]


@FUZZ
@given(st.integers(0, 127), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(13, 267))
def test_padding_packets_are_all_padding(pt, seq, ts, size):
    data = padding_packet(pt, seq, ts, 99, size)
    view = parse_rtp(data)
    assert len(data) == size and view.payload_start == view.payload_end == 12
    assert unwrap_rtx(data, view, 96, 1) is None


@FUZZ
@given(st.integers(0, 1), st.integers(0, 127), st.integers(0, 0xFFFF), st.binary(max_size=64), st.integers(1, 14))
def test_rtx_wraps_and_unwraps_and_the_transport_seq_stamp_reads_back(marker, pt, seq, payload, ext_id):
    packet = write_header(marker, pt, seq, 1234, 5678) + payload
    rtx = wrap_rtx(packet, 97, seq ^ 0x5555, 4321)
    view = parse_rtp(rtx)
    assert (view.payload_type, view.ssrc, view.seq, view.marker) == (97, 4321, seq ^ 0x5555, marker)
    original = unwrap_rtx(rtx, view, pt, 5678)
    assert original is not None and (original.seq, original.timestamp) == (seq, 1234)
    assert rtx[original.payload_start : original.payload_end] == payload
    stamped = with_transport_seq(rtx, ext_id, seq)
    stamped_view = parse_rtp(stamped)
    pos, size = find_extension(stamped, stamped_view.ext_start, ext_id)
    assert size == 2 and int.from_bytes(stamped[pos : pos + 2], "big") == seq
    assert stamped[stamped_view.payload_start : stamped_view.payload_end] == rtx[12:]


@FUZZ
@given(st.binary(max_size=40))
def test_wrap_rtx_of_anything_is_bytes_or_malformed_packet(data):
    try:
        wrapped = wrap_rtx(data, 97, 1, 2)
    except MalformedPacket:
        assert len(data) < 12
        return
    assert len(wrapped) == len(data) + 2

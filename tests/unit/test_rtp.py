import struct

import pytest

from sfu.media.keyframe import h264_keyframe_size, h264_keyframe_start, h264_sps_size, vp8_keyframe_start
from sfu.media.rtp import MalformedPacket, header_extensions, is_rtcp, parse_rtp, rewrite, write_header
from sfu.media.stats import ReceiveStats


def rtp(seq=1, ts=2, ssrc=3, pt=96, marker=0, payload=b"abc", ext=None, padding=0, csrcs=0):
    b0 = 0x80 | csrcs
    body = b""
    if ext is not None:
        b0 |= 0x10
        body += ext
    body += b"\0\0\0\1" * csrcs
    data = struct.pack("!BBHII", b0 | (0x20 if padding else 0), (marker << 7) | pt, seq, ts, ssrc)
    data = data[:12] + b"\0\0\0\1" * csrcs + (ext or b"") + payload
    if padding:
        data += b"\0" * (padding - 1) + bytes([padding])
    return data


def one_byte_ext(elements):
    body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in elements)
    body += b"\0" * (-len(body) % 4)
    return struct.pack("!HH", 0xBEDE, len(body) // 4) + body


def test_parses_header_fields_and_payload():
    data = rtp(seq=65535, ts=0xFFFFFFFF, ssrc=42, pt=111, marker=1, payload=b"hello")
    v = parse_rtp(data)
    assert (v.seq, v.timestamp, v.ssrc, v.payload_type, v.marker) == (65535, 0xFFFFFFFF, 42, 111, 1)
    assert data[v.payload_start : v.payload_end] == b"hello"


def test_skips_csrcs_extensions_and_padding():
    ext = one_byte_ext([(1, b"0"), (3, b"\x01\x02\x03")])
    data = rtp(payload=b"xyz", ext=ext, padding=4, csrcs=2)
    v = parse_rtp(data)
    assert data[v.payload_start : v.payload_end] == b"xyz"
    assert header_extensions(data, v.ext_start) == {1: b"0", 3: b"\x01\x02\x03"}


def test_two_byte_header_extensions():
    body = bytes([5, 2]) + b"hi" + bytes([0, 0])
    ext = struct.pack("!HH", 0x1000, 1) + body
    data = rtp(ext=ext)
    assert header_extensions(data, parse_rtp(data).ext_start) == {5: b"hi"}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x60\x00",
        bytes([0x40]) + b"\0" * 11,  # version 1
        rtp(ext=b"\xbe\xde\x00\x09"),  # extension longer than packet
        rtp(payload=b"", padding=0)[:12][:0] + struct.pack("!BBHII", 0xA0, 96, 1, 2, 3) + b"\x50",  # padding > packet
        bytes([0x8F]) + b"\0" * 11,  # 15 CSRCs announced, none present
    ],
)
def test_malformed_packets_raise(data):
    with pytest.raises(MalformedPacket):
        parse_rtp(data)


def test_rtcp_demultiplexing():
    assert is_rtcp(bytes([0x80, 200]))
    assert is_rtcp(bytes([0x81, 206]))
    assert not is_rtcp(bytes([0x80, 96]))
    assert not is_rtcp(bytes([0x80, 0xE0]))  # marker + PT 96


def test_rewrite_and_write_header():
    data = rtp(seq=1, ts=2, ssrc=3, payload=b"p")
    out = parse_rtp(rewrite(data, 9, 8, 7))
    assert (out.seq, out.timestamp, out.ssrc) == (9, 8, 7)
    hdr = write_header(1, 100, 65535, 0xFFFFFFFF, 0xDEADBEEF)
    v = parse_rtp(hdr + b"x")
    assert (v.marker, v.payload_type, v.seq, v.timestamp, v.ssrc) == (1, 100, 65535, 0xFFFFFFFF, 0xDEADBEEF)


def test_vp8_keyframe_detection():
    # descriptor: X=1 S=1 PID=0; I=1 with 15-bit picture id; then VP8 header with P=0
    key = bytes([0x90, 0x80, 0x81, 0x23, 0x10])
    delta = bytes([0x90, 0x80, 0x81, 0x23, 0x11])
    continuation = bytes([0x80, 0x80, 0x81, 0x23, 0x10])  # S=0
    short = bytes([0x10, 0x00])
    assert vp8_keyframe_start(key)
    assert not vp8_keyframe_start(delta)
    assert not vp8_keyframe_start(continuation)
    assert vp8_keyframe_start(short)
    assert not vp8_keyframe_start(b"")
    assert not vp8_keyframe_start(bytes([0x90, 0x80]))  # truncated


def test_h264_keyframe_detection():
    assert h264_keyframe_start(bytes([0x65, 0x88]))  # IDR slice
    assert h264_keyframe_start(bytes([0x67, 0x42]))  # SPS
    assert not h264_keyframe_start(bytes([0x41, 0x9A]))  # non-IDR
    stap = bytes([0x18]) + struct.pack("!H", 2) + bytes([0x67, 0x42]) + struct.pack("!H", 2) + bytes([0x68, 0xCE])
    assert h264_keyframe_start(stap)
    assert h264_keyframe_start(bytes([0x7C, 0x85]))  # FU-A start of IDR
    assert not h264_keyframe_start(bytes([0x7C, 0x05]))  # FU-A continuation
    assert not h264_keyframe_start(bytes([0x7C]))


def test_receive_stats_count_loss_and_fraction():
    s = ReceiveStats(90000)
    for seq in (65530, 65531, 65533, 0, 1):  # 65532, 65534, 65535 lost
        s.update(seq, 0, 0, 100)
    assert s.cumulative_lost == 3
    assert s.fraction_lost() == (3 << 8) // 8
    assert s.fraction_lost() == 0  # nothing new since the last report
    assert s.highest_ext_seq & 0xFFFF == 1


def test_receive_stats_jitter_grows_with_irregular_arrival():
    regular, irregular = ReceiveStats(90000), ReceiveStats(90000)
    for i in range(50):
        regular.update(i, i * 2970, i * 33, 100)
        irregular.update(i, i * 2970, i * 33 + (20 if i % 2 else 0), 100)
    assert regular.jitter <= 3
    assert irregular.jitter > 500


# SPS NAL units written by libx264 (via PyAV) for these sizes and profiles; 360, 180 and 1080
# are not multiples of 16, so those need the frame cropping fields.
RECORDED_SPS = [
    ((1280, 720), "6742c01fd9005005ba10000003001000000303c8f183248000"),  # baseline
    ((640, 360), "6764001eacb201405ff2c2000003000200000300791e2c5c9000"),  # high
    ((320, 180), "674d400dd901419f9e10000003001000000303c8f142a48000"),  # main
    ((1920, 1080), "67640028acb200f0044fcb08000003000800000301e478c1924000"),  # high
]


@pytest.mark.parametrize("size,sps_hex", RECORDED_SPS)
def test_h264_picture_size_from_the_sps(size, sps_hex):
    sps = bytes.fromhex(sps_hex)
    assert h264_sps_size(sps) == size
    assert h264_keyframe_size(sps) == size  # a single-NAL packet
    pps = bytes.fromhex("68ce3c80")
    stap_a = bytes([0x78]) + len(sps).to_bytes(2, "big") + sps + len(pps).to_bytes(2, "big") + pps
    assert h264_keyframe_size(stap_a) == size  # SPS and PPS aggregated, as Chrome sends them


@pytest.mark.parametrize(
    "payload", [b"", b"\x67", bytes.fromhex("6742c01f"), bytes.fromhex("65888400"), b"\x78\x00\x40\x67\x42"]
)
def test_h264_size_of_truncated_or_sps_less_payloads_is_none(payload):
    assert h264_keyframe_size(payload) is None

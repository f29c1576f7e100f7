"""RTCP packets (media.rtcp) and RTP packets (media.rtp) captured from a real Chromium call:
parsed, the fields as Chromium and the server wrote them, and packed back to the same bytes.

The fixtures (tests/unit/fixtures/*.bin) are written by scripts/capture_packets.py."""

import struct
import time
from pathlib import Path

import pytest

from sfu.media.keyframe import vp8_keyframe_start
from sfu.media.rtcp import (
    MAX_FEEDBACK_STATUSES,
    MalformedPacket,
    ReceptionReport,
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
    split_compound,
)
from sfu.media.rtp import find_extension, header_extensions, is_rtcp, parse_rtp
from sfu.media.rtx import unwrap_rtx, wrap_rtx
from sfu.media.vp8 import keyframe_size, parse_descriptor

FIXTURES = Path(__file__).parent / "fixtures"
RTCP_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.bin") if is_rtcp(p.read_bytes()))
# Extension ids in Chromium's offer (the server's answer keeps them).
AUDIO_LEVEL_ID, ABS_SEND_TIME_ID, TRANSPORT_CC_ID, MID_ID, RID_ID, REPAIRED_RID_ID = 1, 2, 3, 4, 10, 11


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_there_are_fixtures_of_every_kind():
    assert {p.stem for p in FIXTURES.glob("*.bin")} >= {
        "chromium_vp8_keyframe",
        "chromium_opus_audio_level",
        "chromium_rtx",
        "chromium_rtx_padding",
        "chromium_sr",
        "chromium_rr",
        "chromium_remb",
        "chromium_transport_cc",
        "chromium_nack",
        "chromium_pli",
        "server_rr_remb",
        "server_nack",
        "server_pli",
    }


@pytest.mark.parametrize("name", RTCP_FIXTURES)
def test_every_captured_rtcp_packet_parses_and_packs_back_to_the_same_bytes(name):
    data = fixture(name)
    packets = parse_compound(data)
    assert b"".join(bytes(p) for p in packets) == data
    assert [raw for _, _, _, raw in split_compound(data)] == [bytes(p) for p in packets]


def test_chromium_sender_report_and_its_sdes():
    sr, sdes = parse_compound(fixture("chromium_sr.bin"))
    assert isinstance(sr, RtcpSenderReport) and isinstance(sdes, RtcpUnknown)
    assert sr.reports == [] and sr.extension == b""
    assert sr.packet_count == 49 and sr.octet_count == 21968
    assert sr.ntp_timestamp >> 32 > 3_900_000_000  # seconds since 1900: this century
    assert (sdes.packet_type, sdes.fmt) == (202, 1)  # one SDES chunk (the CNAME)


def test_chromium_receiver_reports():
    [rr] = parse_compound(fixture("chromium_rr.bin"))
    assert isinstance(rr, RtcpReceiverReport) and rr.ssrc == 1  # Chromium's receive-only SSRC
    [report] = rr.reports
    assert report.highest_sequence == 23245 and report.jitter == 561
    assert report.lsr and report.dlsr == 18223  # about 0.28 s since our sender report

    rr, remb = parse_compound(fixture("chromium_remb.bin"))
    assert isinstance(rr, RtcpReceiverReport) and isinstance(remb, RtcpRemb)
    assert [r.fraction_lost for r in rr.reports] == [0, 5] and rr.reports[1].packets_lost == 5
    assert remb.bitrate_bps == 389968 and sorted(remb.ssrcs) == sorted(r.ssrc for r in rr.reports)


def test_chromium_feedback_nack_pli_and_transport_cc():
    rr, nack = parse_compound(fixture("chromium_nack.bin"))
    assert isinstance(nack, RtcpNack) and nack.lost == [7679]
    assert nack.media_ssrc == rr.reports[0].ssrc and rr.reports[0].highest_sequence == 7678

    rr, pli = parse_compound(fixture("chromium_pli.bin"))
    assert isinstance(pli, RtcpPli) and pli.media_ssrc in {r.ssrc for r in rr.reports}

    [twcc] = parse_compound(fixture("chromium_transport_cc.bin"))
    assert isinstance(twcc, RtcpTransportCc)
    fb = twcc.feedback
    assert fb.base_seq == 2 and [s for s, _ in fb.packets] == list(range(2, 9))
    arrivals = [a for _, a in fb.packets]
    assert all(a is not None for a in arrivals) and arrivals == sorted(arrivals)  # type: ignore[type-var]


def test_server_packets_are_what_our_packers_write():
    rr, remb = parse_compound(fixture("server_rr_remb.bin"))
    assert isinstance(remb, RtcpRemb) and remb.bitrate_bps == 2_500_000
    assert bytes(RtcpReceiverReport(rr.ssrc, rr.reports)) + bytes(
        RtcpRemb(remb.sender_ssrc, 2_500_000, remb.ssrcs)
    ) == (fixture("server_rr_remb.bin"))
    [nack] = parse_compound(fixture("server_nack.bin"))
    assert pack_nack(nack.sender_ssrc, nack.media_ssrc, [25895]) == fixture("server_nack.bin")
    [pli] = parse_compound(fixture("server_pli.bin"))
    assert bytes(RtcpPli(pli.sender_ssrc, pli.media_ssrc)) == fixture("server_pli.bin")


def test_chromium_vp8_keyframe():
    data = fixture("chromium_vp8_keyframe.bin")
    view = parse_rtp(data)
    assert (view.payload_type, view.marker, view.seq) == (96, 1, 7069)
    ext = header_extensions(data, view.ext_start)
    assert ext[MID_ID] == b"1" and ext[RID_ID] == b"q" and len(ext[ABS_SEND_TIME_ID]) == 3
    assert int.from_bytes(ext[TRANSPORT_CC_ID], "big") == 5
    payload = data[view.payload_start : view.payload_end]
    d = parse_descriptor(payload)
    assert d is not None and d.start_of_frame and (d.picture_id, d.picture_id_bits, d.tl0picidx) == (23503, 15, 51)
    assert vp8_keyframe_start(payload) and keyframe_size(payload) == (320, 180)


def test_chromium_opus_with_audio_level():
    data = fixture("chromium_opus_audio_level.bin")
    view = parse_rtp(data)
    assert view.payload_type == 111 and view.payload_end - view.payload_start == 32
    pos, size = find_extension(data, view.ext_start, AUDIO_LEVEL_ID)
    assert size == 1 and data[pos] == 0xFF  # voice activity, -127 dBov: the fake microphone's silence
    assert header_extensions(data, view.ext_start)[AUDIO_LEVEL_ID] == b"\xff"


def test_chromium_rtx_carries_the_keyframe_packet_and_wraps_back():
    rtx, key = fixture("chromium_rtx.bin"), fixture("chromium_vp8_keyframe.bin")
    rtx_view, key_view = parse_rtp(rtx), parse_rtp(key)
    original = unwrap_rtx(rtx, rtx_view, 96, key_view.ssrc)
    assert original is not None and original.seq == key_view.seq and original.timestamp == key_view.timestamp
    payload = key[key_view.payload_start : key_view.payload_end]
    assert rtx[original.payload_start : original.payload_end] == payload
    assert header_extensions(rtx, rtx_view.ext_start)[REPAIRED_RID_ID] == b"q"
    # What a consumer sends: the same packet with a plain header, wrapped and unwrapped again.
    plain = bytes((0x80,)) + key[1:12] + payload
    wrapped = wrap_rtx(plain, 97, 5, 1234)
    again = unwrap_rtx(wrapped, parse_rtp(wrapped), 96, key_view.ssrc)
    assert again is not None and again.seq == key_view.seq and wrapped[again.payload_start :] == payload


def test_chromium_rtx_padding_is_all_padding():
    data = fixture("chromium_rtx_padding.bin")
    view = parse_rtp(data)
    assert data[0] & 0x20 and data[-1] == len(data) - view.payload_start
    assert view.payload_start == view.payload_end
    assert unwrap_rtx(data, view, 96, 1) is None


# -- packers never raise on out-of-range fields -------------------------------------------


def test_reception_report_fields_are_clamped_to_their_widths():
    report = ReceptionReport(
        ssrc=1 << 40, fraction_lost=300, packets_lost=1 << 30, highest_sequence=(1 << 33) + 7, jitter=1 << 40,
        lsr=(1 << 40) + 3, dlsr=19 * 3600 * 65536,  # 19 h since the last sender report
    )  # fmt: skip
    data = bytes(RtcpReceiverReport(ssrc=5, reports=[report]))
    [rr] = parse_compound(data)
    assert isinstance(rr, RtcpReceiverReport)
    [back] = rr.reports
    assert back.fraction_lost == 255 and back.packets_lost == 0x7FFFFF and back.highest_sequence == 7
    assert back.jitter == 0xFFFFFFFF and back.dlsr == 0xFFFFFFFF and back.lsr == 3
    negative = bytes(ReceptionReport(ssrc=1, packets_lost=-(1 << 30), dlsr=-5, jitter=-1))
    back = ReceptionReport.parse(negative, 0)
    assert back.packets_lost == -0x800000 and back.dlsr == 0 and back.jitter == 0


def test_sender_report_and_feedback_packers_mask_their_fields():
    sr = RtcpSenderReport(ssrc=-1, ntp_timestamp=1 << 70, rtp_timestamp=1 << 33, packet_count=-1, octet_count=1 << 40)
    [back] = parse_compound(bytes(sr))
    assert isinstance(back, RtcpSenderReport) and back.ssrc == 0xFFFFFFFF and back.rtp_timestamp == 0
    remb = RtcpRemb(sender_ssrc=1, bitrate_bps=1 << 80, ssrcs=list(range(300)))
    [back_remb] = parse_compound(bytes(remb))
    assert isinstance(back_remb, RtcpRemb) and len(back_remb.ssrcs) == 255
    assert back_remb.bitrate_bps > 1 << 60
    fir = RtcpFir(sender_ssrc=1, media_ssrc=0, entries=[(7, 300)])
    [back_fir] = parse_compound(bytes(fir))
    assert isinstance(back_fir, RtcpFir) and back_fir.entries == [(7, 300 & 0xFF)]
    with pytest.raises(ValueError):
        bytes(RtcpReceiverReport(ssrc=1, reports=[ReceptionReport(ssrc=i) for i in range(32)]))
    with pytest.raises(ValueError):
        build_feedback(1, 2, 0, 0, [None] * 0x10000)


# -- malformed packets raise MalformedPacket only ------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        bytes((0x8F, 206, 0, 4)) + bytes(8) + b"REMB" + bytes((9, 0, 0, 1)),  # 9 SSRCs announced, none carried
        bytes((0x81, 200, 0, 1)) + bytes(4),  # SR shorter than its sender info
        bytes((0x83, 201, 0, 1)) + bytes(4),  # RR announcing 3 blocks, holding none
        bytes((0x81, 205, 0, 1)) + bytes(4),  # NACK without a media SSRC
        bytes((0x80, 205, 0, 1)) + bytes(4),  # feedback of an unknown FMT without a media SSRC
        bytes((0x84, 206, 0, 3)) + bytes(12),  # FIR with half an entry
        bytes((0x81, 205, 0, 3)) + bytes(8) + b"\x00\x01\x00\x00" + bytes((0x81, 206, 0, 1)),  # short PLI after
        bytes((0x8F, 205, 0, 3)) + bytes(12),  # transport-cc without its status count
        bytes((0x8F, 205, 0, 4)) + bytes(10) + b"\x00\x05" + bytes(4),  # 5 statuses, no chunk
        bytes((0xA1, 201, 0, 1)) + bytes(3) + b"\x09",  # padding longer than the packet
        bytes((0x81, 201, 0, 5)) + bytes(4),  # length beyond the datagram
        bytes((0x80, 201, 0, 1)) + bytes(4) + b"\x80",  # trailing byte
        bytes((0x40, 201, 0, 1)) + bytes(4),  # version 1
    ],
)
def test_malformed_rtcp_raises_malformed_packet(data):
    with pytest.raises(MalformedPacket):
        parse_compound(data)


def test_transport_cc_feedback_announcing_more_statuses_than_the_server_reads_is_malformed():
    # 36 bytes: 65535 statuses, all "not received", in nine run-length chunks.
    body = struct.pack("!IIHHI", 1, 2, 0, 0xFFFF, 0) + struct.pack("!H", 0x1FFF) * 9 + bytes(2)
    packet = struct.pack("!BBH", 0x8F, 205, len(body) // 4) + body
    cpu = time.process_time()
    for _ in range(1000):
        with pytest.raises(MalformedPacket):
            parse_compound(packet)
    assert time.process_time() - cpu < 0.5  # each was about 10 ms of CPU
    most = build_feedback(1, 2, 0, 0, [None] * (MAX_FEEDBACK_STATUSES - 1) + [5_000_000])
    [fb] = parse_compound(most)
    assert isinstance(fb, RtcpTransportCc) and len(fb.feedback.packets) == MAX_FEEDBACK_STATUSES

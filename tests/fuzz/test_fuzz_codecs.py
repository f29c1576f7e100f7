"""Payload readers (media.vp8, media.keyframe): the VP8 descriptor, the VP8 munger, keyframe
detection (VP8, H.264) and the H.264 SPS reader take any payload and answer None / False or a
value within the payload, nothing else."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from sfu.media.keyframe import h264_keyframe_size, h264_keyframe_start, h264_sps_size, vp8_keyframe_start
from sfu.media.rtp import parse_rtp
from sfu.media.vp8 import Vp8Munger, keyframe_size, parse_descriptor

from .corpus import FUZZ, fixture, mutations

_KEY = fixture("chromium_vp8_keyframe.bin")
_VIEW = parse_rtp(_KEY)
VP8_SEEDS = [_KEY[_VIEW.payload_start : _VIEW.payload_end], bytes((0x90, 0x80, 0x80, 0x01)) + b"\x11\x22"]
# SPS NAL units written by libx264 (baseline, high, main) and a PPS; STAP-A and FU-A forms.
SPS_SEEDS = [
    bytes.fromhex("6742c01fd9005005ba10000003001000000303c8f183248000"),
    bytes.fromhex("6764001eacb201405ff2c2000003000200000300791e2c5c9000"),
    bytes.fromhex("674d400dd901419f9e10000003001000000303c8f142a48000"),
    bytes.fromhex("67640028acb200f0044fcb08000003000800000301e478c1924000"),
]
PPS = bytes.fromhex("68ce3c80")
H264_SEEDS = [
    *SPS_SEEDS,
    *(bytes((0x78,)) + len(s).to_bytes(2, "big") + s + len(PPS).to_bytes(2, "big") + PPS for s in SPS_SEEDS),
    bytes((0x7C, 0x85)) + b"\x88\x84\x00",  # FU-A start of an IDR slice
    bytes((0x65, 0x88, 0x84)),
]


def check_vp8(payload: bytes, munger: Vp8Munger) -> None:
    d = parse_descriptor(payload)
    if d is not None:
        assert 1 <= d.header_size <= len(payload)
        assert d.picture_id < 0 or 0 <= d.picture_id_pos < d.header_size
        assert d.tl0picidx < 0 or 0 <= d.tl0picidx_pos < d.header_size
    key = vp8_keyframe_start(payload)
    assert key in (True, False)
    size = keyframe_size(payload)
    assert size is None or (key and all(0 <= v < 1 << 14 for v in size))
    out = munger.rewrite(payload)
    assert len(out) == len(payload) and out[d.header_size if d else 0 :] == payload[d.header_size if d else 0 :]


def check_h264(payload: bytes) -> None:
    assert h264_keyframe_start(payload) in (True, False)
    size = h264_keyframe_size(payload)
    assert size is None or (size[0] > 0 and size[1] > 0)
    sps = h264_sps_size(payload)
    assert sps is None or (sps[0] > 0 and sps[1] > 0)


@FUZZ
@given(st.binary(max_size=40))
def test_vp8_readers_take_any_payload(payload):
    check_vp8(payload, Vp8Munger())


def test_vp8_readers_take_mutated_chromium_payloads():
    munger = Vp8Munger()
    rng = random.Random(7)
    for i, payload in enumerate(mutations(VP8_SEEDS, salt=4)):
        if i % 50 == 0:
            munger.restart()
        check_vp8(payload, munger if rng.random() < 0.5 else Vp8Munger())


@FUZZ
@given(st.integers(0, 0x7FFF), st.integers(0, 255), st.integers(0, 0x7FFF), st.booleans())
def test_the_vp8_munger_keeps_the_picture_id_continuous_across_a_restart(pid, tl0, other_pid, long_pid):
    def payload(p: int, t: int) -> bytes:
        ident = bytes((0x80 | (p >> 8), p & 0xFF)) if long_pid else bytes((p & 0x7F,))
        return bytes((0x90, 0xC0)) + ident + bytes((t, 0x00))

    munger = Vp8Munger()
    munger.rewrite(payload(pid, tl0))
    munger.restart()
    out = parse_descriptor(munger.rewrite(payload(other_pid, (tl0 + 77) & 0xFF)))
    mask = 0x7FFF if long_pid else 0x7F
    assert out is not None and out.picture_id == (munger.last_pid & mask) == ((pid & mask) + 1) & mask
    assert out.tl0picidx == (tl0 + 1) & 0xFF


@FUZZ
@given(st.binary(max_size=60))
def test_h264_readers_take_any_payload(payload):
    check_h264(payload)


@FUZZ
@given(st.sampled_from(SPS_SEEDS), st.binary(max_size=30))
def test_the_sps_reader_takes_any_tail_after_a_real_sps_header(sps, tail):
    check_h264(sps[:4] + tail)
    check_h264(bytes((0x67, 100)) + sps[2:4] + tail)  # a high profile: scaling lists, chroma format


def test_h264_readers_take_mutated_sps_stap_a_and_fu_a():
    for payload in mutations(H264_SEEDS, salt=5):
        check_h264(payload)

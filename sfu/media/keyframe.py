"""Keyframe detection on RTP payloads, without depacketizing whole frames."""

from __future__ import annotations

from collections.abc import Callable

from .vp8 import keyframe_size as vp8_keyframe_size
from .vp8 import parse_descriptor


def vp8_keyframe_start(payload: bytes) -> bool:
    """True when this VP8 RTP payload starts a keyframe (RFC 7741): the descriptor (vp8.py's
    parser) says start of partition 0, and the P bit of the VP8 payload header is 0."""
    if not payload or not payload[0] & 0x10 or payload[0] & 0x07:
        return False  # cheap test first: most packets do not start a frame
    d = parse_descriptor(payload)
    return d is not None and len(payload) > d.header_size and not payload[d.header_size] & 0x01


def _h264_nal_is_key(nal_type: int) -> bool:
    return nal_type in (5, 7)  # IDR slice or SPS


def h264_keyframe_start(payload: bytes) -> bool:
    """True when this H.264 RTP payload (RFC 6184) starts an IDR access unit."""
    n = len(payload)
    if n < 1:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == 24:  # STAP-A
        pos = 1
        while pos + 2 < n:
            size = (payload[pos] << 8) | payload[pos + 1]
            pos += 2
            if pos >= n:
                break
            if _h264_nal_is_key(payload[pos] & 0x1F):
                return True
            pos += size
        return False
    if nal_type == 28:  # FU-A
        if n < 2:
            return False
        fu = payload[1]
        return bool(fu & 0x80) and _h264_nal_is_key(fu & 0x1F)
    return _h264_nal_is_key(nal_type)


_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


class _Bits:
    """An exp-Golomb bit reader over an RBSP (emulation prevention bytes already removed)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise ValueError("SPS truncated")
            value = (value << 1) | ((self.data[byte] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def h264_sps_size(nal: bytes) -> tuple[int, int] | None:
    """(width, height) from an H.264 sequence parameter set NAL unit (ITU-T H.264 7.3.2.1.1)."""
    if len(nal) < 4 or nal[0] & 0x1F != 7:
        return None
    rbsp = nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")
    try:
        b = _Bits(rbsp)
        profile = b.u(8)
        b.u(16)  # constraint flags, level
        b.ue()  # seq_parameter_set_id
        chroma = 1
        if profile in _HIGH_PROFILES:
            chroma = b.ue()
            if chroma == 3:
                b.u(1)  # separate_colour_plane_flag
            b.ue()  # bit depths
            b.ue()
            b.u(1)  # qpprime_y_zero_transform_bypass_flag
            if b.u(1):  # seq_scaling_matrix_present_flag
                for i in range(8 if chroma != 3 else 12):
                    if b.u(1):
                        last = nxt = 8
                        for _ in range(16 if i < 6 else 64):
                            if nxt:
                                nxt = (last + b.se() + 256) % 256
                            last = nxt or last
        b.ue()  # log2_max_frame_num_minus4
        poc_type = b.ue()
        if poc_type == 0:
            b.ue()
        elif poc_type == 1:
            b.u(1)
            b.se()
            b.se()
            for _ in range(b.ue()):
                b.se()
        b.ue()  # max_num_ref_frames
        b.u(1)  # gaps_in_frame_num_value_allowed_flag
        width_mbs = b.ue() + 1
        height_units = b.ue() + 1
        frame_mbs_only = b.u(1)
        if not frame_mbs_only:
            b.u(1)  # mb_adaptive_frame_field_flag
        b.u(1)  # direct_8x8_inference_flag
        crop = (0, 0, 0, 0)
        if b.u(1):
            crop = (b.ue(), b.ue(), b.ue(), b.ue())
    except ValueError:
        return None
    unit_x = 1 if chroma in (0, 3) else 2
    unit_y = (2 - frame_mbs_only) * (2 if chroma == 1 else 1)
    width = width_mbs * 16 - unit_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - unit_y * (crop[2] + crop[3])
    return (width, height) if width > 0 and height > 0 else None


def h264_keyframe_size(payload: bytes) -> tuple[int, int] | None:
    """The picture size from the SPS in this H.264 RTP payload (single NAL or STAP-A), if any."""
    if not payload:
        return None
    nal_type = payload[0] & 0x1F
    if nal_type == 7:
        return h264_sps_size(payload)
    if nal_type == 24:  # STAP-A: 16-bit size, NAL unit, ...
        pos, n = 1, len(payload)
        while pos + 2 < n:
            size = (payload[pos] << 8) | payload[pos + 1]
            pos += 2
            if payload[pos] & 0x1F == 7:
                return h264_sps_size(payload[pos : pos + size])
            pos += size
    return None


def keyframe_detector(codec_name: str) -> Callable[[bytes], bool] | None:
    """The keyframe test for a codec name ("VP8", "H264"), or None for audio."""
    name = codec_name.upper()
    if name == "VP8":
        return vp8_keyframe_start
    if name == "H264":
        return h264_keyframe_start
    return None


def keyframe_size_reader(codec_name: str) -> Callable[[bytes], tuple[int, int] | None] | None:
    """The function that reads (width, height) from a keyframe's first packet, or None."""
    name = codec_name.upper()
    if name == "VP8":
        return vp8_keyframe_size
    if name == "H264":
        return h264_keyframe_size
    return None

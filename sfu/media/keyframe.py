"""Keyframe detection on RTP payloads, without depacketizing whole frames."""

from __future__ import annotations


def vp8_keyframe_start(payload: bytes) -> bool:
    """True when this VP8 RTP payload starts a keyframe (RFC 7741)."""
    n = len(payload)
    if n < 1:
        return False
    b0 = payload[0]
    if not b0 & 0x10 or b0 & 0x07:  # S bit (start of partition) and partition index 0
        return False
    pos = 1
    if b0 & 0x80:  # X: extended control bits
        if n < 2:
            return False
        x = payload[1]
        pos = 2
        if x & 0x80:  # I: picture id
            if n <= pos:
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            pos += 1
        if x & 0x30:  # T or K
            pos += 1
    if n <= pos:
        return False
    return not payload[pos] & 0x01  # P bit of the VP8 payload header: 0 = keyframe


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


def keyframe_detector(codec_name: str):  # type: ignore[no-untyped-def]
    """The keyframe test for a codec name ("VP8", "H264"), or None for audio."""
    name = codec_name.upper()
    if name == "VP8":
        return vp8_keyframe_start
    if name == "H264":
        return h264_keyframe_start
    return None

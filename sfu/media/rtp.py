"""Minimal RTP header parsing and writing for the forwarding path.

Only what forwarding needs is decoded; the payload is never touched except by keyframe
detection. Header extensions are parsed on demand (RFC 8285 one- and two-byte forms).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
_HDR = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")


class MalformedPacket(ValueError):
    """An RTP or RTCP packet that cannot be parsed; it is dropped and counted."""


@dataclass(slots=True)
class RtpView:
    """The fields of one incoming RTP packet that the forwarding path uses."""

    payload_type: int
    marker: int
    seq: int
    timestamp: int
    ssrc: int
    payload_start: int
    payload_end: int
    ext_start: int  # offset of the extension header (-1 when absent)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 demultiplexing: RTCP packet types 192..223 in the second byte."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_rtp(data: bytes) -> RtpView:
    n = len(data)
    if n < 12:
        raise MalformedPacket("RTP packet shorter than 12 bytes")
    b0, b1, seq, ts, ssrc = _HDR.unpack_from(data, 0)
    if b0 >> 6 != RTP_VERSION:
        raise MalformedPacket("RTP version is not 2")
    pos = 12 + 4 * (b0 & 0x0F)
    ext_start = -1
    if b0 & 0x10:
        if pos + 4 > n:
            raise MalformedPacket("RTP extension header truncated")
        ext_start = pos
        ext_words = (data[pos + 2] << 8) | data[pos + 3]
        pos += 4 + 4 * ext_words
    end = n
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0:
            raise MalformedPacket("RTP padding length is zero")
        end -= pad
    if pos > end:
        raise MalformedPacket("RTP header longer than packet")
    return RtpView(b1 & 0x7F, b1 >> 7, seq, ts, ssrc, pos, end, ext_start)


def find_extension(data: bytes, ext_start: int, ext_id: int) -> tuple[int, int]:
    """Where one header extension element's data lies: (offset, length), or (-1, 0) when the
    packet has no such element or it overruns the extension block (RFC 8285, one- and
    two-byte forms). Nothing is allocated: the per-packet readers (transport-wide sequence
    number, audio level) use it on every packet."""
    if ext_start < 0 or ext_start + 4 > len(data):
        return -1, 0
    profile = (data[ext_start] << 8) | data[ext_start + 1]
    pos = ext_start + 4
    end = min(pos + 4 * ((data[ext_start + 2] << 8) | data[ext_start + 3]), len(data))
    if profile == 0xBEDE:
        while pos < end:
            b = data[pos]
            if b == 0:
                pos += 1
                continue
            element_id, size = b >> 4, (b & 0x0F) + 1
            if element_id == 15:
                return -1, 0
            if element_id == ext_id:
                return (pos + 1, size) if pos + 1 + size <= end else (-1, 0)
            pos += 1 + size
    elif (profile & 0xFFF0) == 0x1000:
        while pos + 1 < end:
            element_id = data[pos]
            if element_id == 0:
                pos += 1
                continue
            size = data[pos + 1]
            if element_id == ext_id:
                return (pos + 2, size) if pos + 2 + size <= end else (-1, 0)
            pos += 2 + size
    return -1, 0


def header_extensions(data: bytes, ext_start: int) -> dict[int, bytes]:
    """All header extension elements of a packet, by id (RFC 8285)."""
    if ext_start < 0:
        return {}
    profile = (data[ext_start] << 8) | data[ext_start + 1]
    length = 4 * ((data[ext_start + 2] << 8) | data[ext_start + 3])
    pos = ext_start + 4
    end = min(pos + length, len(data))
    out: dict[int, bytes] = {}
    if profile == 0xBEDE:
        while pos < end:
            b = data[pos]
            if b == 0:
                pos += 1
                continue
            ext_id, size = b >> 4, (b & 0x0F) + 1
            if ext_id == 15:
                break
            pos += 1
            out[ext_id] = data[pos : pos + size]
            pos += size
    elif (profile & 0xFFF0) == 0x1000:
        while pos + 1 < end:
            ext_id = data[pos]
            if ext_id == 0:
                pos += 1
                continue
            size = data[pos + 1]
            pos += 2
            out[ext_id] = data[pos : pos + size]
            pos += size
    return out


def write_header(marker: int, payload_type: int, seq: int, timestamp: int, ssrc: int) -> bytes:
    """A 12-byte RTP header with no CSRCs and no extensions."""
    return _HDR.pack(0x80, (marker << 7) | payload_type, seq, timestamp, ssrc)


def rewrite(packet: bytes, seq: int, timestamp: int, ssrc: int) -> bytes:
    """A copy of a full RTP packet with new sequence number, timestamp and SSRC."""
    buf = bytearray(packet)
    _SEQ_TS_SSRC.pack_into(buf, 2, seq, timestamp, ssrc)
    return bytes(buf)

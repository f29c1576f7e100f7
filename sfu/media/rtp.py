"""RTP packets: header parsing for the forwarding path, and every RTP write the server does
(headers, header extension blocks, the transport-wide sequence number, padding packets).

Only what forwarding needs is decoded; the payload is never touched except by keyframe
detection. Header extensions are parsed on demand (RFC 8285 one- and two-byte forms, one
walker). ``MalformedPacket`` is the one exception the RTP and RTCP parsers raise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
_HDR = struct.Struct("!BBHII")
# The 12-byte header of every forwarded packet: pack(0x80, marker << 7 | payload_type, seq,
# timestamp, ssrc) is write_header without the call (Consumer.forward, once per packet).
PLAIN_HEADER = _HDR
_SEQ_TS_SSRC = struct.Struct("!HII")
_EXT_HDR = struct.Struct("!HH")
_FIRST_BYTE = (0x80, 0x90, 0xA0, 0xB0)  # version 2, by X + 2 * P


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


def find_extension(data: bytes, ext_start: int, ext_id: int, out: dict[int, bytes] | None = None) -> tuple[int, int]:
    """Where one header extension element's data lies: (offset, length), or (-1, 0) when the
    packet has no such element (RFC 8285, one- and two-byte forms). Nothing is allocated:
    the per-packet readers (transport-wide sequence number, audio level) use it on every
    packet. The one walker of extension blocks: given ``out``, it puts every element in it
    by id instead (``header_extensions``). An element overrunning the extension block ends
    the walk (it and what follows are ignored), as does the one-byte form's id 15."""
    if ext_start < 0 or ext_start + 4 > len(data):
        return -1, 0
    profile = (data[ext_start] << 8) | data[ext_start + 1]
    pos = ext_start + 4
    end = min(pos + 4 * ((data[ext_start + 2] << 8) | data[ext_start + 3]), len(data))
    if profile == 0xBEDE:
        while pos < end:
            b = data[pos]
            if b < 0x10:  # id 0: a padding byte (whatever its length field says, as libwebrtc reads it)
                pos += 1
                continue
            element_id, size = b >> 4, (b & 0x0F) + 1
            if element_id == 15 or pos + 1 + size > end:
                break
            if out is not None:
                out[element_id] = data[pos + 1 : pos + 1 + size]
            elif element_id == ext_id:
                return pos + 1, size
            pos += 1 + size
    elif (profile & 0xFFF0) == 0x1000:
        while pos + 1 < end:
            element_id = data[pos]
            if element_id == 0:
                pos += 1
                continue
            size = data[pos + 1]
            if pos + 2 + size > end:
                break
            if out is not None:
                out[element_id] = data[pos + 2 : pos + 2 + size]
            elif element_id == ext_id:
                return pos + 2, size
            pos += 2 + size
    return -1, 0


def header_extensions(data: bytes, ext_start: int) -> dict[int, bytes]:
    """All header extension elements of a packet, by id (RFC 8285)."""
    out: dict[int, bytes] = {}
    find_extension(data, ext_start, -1, out)
    return out


def one_byte_extensions(elements: list[tuple[int, bytes]]) -> bytes:
    """An RFC 8285 one-byte-form extension block (header and padding included) for
    (id 1..14, 1..16 bytes of data) elements."""
    body = bytearray()
    for ext_id, value in elements:
        if not 1 <= ext_id <= 14 or not 1 <= len(value) <= 16:
            raise ValueError("a one-byte header extension has an id of 1..14 and 1..16 bytes")
        body.append((ext_id << 4) | (len(value) - 1))
        body += value
    body += bytes(-len(body) % 4)
    return _EXT_HDR.pack(0xBEDE, len(body) // 4) + bytes(body)


def write_header(marker: int, payload_type: int, seq: int, timestamp: int, ssrc: int) -> bytes:
    """A 12-byte RTP header with no CSRCs and no extensions (every forwarded packet: fields are
    taken as given, a 16-bit seq and 32-bit timestamp and SSRC)."""
    return _HDR.pack(0x80, (marker << 7) | payload_type, seq, timestamp, ssrc)


def write_header_flags(
    marker: int, payload_type: int, seq: int, timestamp: int, ssrc: int, extension: bool, padding: bool
) -> bytes:
    """``write_header`` with the X and P bits: the caller appends the extension block, and the
    padding whose last byte is its size."""
    return _HDR.pack(_FIRST_BYTE[extension + 2 * padding], (marker << 7) | payload_type, seq, timestamp, ssrc)


def padding_packet(payload_type: int, seq: int, timestamp: int, ssrc: int, size: int) -> bytes:
    """An RTP packet of ``size`` bytes (13..267) whose payload is all padding (RFC 3550 5.1),
    as sent on an RTX stream to probe the bandwidth."""
    pad = size - 12
    if not 1 <= pad <= 255:
        raise ValueError("a padding-only packet is 13 to 267 bytes")
    header = write_header_flags(0, payload_type, seq, timestamp, ssrc, extension=False, padding=True)
    return header + bytes(pad - 1) + bytes((pad,))


def with_transport_seq(packet: bytes, ext_id: int, transport_seq: int) -> bytes:
    """A copy of a packet with a plain 12-byte header (no CSRC, no extension) that carries
    a transport-wide sequence number (one-byte form, ``ext_id`` 1..14) in a new extension."""
    return (
        bytes((packet[0] | 0x10,))
        + packet[1:12]
        + bytes((0xBE, 0xDE, 0, 1, (ext_id << 4) | 1, (transport_seq >> 8) & 0xFF, transport_seq & 0xFF, 0))
        + packet[12:]
    )


def rewrite(packet: bytes, seq: int, timestamp: int, ssrc: int) -> bytes:
    """A copy of a full RTP packet with new sequence number, timestamp and SSRC."""
    buf = bytearray(packet)
    _SEQ_TS_SSRC.pack_into(buf, 2, seq, timestamp, ssrc)
    return bytes(buf)

"""RTX retransmission packets (RFC 4588): wrapping for subscribers, unwrapping from publishers.

An RTX packet is the original packet sent again on its own stream: the RTX payload type and
SSRC, the RTX stream's own sequence number, the original timestamp and marker, and the
original sequence number (OSN, 2 bytes) in front of the original payload.
"""

from __future__ import annotations

from .rtp import MalformedPacket, RtpView, write_header_flags


def wrap_rtx(packet: bytes, rtx_payload_type: int, rtx_seq: int, rtx_ssrc: int) -> bytes:
    """The RTX form of a full RTP packet with a plain 12-byte header (what consumers send):
    the padding bit is kept (the padding stays at the end), CSRCs and extensions are not
    expected. MalformedPacket if the packet is shorter than an RTP header."""
    if len(packet) < 12:
        raise MalformedPacket("RTP packet shorter than 12 bytes")
    ts = int.from_bytes(packet[4:8], "big")
    header = write_header_flags(
        packet[1] >> 7,
        rtx_payload_type,
        rtx_seq & 0xFFFF,
        ts,
        rtx_ssrc,
        extension=False,
        padding=bool(packet[0] & 0x20),
    )
    return header + packet[2:4] + packet[12:]


def unwrap_rtx(data: bytes, view: RtpView, payload_type: int, ssrc: int) -> RtpView | None:
    """The original packet inside an RTX packet, as a view of the same buffer (its payload
    starts after the OSN), with the media stream's payload type and SSRC; None if the packet
    is too short to carry an OSN (e.g. padding only)."""
    start = view.payload_start
    if view.payload_end - start < 2:
        return None
    osn = (data[start] << 8) | data[start + 1]
    return RtpView(payload_type, view.marker, osn, view.timestamp, ssrc, start + 2, view.payload_end, view.ext_start)

"""Every RTCP packet the server packs or parses (RFC 3550, RFC 4585, RFC 5104, REMB, transport-cc).

Each packet type is a small dataclass: ``parse(header, body)`` builds it from one packet of a
compound RTCP packet, ``bytes(packet)`` packs it. ``parse_compound`` splits and parses a whole
compound packet; packet types we do not read come back as ``RtcpUnknown`` (kept as bytes).

Parsers raise only ``MalformedPacket`` (a ``ValueError``); the receive path catches it and
counts the packet as malformed. Packers never raise ``struct.error``: every field is masked
or clamped to its width on the way out (a 32-bit delay since the last SR saturates, a
negative cumulative loss is kept as the signed 24-bit value it is).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

from .rtp import MalformedPacket

__all__ = [
    "FMT_FIR",
    "FMT_NACK",
    "FMT_PLI",
    "FMT_REMB",
    "FMT_TRANSPORT_CC",
    "MAX_FEEDBACK_STATUSES",
    "PT_PSFB",
    "PT_RR",
    "PT_RTPFB",
    "PT_SR",
    "MalformedPacket",
    "ReceptionReport",
    "RtcpFir",
    "RtcpNack",
    "RtcpPacket",
    "RtcpPli",
    "RtcpReceiverReport",
    "RtcpRemb",
    "RtcpSenderReport",
    "RtcpTransportCc",
    "RtcpUnknown",
    "TwccFeedback",
    "build_feedback",
    "encode_chunks",
    "pack_nack",
    "pack_pli",
    "parse_compound",
    "parse_feedback",
    "split_compound",
]

PT_SR, PT_RR, PT_SDES, PT_BYE, PT_APP, PT_RTPFB, PT_PSFB = 200, 201, 202, 203, 204, 205, 206
FMT_NACK, FMT_TRANSPORT_CC = 1, 15  # RTPFB
FMT_PLI, FMT_FIR, FMT_REMB = 1, 4, 15  # PSFB (REMB is application layer feedback, FMT 15)

U32 = 0xFFFFFFFF
_HEADER = struct.Struct("!BBH")
_SSRC = struct.Struct("!I")
_TWO_SSRC = struct.Struct("!II")
_SENDER_INFO = struct.Struct("!IQIII")  # ssrc, NTP timestamp, RTP timestamp, packets, octets
_REPORT = struct.Struct("!IB3sIIII")
_NACK_ITEM = struct.Struct("!HH")
_TWCC_HEAD = struct.Struct("!IIHHI")
_INT16 = struct.Struct("!h")
_UINT16 = struct.Struct("!H")


def _header(count_or_fmt: int, packet_type: int, body_len: int, padded: bool = False) -> bytes:
    return _HEADER.pack(0x80 | (0x20 if padded else 0) | (count_or_fmt & 0x1F), packet_type & 0xFF, body_len // 4)


def _u32(value: int) -> int:
    return value & U32


def _clamp(value: int, high: int) -> int:
    return 0 if value < 0 else high if value > high else value


# -- splitting a compound packet -----------------------------------------------------------


def split_compound(data: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """(packet type, count/fmt, body, whole packet) for each packet of a compound RTCP packet.

    The body is what follows the 4-byte header, padding removed."""
    out = []
    pos = 0
    n = len(data)
    while pos + 4 <= n:
        b0, pt, length = _HEADER.unpack_from(data, pos)
        end = pos + 4 + 4 * length
        if b0 >> 6 != 2 or end > n:
            raise MalformedPacket("malformed compound RTCP packet")
        body = data[pos + 4 : end]
        if b0 & 0x20:
            pad = body[-1] if body else 0
            if not pad or pad > len(body):
                raise MalformedPacket("bad RTCP padding")
            body = body[:-pad]
        out.append((pt, b0 & 0x1F, body, data[pos:end]))
        pos = end
    if pos != n:
        raise MalformedPacket("trailing bytes after RTCP packets")
    return out


# -- sender and receiver reports (RFC 3550 6.4) ---------------------------------------------


@dataclass(slots=True)
class ReceptionReport:
    ssrc: int
    fraction_lost: int = 0  # 0..255 (8-bit fixed point)
    packets_lost: int = 0  # cumulative, signed 24 bits
    highest_sequence: int = 0  # extended highest sequence number received
    jitter: int = 0
    lsr: int = 0  # middle 32 bits of the last SR's NTP timestamp
    dlsr: int = 0  # delay since that SR, 1/65536 s

    SIZE: ClassVar[int] = 24

    @classmethod
    def parse(cls, data: bytes, pos: int) -> ReceptionReport:
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _REPORT.unpack_from(data, pos)
        cumulative = int.from_bytes(lost, "big", signed=True)
        return cls(ssrc, fraction, cumulative, highest, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        lost = _clamp(self.packets_lost, 0x7FFFFF) if self.packets_lost >= 0 else max(self.packets_lost, -0x800000)
        return _REPORT.pack(
            _u32(self.ssrc),
            _clamp(self.fraction_lost, 0xFF),
            lost.to_bytes(3, "big", signed=True),
            _u32(self.highest_sequence),
            _clamp(self.jitter, U32),
            _u32(self.lsr),
            _clamp(self.dlsr, U32),
        )


def _reports(body: bytes, pos: int, count: int) -> tuple[list[ReceptionReport], bytes]:
    end = pos + count * ReceptionReport.SIZE
    if end > len(body):
        raise MalformedPacket("RTCP report blocks truncated")
    reports = [ReceptionReport.parse(body, pos + i * ReceptionReport.SIZE) for i in range(count)]
    return reports, body[end:]


def _pack_reports(reports: list[ReceptionReport]) -> bytes:
    if len(reports) > 31:
        raise ValueError("at most 31 report blocks per RTCP report")
    return b"".join(bytes(r) for r in reports)


@dataclass(slots=True)
class RtcpSenderReport:
    ssrc: int
    ntp_timestamp: int  # 64-bit NTP time
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReceptionReport] = field(default_factory=list)
    extension: bytes = b""  # profile-specific extension, kept as is

    @classmethod
    def parse(cls, count: int, body: bytes) -> RtcpSenderReport:
        if len(body) < _SENDER_INFO.size:
            raise MalformedPacket("RTCP sender report truncated")
        ssrc, ntp, rtp, packets, octets = _SENDER_INFO.unpack_from(body, 0)
        reports, extension = _reports(body, _SENDER_INFO.size, count)
        return cls(ssrc, ntp, rtp, packets, octets, reports, extension)

    def __bytes__(self) -> bytes:
        body = (
            _SENDER_INFO.pack(
                _u32(self.ssrc),
                self.ntp_timestamp & 0xFFFFFFFFFFFFFFFF,
                _u32(self.rtp_timestamp),
                _u32(self.packet_count),
                _u32(self.octet_count),
            )
            + _pack_reports(self.reports)
            + self.extension
        )
        body += b"\0" * (-len(body) % 4)
        return _header(len(self.reports), PT_SR, len(body)) + body


@dataclass(slots=True)
class RtcpReceiverReport:
    ssrc: int
    reports: list[ReceptionReport] = field(default_factory=list)
    extension: bytes = b""

    @classmethod
    def parse(cls, count: int, body: bytes) -> RtcpReceiverReport:
        if len(body) < 4:
            raise MalformedPacket("RTCP receiver report truncated")
        reports, extension = _reports(body, 4, count)
        return cls(_SSRC.unpack_from(body, 0)[0], reports, extension)

    def __bytes__(self) -> bytes:
        body = _SSRC.pack(_u32(self.ssrc)) + _pack_reports(self.reports) + self.extension
        body += b"\0" * (-len(body) % 4)
        return _header(len(self.reports), PT_RR, len(body)) + body


# -- feedback (RFC 4585, RFC 5104, REMB) -----------------------------------------------------


def _feedback_ssrcs(body: bytes) -> tuple[int, int]:
    if len(body) < 8:
        raise MalformedPacket("RTCP feedback packet truncated")
    sender, media = _TWO_SSRC.unpack_from(body, 0)
    return sender, media


@dataclass(slots=True)
class RtcpPli:
    sender_ssrc: int
    media_ssrc: int

    @classmethod
    def parse(cls, body: bytes) -> RtcpPli:
        sender, media = _feedback_ssrcs(body)
        return cls(sender, media)

    def __bytes__(self) -> bytes:
        return pack_pli(self.sender_ssrc, self.media_ssrc)


def pack_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    """A picture loss indication (RFC 4585 6.3.1)."""
    return _header(FMT_PLI, PT_PSFB, 8) + _TWO_SSRC.pack(_u32(sender_ssrc), _u32(media_ssrc))


@dataclass(slots=True)
class RtcpFir:
    """Full intra request (RFC 5104 4.3.1): (media SSRC, command sequence number) entries."""

    sender_ssrc: int
    media_ssrc: int  # unused by the format (0)
    entries: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def parse(cls, body: bytes) -> RtcpFir:
        sender, media = _feedback_ssrcs(body)
        if (len(body) - 8) % 8:
            raise MalformedPacket("RTCP FIR entries truncated")
        entries = [(_SSRC.unpack_from(body, p)[0], body[p + 4]) for p in range(8, len(body), 8)]
        return cls(sender, media, entries)

    def __bytes__(self) -> bytes:
        fci = b"".join(_SSRC.pack(_u32(ssrc)) + bytes((seq & 0xFF, 0, 0, 0)) for ssrc, seq in self.entries)
        body = _TWO_SSRC.pack(_u32(self.sender_ssrc), _u32(self.media_ssrc)) + fci
        return _header(FMT_FIR, PT_PSFB, len(body)) + body


@dataclass(slots=True)
class RtcpNack:
    """Generic NACK (RFC 4585 6.2.1): the lost sequence numbers, ascending as packed."""

    sender_ssrc: int
    media_ssrc: int
    lost: list[int] = field(default_factory=list)

    @classmethod
    def parse(cls, body: bytes) -> RtcpNack:
        sender, media = _feedback_ssrcs(body)
        if (len(body) - 8) % 4:
            raise MalformedPacket("RTCP NACK items truncated")
        lost: list[int] = []
        for p in range(8, len(body), 4):
            pid, blp = _NACK_ITEM.unpack_from(body, p)
            lost.append(pid)
            lost.extend((pid + i + 1) & 0xFFFF for i in range(16) if blp >> i & 1)
        return cls(sender, media, lost)

    def __bytes__(self) -> bytes:
        return pack_nack(self.sender_ssrc, self.media_ssrc, self.lost)


def pack_nack(sender_ssrc: int, media_ssrc: int, seqs: list[int]) -> bytes:
    """A generic NACK for ascending (extended) sequence numbers; wraps past 65535 are fine
    (aiortc's RtcpRtpfbPacket cannot pack a list that wraps). Each item is one PID and the
    bitmask of the 16 numbers after it."""
    fci = bytearray()
    pid, blp = -1, 0
    for seq in seqs:
        if pid >= 0 and 0 < seq - pid <= 16:
            blp |= 1 << (seq - pid - 1)
            continue
        if pid >= 0:
            fci += _NACK_ITEM.pack(pid & 0xFFFF, blp)
        pid, blp = seq, 0
    if pid >= 0:
        fci += _NACK_ITEM.pack(pid & 0xFFFF, blp)
    return _header(FMT_NACK, PT_RTPFB, 8 + len(fci)) + _TWO_SSRC.pack(_u32(sender_ssrc), _u32(media_ssrc)) + fci


_REMB_MAX_MANTISSA = (1 << 18) - 1


@dataclass(slots=True)
class RtcpRemb:
    """Receiver estimated maximum bitrate (draft-alvestrand-rmcat-remb-03) for some SSRCs."""

    sender_ssrc: int
    bitrate_bps: int
    ssrcs: list[int] = field(default_factory=list)
    media_ssrc: int = 0

    @staticmethod
    def is_remb(body: bytes) -> bool:
        return len(body) >= 12 and body[8:12] == b"REMB"

    @classmethod
    def parse(cls, body: bytes) -> RtcpRemb:
        sender, media = _feedback_ssrcs(body)
        if len(body) < 16 or body[8:12] != b"REMB":
            raise MalformedPacket("not a REMB")
        count = body[12]
        if len(body) < 16 + 4 * count:
            raise MalformedPacket("REMB announces more SSRCs than it carries")
        exponent = body[13] >> 2
        mantissa = ((body[13] & 0x03) << 16) | (body[14] << 8) | body[15]
        ssrcs = [_SSRC.unpack_from(body, 16 + 4 * i)[0] for i in range(count)]
        return cls(sender, mantissa << exponent, ssrcs, media)

    def __bytes__(self) -> bytes:
        bitrate = max(0, self.bitrate_bps)
        exponent = 0
        while bitrate >> exponent > _REMB_MAX_MANTISSA and exponent < 63:
            exponent += 1
        mantissa = min(bitrate >> exponent, _REMB_MAX_MANTISSA)
        ssrcs = self.ssrcs[:255]
        body = (
            _TWO_SSRC.pack(_u32(self.sender_ssrc), _u32(self.media_ssrc))
            + b"REMB"
            + bytes((len(ssrcs), (exponent << 2) | (mantissa >> 16), (mantissa >> 8) & 0xFF, mantissa & 0xFF))
            + b"".join(_SSRC.pack(_u32(s)) for s in ssrcs)
        )
        return _header(FMT_REMB, PT_PSFB, len(body)) + body


# -- transport-cc feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01) --------------

DELTA_UNIT_US = 250
REFERENCE_UNIT_US = 64_000
NOT_RECEIVED, SMALL_DELTA, LARGE_DELTA = 0, 1, 2
# Statuses one feedback packet may report. Run-length chunks let 36 bytes announce 65535
# statuses (about 10 ms of CPU to parse and apply); a sender cannot use more than its send
# history (bwe.estimator.SendHistory keeps 8192 packets), so more is refused as malformed.
MAX_FEEDBACK_STATUSES = 8192


@dataclass
class TwccFeedback:
    sender_ssrc: int
    media_ssrc: int
    base_seq: int
    reference_time_us: int  # arrival time base, in the receiver's clock
    fb_count: int
    # (sequence number, arrival time in µs on the receiver's clock, or None if lost)
    packets: list[tuple[int, int | None]] = field(default_factory=list)


def parse_feedback(body: bytes) -> TwccFeedback:
    """Parse the body of an RTPFB FMT 15 packet (everything after the 4-byte RTCP header).

    The work is bounded: at most MAX_FEEDBACK_STATUSES statuses, and received ones each
    need a delta byte that the packet must carry."""
    if len(body) < 16:
        raise MalformedPacket("transport-cc feedback is too short")
    sender, media, base, count, ref_fb = _TWCC_HEAD.unpack_from(body, 0)
    if count > MAX_FEEDBACK_STATUSES:
        raise MalformedPacket("transport-cc feedback reports more statuses than the server reads")
    reference = ref_fb >> 8
    if reference & 0x800000:
        reference -= 1 << 24
    fb = TwccFeedback(sender, media, base, reference * REFERENCE_UNIT_US, ref_fb & 0xFF)
    pos = 16
    n = len(body)
    symbols: list[int] = []
    while len(symbols) < count:
        if pos + 2 > n:
            raise MalformedPacket("transport-cc feedback: packet chunks truncated")
        chunk = (body[pos] << 8) | body[pos + 1]
        pos += 2
        if chunk & 0x8000 == 0:  # run length
            symbol = (chunk >> 13) & 0x3
            symbols.extend([symbol] * min(chunk & 0x1FFF, count - len(symbols)))
        elif chunk & 0x4000 == 0:  # 14 one-bit symbols
            symbols.extend((chunk >> (13 - i)) & 0x1 for i in range(14))
        else:  # 7 two-bit symbols
            symbols.extend((chunk >> (12 - 2 * i)) & 0x3 for i in range(7))
    del symbols[count:]
    arrival = fb.reference_time_us
    packets = fb.packets
    for i, symbol in enumerate(symbols):
        seq = (base + i) & 0xFFFF
        if symbol == NOT_RECEIVED:
            packets.append((seq, None))
            continue
        if symbol == SMALL_DELTA:
            if pos + 1 > n:
                raise MalformedPacket("transport-cc feedback: deltas truncated")
            delta = body[pos]
            pos += 1
        elif symbol == LARGE_DELTA:
            if pos + 2 > n:
                raise MalformedPacket("transport-cc feedback: deltas truncated")
            delta = _INT16.unpack_from(body, pos)[0]
            pos += 2
        else:
            raise MalformedPacket("transport-cc feedback: reserved status symbol")
        arrival += delta * DELTA_UNIT_US
        packets.append((seq, arrival))
    return fb


def build_feedback(
    sender_ssrc: int,
    media_ssrc: int,
    base_seq: int,
    fb_count: int,
    arrivals_us: list[int | None],
) -> bytes:
    """A complete RTCP transport-cc packet for consecutive sequence numbers from base_seq.

    ``arrivals_us[i]`` is the arrival time of base_seq + i on the receiver's clock (None: lost).
    At most 65535 statuses fit one packet; deltas beyond the signed 16-bit range saturate.
    """
    if len(arrivals_us) > 0xFFFF:
        raise ValueError("at most 65535 statuses per transport-cc feedback packet")
    received = [a for a in arrivals_us if a is not None]
    reference_units = (received[0] // REFERENCE_UNIT_US) if received else 0
    previous = reference_units * REFERENCE_UNIT_US
    symbols: list[int] = []
    deltas = bytearray()
    for arrival in arrivals_us:
        if arrival is None:
            symbols.append(NOT_RECEIVED)
            continue
        delta = round((arrival - previous) / DELTA_UNIT_US)
        delta = max(-32768, min(32767, delta))
        previous += delta * DELTA_UNIT_US
        if 0 <= delta <= 255:
            symbols.append(SMALL_DELTA)
            deltas.append(delta)
        else:
            symbols.append(LARGE_DELTA)
            deltas += _INT16.pack(delta)
    body = _TWCC_HEAD.pack(
        _u32(sender_ssrc),
        _u32(media_ssrc),
        base_seq & 0xFFFF,
        len(arrivals_us),
        ((reference_units & 0xFFFFFF) << 8) | (fb_count & 0xFF),
    )
    body += encode_chunks(symbols) + bytes(deltas)
    body += b"\0" * (-len(body) % 4)
    return _header(FMT_TRANSPORT_CC, PT_RTPFB, len(body)) + body


def encode_chunks(symbols: list[int]) -> bytes:
    """Packet status chunks for these symbols: run-length chunks for runs of 14 or more,
    one-bit vectors (14 symbols) where no large delta occurs, two-bit vectors (7) elsewhere.

    The last vector chunk may describe more symbols than exist; the receiver reads only
    the packet status count.
    """
    out = bytearray()
    n = len(symbols)
    i = 0
    while i < n:
        symbol = symbols[i]
        run = 1
        while i + run < n and symbols[i + run] == symbol and run < 0x1FFF:
            run += 1
        if run >= 14:
            out += _UINT16.pack((symbol << 13) | run)
            i += run
            continue
        window = symbols[i : i + 14]
        if LARGE_DELTA not in window:
            chunk = 0x8000
            for j, s in enumerate(window):
                chunk |= s << (13 - j)
            i += len(window)
        else:
            chunk = 0xC000
            for j, s in enumerate(window[:7]):
                chunk |= s << (12 - 2 * j)
            i += len(window[:7])
        out += _UINT16.pack(chunk)
    return bytes(out)


@dataclass(slots=True)
class RtcpTransportCc:
    """A transport-cc feedback packet as received: the parsed report and the packet itself
    (its chunk encoding is the sender's choice, so it is kept to pack the packet again)."""

    feedback: TwccFeedback
    raw: bytes

    @classmethod
    def parse(cls, body: bytes, raw: bytes) -> RtcpTransportCc:
        return cls(parse_feedback(body), raw)

    def __bytes__(self) -> bytes:
        return self.raw


@dataclass(slots=True)
class RtcpUnknown:
    """A packet we do not read (SDES, BYE, APP, other feedback), kept as is. A feedback
    packet of any FMT must hold its two SSRCs (RFC 4585 6.1), or it is malformed."""

    packet_type: int
    fmt: int
    raw: bytes

    def __bytes__(self) -> bytes:
        return self.raw


RtcpPacket = (
    RtcpSenderReport | RtcpReceiverReport | RtcpPli | RtcpFir | RtcpNack | RtcpRemb | RtcpTransportCc | RtcpUnknown
)


def parse_packet(pt: int, fmt: int, body: bytes, raw: bytes) -> RtcpPacket:
    """One packet of a compound packet, from ``split_compound``'s fields."""
    if pt == PT_SR:
        return RtcpSenderReport.parse(fmt, body)
    if pt == PT_RR:
        return RtcpReceiverReport.parse(fmt, body)
    if pt in (PT_RTPFB, PT_PSFB) and len(body) < 8:
        raise MalformedPacket("RTCP feedback packet without its sender and media SSRCs")
    if pt == PT_RTPFB:
        if fmt == FMT_NACK:
            return RtcpNack.parse(body)
        if fmt == FMT_TRANSPORT_CC:
            return RtcpTransportCc.parse(body, raw)
    elif pt == PT_PSFB:
        if fmt == FMT_PLI:
            return RtcpPli.parse(body)
        if fmt == FMT_FIR:
            return RtcpFir.parse(body)
        if fmt == FMT_REMB and RtcpRemb.is_remb(body):
            return RtcpRemb.parse(body)
    return RtcpUnknown(pt, fmt, raw)


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Every packet of a compound RTCP packet; MalformedPacket if any of them is malformed."""
    return [parse_packet(pt, fmt, body, raw) for pt, fmt, body, raw in split_compound(data)]

"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01).

The sender stamps every RTP packet of a transport with a 16-bit transport-wide sequence number
(a header extension); the receiver reports, for ranges of those numbers, which arrived and
when (RTCP RTPFB, FMT 15). This module reads and writes those reports.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..media.rtp import find_extension

TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
RTCP_RTPFB = 205
TWCC_FMT = 15
DELTA_UNIT_US = 250
REFERENCE_UNIT_US = 64_000

NOT_RECEIVED, SMALL_DELTA, LARGE_DELTA = 0, 1, 2


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
    """Parse the body of an RTPFB FMT 15 packet (everything after the 4-byte RTCP header)."""
    if len(body) < 16:
        raise ValueError("transport-cc feedback is too short")
    sender, media, base, count, ref_fb = struct.unpack_from("!IIHHI", body, 0)
    reference = ref_fb >> 8
    if reference & 0x800000:
        reference -= 1 << 24
    fb = TwccFeedback(sender, media, base, reference * REFERENCE_UNIT_US, ref_fb & 0xFF)
    pos = 16
    symbols: list[int] = []
    while len(symbols) < count:
        if pos + 2 > len(body):
            raise ValueError("transport-cc feedback: packet chunks truncated")
        chunk = (body[pos] << 8) | body[pos + 1]
        pos += 2
        if chunk & 0x8000 == 0:  # run length
            symbol = (chunk >> 13) & 0x3
            symbols.extend([symbol] * (chunk & 0x1FFF))
        elif chunk & 0x4000 == 0:  # 14 one-bit symbols
            symbols.extend((chunk >> (13 - i)) & 0x1 for i in range(14))
        else:  # 7 two-bit symbols
            symbols.extend((chunk >> (12 - 2 * i)) & 0x3 for i in range(7))
    del symbols[count:]
    arrival = fb.reference_time_us
    for i, symbol in enumerate(symbols):
        seq = (base + i) & 0xFFFF
        if symbol == NOT_RECEIVED:
            fb.packets.append((seq, None))
            continue
        if symbol == SMALL_DELTA:
            if pos + 1 > len(body):
                raise ValueError("transport-cc feedback: deltas truncated")
            delta = body[pos]
            pos += 1
        elif symbol == LARGE_DELTA:
            if pos + 2 > len(body):
                raise ValueError("transport-cc feedback: deltas truncated")
            delta = struct.unpack_from("!h", body, pos)[0]
            pos += 2
        else:
            raise ValueError("transport-cc feedback: reserved status symbol")
        arrival += delta * DELTA_UNIT_US
        fb.packets.append((seq, arrival))
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
    """
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
            deltas += struct.pack("!h", delta)
    chunks = encode_chunks(symbols)
    body = struct.pack(
        "!IIHHI",
        sender_ssrc,
        media_ssrc,
        base_seq & 0xFFFF,
        len(arrivals_us),
        ((reference_units & 0xFFFFFF) << 8) | (fb_count & 0xFF),
    )
    body += bytes(chunks) + bytes(deltas)
    body += b"\0" * (-len(body) % 4)
    return struct.pack("!BBH", 0x80 | TWCC_FMT, RTCP_RTPFB, len(body) // 4) + body


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
            out += struct.pack("!H", (symbol << 13) | run)
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
        out += struct.pack("!H", chunk)
    return bytes(out)


def split_compound(data: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """(packet type, count/fmt, body, whole packet) for each packet of a compound RTCP packet."""
    out = []
    pos = 0
    while pos + 4 <= len(data):
        b0, pt, length = struct.unpack_from("!BBH", data, pos)
        end = pos + 4 + 4 * length
        if b0 >> 6 != 2 or end > len(data):
            raise ValueError("malformed compound RTCP packet")
        body = data[pos + 4 : end]
        if b0 & 0x20 and body:
            pad = body[-1]
            if not pad or pad > len(body):
                raise ValueError("bad RTCP padding")
            body = body[:-pad]
        out.append((pt, b0 & 0x1F, body, data[pos:end]))
        pos = end
    if pos != len(data):
        raise ValueError("trailing bytes after RTCP packets")
    return out


# -- the receiving side: feedback for a publisher ----------------------------------------

MAX_DELTA_UNITS = 0x7FFF  # a received packet's delta must fit a signed 16-bit count of 250 µs
MAX_RECEIVED_PER_FEEDBACK = 200  # keeps one feedback packet under about 1200 bytes
MAX_STATUSES_PER_FEEDBACK = 0xFFFF
REORDER_WINDOW = 1024  # a packet this far behind the newest is dropped as too late
# Largest gap between two received packets one feedback packet can carry (the first delta
# of a packet is taken from its 64 ms reference time, hence the margin).
MAX_DELTA_US = MAX_DELTA_UNITS * DELTA_UNIT_US - REFERENCE_UNIT_US


def read_transport_seq(data: bytes, ext_start: int, ext_id: int) -> int:
    """The transport-wide sequence number of an RTP packet, or -1 (RFC 8285, both forms)."""
    pos, size = find_extension(data, ext_start, ext_id)
    return (data[pos] << 8) | data[pos + 1] if size == 2 else -1


class FeedbackGenerator:
    """Transport-cc feedback for one incoming transport (what a browser's receiver sends).

    The packet path only appends (sequence number, arrival time) to a list (``record``);
    ``build`` (every 50-100 ms, or when ``pending`` grows after a burst) unwraps the
    sequence numbers, and reports every number from the first one not reported yet to the
    newest one received: lost ones as not received, a late packet by going back to it (its
    neighbours that did arrive are reported again, as libwebrtc's receiver does), duplicates
    once. A report that would not fit one packet (more than 200 received, a time gap beyond
    the 16-bit delta range of about 8 s, or 65535 statuses) is split into several.
    """

    def __init__(self, sender_ssrc: int) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = 0  # an SSRC the sender sends (libwebrtc ignores feedback for others)
        self.pending: list[tuple[int, int]] = []
        self.packets_sent = 0
        self.late_dropped = 0
        self._arrivals: dict[int, int] = {}  # extended sequence number -> arrival µs
        self._highest: int | None = None
        self._next: int | None = None  # first sequence number not reported yet
        self._fb_count = 0

    def record(self, seq: int, arrival_us: int) -> None:
        self.pending.append((seq, arrival_us))

    def _take_pending(self) -> None:
        pending, self.pending = self.pending, []
        arrivals = self._arrivals
        for seq, arrival in pending:
            highest = self._highest
            if highest is None:
                ext = seq
                self._highest = self._next = ext
            else:
                delta = (seq - highest) & 0xFFFF
                ext = highest + (delta - 0x10000 if delta >= 0x8000 else delta)
                if ext < highest - REORDER_WINDOW:
                    self.late_dropped += 1
                    continue
                if ext > highest:
                    self._highest = ext
            if ext in arrivals:
                continue  # a duplicate: the first arrival counts
            arrivals[ext] = arrival
            if self._next is not None and ext < self._next:
                self._next = ext  # late: report again from here
        if len(arrivals) > 4 * REORDER_WINDOW and self._highest is not None:
            floor = self._highest - 2 * REORDER_WINDOW
            self._arrivals = {k: v for k, v in arrivals.items() if k >= floor}

    def build(self) -> list[bytes]:
        """RTCP transport-cc packets for everything received since the last call."""
        self._take_pending()
        if self._highest is None or self._next is None or self._next > self._highest:
            return []
        arrivals = self._arrivals
        out: list[bytes] = []
        start = self._next
        segment: list[int | None] = []
        received = 0
        previous: int | None = None
        for ext in range(start, self._highest + 1):
            arrival = arrivals.get(ext)
            if len(segment) >= MAX_STATUSES_PER_FEEDBACK or (
                arrival is not None
                and segment
                and (
                    received >= MAX_RECEIVED_PER_FEEDBACK
                    or (previous is not None and abs(arrival - previous) > MAX_DELTA_US)
                )
            ):
                out.append(self._packet(start, segment))
                start, segment, received, previous = ext, [], 0, None
            segment.append(arrival)
            if arrival is not None:
                received += 1
                previous = arrival
        if segment:
            out.append(self._packet(start, segment))
        self._next = self._highest + 1
        return out

    def _packet(self, base: int, arrivals: list[int | None]) -> bytes:
        packet = build_feedback(self.sender_ssrc, self.media_ssrc, base, self._fb_count, arrivals)
        self._fb_count = (self._fb_count + 1) & 0xFF
        self.packets_sent += 1
        return packet

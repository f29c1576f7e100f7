"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01).

The sender stamps every RTP packet of a transport with a 16-bit transport-wide sequence number
(a header extension); the receiver reports, for ranges of those numbers, which arrived and
when (RTCP RTPFB, FMT 15). This module reads and writes those reports.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

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
    chunks = bytearray()
    for i in range(0, len(symbols), 7):
        group = symbols[i : i + 7] + [0] * (7 - len(symbols[i : i + 7]))
        chunk = 0xC000
        for j, symbol in enumerate(group):
            chunk |= symbol << (12 - 2 * j)
        chunks += struct.pack("!H", chunk)
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


def add_transport_cc(sdp: str, ext_id: int) -> str:
    """Offer transport-cc: the header extension and the RTCP feedback on every media codec."""
    out: list[str] = []
    in_media = False
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        if line.startswith("m="):
            in_media = line.startswith("m=audio") or line.startswith("m=video")
        out.append(line)
        if in_media and line.startswith("a=mid:"):
            out.append(f"a=extmap:{ext_id} {TWCC_URI}")
        if in_media and line.startswith("a=rtpmap:") and " rtx/" not in line.lower():
            pt = line[len("a=rtpmap:") :].split()[0]
            out.append(f"a=rtcp-fb:{pt} transport-cc")
    return "\r\n".join(out) + "\r\n"

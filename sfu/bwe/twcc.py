"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01).

The sender stamps every RTP packet of a transport with a 16-bit transport-wide sequence number
(a header extension); the receiver reports, for ranges of those numbers, which arrived and
when (RTCP RTPFB, FMT 15). The packet format is media.rtcp's (re-exported here); this module
builds the reports a receiver sends (FeedbackGenerator); rtc/sdp.py offers the extension.
"""

from __future__ import annotations

from ..media.rtcp import (
    DELTA_UNIT_US,
    FMT_TRANSPORT_CC,
    LARGE_DELTA,
    MAX_FEEDBACK_STATUSES,
    NOT_RECEIVED,
    PT_RTPFB,
    REFERENCE_UNIT_US,
    SMALL_DELTA,
    TwccFeedback,
    build_feedback,
    encode_chunks,
    parse_feedback,
    split_compound,
)
from ..media.rtp import find_extension

__all__ = [
    "DELTA_UNIT_US",
    "LARGE_DELTA",
    "NOT_RECEIVED",
    "REFERENCE_UNIT_US",
    "RTCP_RTPFB",
    "SMALL_DELTA",
    "TWCC_FMT",
    "TWCC_URI",
    "FeedbackGenerator",
    "TwccFeedback",
    "build_feedback",
    "encode_chunks",
    "parse_feedback",
    "read_transport_seq",
    "split_compound",
]

TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
RTCP_RTPFB = PT_RTPFB
TWCC_FMT = FMT_TRANSPORT_CC


# -- the receiving side: feedback for a publisher ----------------------------------------

MAX_DELTA_UNITS = 0x7FFF  # a received packet's delta must fit a signed 16-bit count of 250 µs
MAX_RECEIVED_PER_FEEDBACK = 200  # keeps one feedback packet under about 1200 bytes
MAX_STATUSES_PER_FEEDBACK = MAX_FEEDBACK_STATUSES  # what our own parser accepts, too
REORDER_WINDOW = 1024  # a packet this far behind the newest is dropped as too late
# A packet this far ahead of the newest starts a new feedback window: the numbers skipped are
# not reported (as not received) one by one, so the work per packet is bounded whatever
# numbers a sender stamps (a window covers at most REORDER_WINDOW + MAX_GAP per packet).
MAX_GAP = 512
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
    the 16-bit delta range of about 8 s, or 8192 statuses) is split into several. A jump
    forward of more than MAX_GAP numbers closes the current window (its feedback is built
    then) and starts a new one at the packet after the jump.
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
        self._ready: list[bytes] = []  # feedback of windows closed by a jump

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
                    if ext - highest > MAX_GAP and self._next is not None:
                        if self._next <= highest:
                            self._ready.extend(self._segments(self._next, highest))
                        self._next = ext
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
        out, self._ready = self._ready, []
        if self._highest is None or self._next is None or self._next > self._highest:
            return out
        out.extend(self._segments(self._next, self._highest))
        self._next = self._highest + 1
        return out

    def _segments(self, start: int, highest: int) -> list[bytes]:
        """Feedback packets for every number from start to highest."""
        arrivals = self._arrivals
        out: list[bytes] = []
        segment: list[int | None] = []
        received = 0
        previous: int | None = None
        for ext in range(start, highest + 1):
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
        return out

    def _packet(self, base: int, arrivals: list[int | None]) -> bytes:
        packet = build_feedback(self.sender_ssrc, self.media_ssrc, base, self._fb_count, arrivals)
        self._fb_count = (self._fb_count + 1) & 0xFF
        self.packets_sent += 1
        return packet

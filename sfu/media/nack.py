"""Upstream loss repair: which packets of one incoming stream to NACK, and when.

One generator per incoming video layer watches the extended sequence numbers as they arrive.
A gap puts the missing numbers on a list; after a short wait (a reordered packet usually
turns up within a few milliseconds) they are NACKed, then NACKed again every retry interval
(about an RTT) until they arrive, they have been asked for too often, or they are too old to
be of use. What cannot be repaired is replaced by a keyframe: the generator raises a flag
that the owner turns into a PLI. A list that grows too long (a burst, a seq jump) is dropped
the same way.

The RTT to the publisher is learned from the repairs themselves: the time from the first NACK
of a packet to its arrival (Karn's rule: packets NACKed more than once are not sampled).

Pure logic: time is an argument (milliseconds, any clock), nothing is sent from here; the
NACK packet itself is media.rtcp's (``pack_nack``, also exported here as ``nack_packet``).
"""

from __future__ import annotations

from .rtcp import pack_nack as nack_packet

__all__ = ["NackGenerator", "ResendBudget", "nack_packet"]

REORDER_WAIT_MS = 10  # a gap is NACKed once it is this old
MAX_AGE_MS = 1000  # a missing packet is given up this long after the gap was seen
MAX_TRIES = 10  # NACKs per missing packet
MAX_MISSING = 200  # more than this outstanding: ask for a keyframe instead
DEFAULT_RTT_MS = 100.0
MIN_RETRY_MS = 30.0
MAX_RETRY_MS = 400.0
_NEVER = float("inf")


class _Missing:
    __slots__ = ("detected_ms", "sent_ms", "tries")

    def __init__(self, detected_ms: float) -> None:
        self.detected_ms = detected_ms
        self.sent_ms = 0.0
        self.tries = 0


class NackGenerator:
    __slots__ = (
        "_highest",
        "_missing",
        "_next_due_ms",
        "keyframe_needed",
        "list_overflows",
        "nacks_sent",
        "packets_given_up",
        "packets_repaired",
        "rtt_ms",
    )

    def __init__(self) -> None:
        self._missing: dict[int, _Missing] = {}  # by extended seq, ascending (insertion order)
        self._highest = -1
        self._next_due_ms = _NEVER
        self.keyframe_needed = False
        self.rtt_ms = DEFAULT_RTT_MS
        self.nacks_sent = 0  # sequence numbers NACKed, retries included
        self.packets_repaired = 0  # NACKed packets that arrived
        self.packets_given_up = 0
        self.list_overflows = 0

    @property
    def missing(self) -> list[int]:
        return list(self._missing)

    @property
    def next_due_ms(self) -> float:
        """When poll() next has something to do (check before calling it on the hot path)."""
        return self._next_due_ms

    @property
    def retry_interval_ms(self) -> float:
        return min(MAX_RETRY_MS, max(MIN_RETRY_MS, 1.2 * self.rtt_ms))

    def on_packet(self, ext_seq: int, now_ms: float) -> bool:
        """Account for an arriving packet; True when it fills a hole (late or repaired)."""
        highest = self._highest
        if ext_seq > highest:
            if highest >= 0 and ext_seq > highest + 1:
                if ext_seq - highest - 1 + len(self._missing) > MAX_MISSING:
                    self._overflow()
                else:
                    for seq in range(highest + 1, ext_seq):
                        self._missing[seq] = _Missing(now_ms)
                    if now_ms + REORDER_WAIT_MS < self._next_due_ms:
                        self._next_due_ms = now_ms + REORDER_WAIT_MS
            self._highest = ext_seq
            return False
        entry = self._missing.pop(ext_seq, None)
        if entry is None:
            return False  # a duplicate, or older than anything we wait for
        if entry.tries:
            self.packets_repaired += 1
            if entry.tries == 1:
                sample = now_ms - entry.sent_ms
                if sample >= 0:
                    self.rtt_ms = 0.8 * self.rtt_ms + 0.2 * max(1.0, sample)
                    self._next_due_ms = min(self._next_due_ms, now_ms)  # retries move
        return True

    def poll(self, now_ms: float) -> list[int]:
        """The extended sequence numbers to NACK now (each counted as sent)."""
        if now_ms < self._next_due_ms:
            return []
        out: list[int] = []
        retry = self.retry_interval_ms
        next_due = _NEVER
        for seq, entry in list(self._missing.items()):
            if entry.tries >= MAX_TRIES or now_ms - entry.detected_ms > MAX_AGE_MS:
                del self._missing[seq]
                self.packets_given_up += 1
                self.keyframe_needed = True
                continue
            due = entry.detected_ms + REORDER_WAIT_MS if entry.tries == 0 else entry.sent_ms + retry
            if due <= now_ms:
                out.append(seq)
                entry.sent_ms = now_ms
                entry.tries += 1
                due = now_ms + retry
            next_due = min(next_due, due, entry.detected_ms + MAX_AGE_MS)
        self._next_due_ms = next_due
        self.nacks_sent += len(out)
        return out

    def request(self, ext_seq: int, now_ms: float) -> bool:
        """Someone downstream wants this packet: if it is one we still wait for, ask for it
        again at the next poll, unless it was asked for less than a retry interval ago.
        True if the packet is on the list (whatever the throttle decided)."""
        entry = self._missing.get(ext_seq)
        if entry is None:
            return False
        if entry.tries and now_ms - entry.sent_ms >= self.retry_interval_ms / 2:
            entry.sent_ms = now_ms - self.retry_interval_ms
            self._next_due_ms = now_ms
        return True

    def take_keyframe_request(self) -> bool:
        """True once after packets were given up (the owner sends a PLI)."""
        needed = self.keyframe_needed
        self.keyframe_needed = False
        return needed

    def reset(self) -> None:
        """Forget everything (e.g. the stream restarted with a new SSRC)."""
        self._missing.clear()
        self._highest = -1
        self._next_due_ms = _NEVER

    def _overflow(self) -> None:
        self.list_overflows += 1
        self.packets_given_up += len(self._missing)
        self._missing.clear()
        self.keyframe_needed = True

    def describe(self) -> dict[str, object]:
        return {
            "nacks_sent": self.nacks_sent,
            "packets_repaired": self.packets_repaired,
            "packets_given_up": self.packets_given_up,
            "missing": len(self._missing),
            "rtt_ms": round(self.rtt_ms, 1),
        }


class ResendBudget:
    """Caps what one subscriber's retransmissions may add to its downlink: at most ``share``
    of the bandwidth estimate over a sliding window (no estimate yet: no cap). Without it a
    congested link turns loss into NACKs into retransmissions into more loss."""

    __slots__ = ("_bytes", "_sent", "denied", "share", "window_ms")

    def __init__(self, share: float = 0.25, window_ms: float = 1000.0) -> None:
        self.share = share
        self.window_ms = window_ms
        self._sent: list[tuple[float, int]] = []  # (time, bytes), oldest first
        self._bytes = 0
        self.denied = 0

    def allow(self, size: int, now_ms: float, estimate_bps: float | None) -> bool:
        sent = self._sent
        cutoff = now_ms - self.window_ms
        drop = 0
        while drop < len(sent) and sent[drop][0] < cutoff:
            self._bytes -= sent[drop][1]
            drop += 1
        if drop:
            del sent[:drop]
        if estimate_bps is not None and (self._bytes + size) * 8000 / self.window_ms > self.share * estimate_bps:
            self.denied += 1
            return False
        sent.append((now_ms, size))
        self._bytes += size
        return True

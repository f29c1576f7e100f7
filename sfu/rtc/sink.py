"""A subscriber's RTP sink: every packet it is sent goes out here, stamped with the next
transport-wide sequence number when transport-cc is negotiated, recorded in the estimator's
send history, and counted.

``PySink`` is the reference: it stamps the packet (``sfu.media.rtp.with_transport_seq``) and
hands it to ``fallback`` (the subscriber's send through aiortc_glue), which returns the length
sent or -1. Its compiled twin ``Sink`` (sfu/rtc/_fastpath.c) does the same, and once
``attach``\\ ed to a transport's compiled SRTP session, socket and peer address (aiortc_glue
does that after a packet went out on a pair with a socket of its own), it protects and sends
with one ``sendto`` without Python while that pair stays the nominated one and the transport
connected; otherwise it uses ``fallback`` again. The compiled forwarding loop sends to a
``Sink`` without a Python call. ``make_sink`` chooses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from ..media.rtp import with_transport_seq
from . import fastpath

Fallback = Callable[[bytes], int]


class History(Protocol):
    def add(self, seq: int, send_ms: float, size: int) -> None: ...


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


class PySink:
    """The reference sink (see the module's docstring)."""

    __slots__ = ("_clock", "bytes_sent", "ext_id", "fallback", "history", "tw_seq")

    def __init__(self, history: History, clock: Callable[[], int] | None = None) -> None:
        self.history = history
        self._clock = clock or monotonic_ms
        self.ext_id = 0  # the transport-wide sequence number's header extension (0: none)
        self.tw_seq = 0
        self.bytes_sent = 0
        self.fallback: Fallback | None = None

    def send(self, packet: bytes) -> int:
        """Send one RTP packet with a plain 12-byte header; the length sent, or -1."""
        ext_id = self.ext_id
        tw = 0
        if ext_id:
            tw = self.tw_seq
            self.tw_seq = (tw + 1) & 0xFFFF
            packet = with_transport_seq(packet, ext_id, tw)
        fallback = self.fallback
        size = fallback(packet) if fallback is not None else -1
        if size < 0:
            return -1
        if ext_id:
            self.history.add(tw, self._clock(), size)
        self.bytes_sent += size
        return size

    def __call__(self, packet: bytes) -> bool:
        return self.send(packet) >= 0

    def attach(self, *args: object) -> None:
        """The compiled sink's direct path; the reference always uses ``fallback``."""

    def detach(self) -> None:
        pass

    @property
    def attached(self) -> bool:
        return False


def make_sink(history: History, clock: Callable[[], int] | None = None) -> PySink:
    """The compiled sink when the extension is built, else the reference. ``clock``: the
    send time in ms for the history (None: the monotonic clock, what the event loop uses)."""
    compiled = fastpath.compiled
    if compiled is None:
        return PySink(history, clock)
    sink: PySink = compiled.Sink(history, clock)
    return sink

"""Incoming datagrams, demultiplexed and checked before aioice and aiortc see them.

aioice hands every datagram that does not parse as STUN to the DTLS transport, from any
address; aiortc's receive loop then indexes ``data[0]`` (an empty datagram raises IndexError)
and any exception there ends the transport, and with it the participant. So every datagram
on an ICE socket passes ``_guarded_datagram_received`` first (installed on aioice's
StunProtocol class by ``create_peer_connection``, so from the first datagram of every
socket). It demultiplexes by the first byte as RFC 7983 does (``demux.classify``):

  STUN: handed to aioice if it parses (aioice would pass STUN that does not parse on to
      the DTLS transport);
  DTLS, SRTP/SRTCP: from the remote address of a candidate pair of this socket (the selected
      pair first, as a fast path; else any pair of the check list: the peer may send on the
      pair it chose before our nomination reaches it, and a DTLS handshake dropped there never
      completes);
  anything else: dropped.

SRTP/SRTCP that passes is decrypted and handed to the tap right here, in the same event-loop
callback (``DatagramGuard.deliver``, set by ``install_tap``): no attempt by aioice to parse it
as STUN, no asyncio.Queue hop, no wake-up of aiortc's receive task, no datetime clock. What
comes before the transport is connected, or while aioice's queue still holds datagrams (so
that order is kept), takes aiortc's way as before.

Each drop is counted by reason (``demux.DROP_REASONS``), per ICE connection
(``transport_drops``) and for the process (``demux.drop_totals``, in /metrics); so are
SRTP/SRTCP packets that fail authentication or the replay check (aiortc drops those itself,
uncounted), and packets on which our own RTP/RTCP handlers raised (logged; the transport
stays up).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import aioice.ice
import aioice.stun
import aioice.turn
import pylibsrtp
from aiortc.rtcdtlstransport import RTCDtlsTransport

from ..demux import DTLS, MAX_BACKLOG, RTP_MIN_BYTES, STUN, DropCounter, classify, count_drop, is_rtcp
from ..rate import TokenBucket
from .compat import missing_attributes, missing_names

logger = logging.getLogger(__name__)

_GUARD = "_sfu_guard"
_original_stun_datagram_received = aioice.ice.StunProtocol.datagram_received
_original_turn_datagram_received = aioice.turn.TurnClientMixin.datagram_received


class DatagramGuard(DropCounter):
    """One ICE connection's drop counters, and its selected pair as last seen."""

    __slots__ = ("_host", "_pair", "_port", "connection", "deliver", "delivered", "nominated", "rtcp_bucket")

    def __init__(self, connection: aioice.ice.Connection) -> None:
        super().__init__()
        self.connection = connection
        self.nominated = connection._nominated  # one dict for the connection's life
        self.rtcp_bucket: TokenBucket | None = None
        # Set by install_tap: decrypts and hands an SRTP/SRTCP datagram to the tap at once
        # (True), or declines (False: it takes aioice's queue and aiortc's receive loop).
        self.deliver: Callable[[bytes], bool] | None = None
        self.delivered = 0  # datagrams it took
        self._pair: Any = None
        self._host = ""
        self._port = -1

    def is_selected(self, protocol: Any, addr: tuple[Any, ...]) -> bool:
        pair = self.nominated.get(1)
        if pair is None:
            return False
        if pair is not self._pair:
            self._pair = pair
            self._host, self._port = pair.remote_addr
        return pair.protocol is protocol and addr[1] == self._port and addr[0] == self._host

    def is_checked(self, protocol: Any, addr: tuple[Any, ...]) -> bool:
        """From the remote address of a candidate pair of this socket."""
        remote = (addr[0], addr[1])
        return any(p.protocol is protocol and p.remote_addr == remote for p in self.connection._check_list)


def guard_of(connection: aioice.ice.Connection) -> DatagramGuard:
    guard: DatagramGuard | None = getattr(connection, _GUARD, None)
    if guard is None:
        guard = DatagramGuard(connection)
        setattr(connection, _GUARD, guard)
    return guard


def _guarded_datagram_received(self: aioice.ice.StunProtocol, data: bytes | str, addr: tuple[Any, ...]) -> None:
    # Per datagram, so the common case (SRTP/SRTCP from the selected pair, handed to the tap
    # at once) is one flat function: every call and attribute saved is paid ~100 times a
    # second per publisher, mostly with the caches cold.
    try:
        guard: DatagramGuard = self._sfu_guard  # type: ignore[attr-defined]
    except AttributeError:
        guard = self._sfu_guard = guard_of(self.receiver)  # type: ignore[attr-defined]
    if type(data) is not bytes:  # a datagram protocol gets bytes; the signature says otherwise
        data = data.encode() if isinstance(data, str) else bytes(data)
    if len(data) >= RTP_MIN_BYTES and 127 < data[0] < 192:  # SRTP/SRTCP: classify's hot path
        if not (guard.is_selected(self, addr) or guard.is_checked(self, addr)):
            guard.drop("unknown-address")
            return
        bucket = guard.rtcp_bucket
        if bucket is not None and is_rtcp(data) and not bucket.take(len(data), time.monotonic()):
            guard.drop("rtcp-rate")  # RTCP over the limit
            return
        deliver = guard.deliver
        if deliver is not None and deliver(data):
            guard.delivered += 1
            return
    else:
        kind = classify(data)  # one of demux's constants, or a drop reason
        if kind is STUN:
            try:
                aioice.stun.parse_message(data)
            except Exception:
                guard.drop("malformed-stun")
                return
            try:
                _original_stun_datagram_received(self, data, addr)
            except Exception:
                logger.debug("ICE: a STUN message was not handled", exc_info=True)
                guard.drop("malformed-stun")
            return
        if kind is DTLS:
            if not (guard.is_selected(self, addr) or guard.is_checked(self, addr)):
                guard.drop("unknown-address")
                return
        else:  # a drop reason (an SRTP-range datagram is too short)
            guard.drop(kind)
            return
    if self.receiver._queue.qsize() >= MAX_BACKLOG:
        guard.drop("backlog")
        return
    _original_stun_datagram_received(self, data, addr)


def _guarded_turn_datagram_received(self: Any, data: bytes | str, addr: tuple[str, int]) -> None:
    """What the TURN client's socket receives: aioice raises on some malformed STUN there."""
    try:
        _original_turn_datagram_received(self, data, addr)
    except Exception:
        logger.debug("TURN: a datagram was not handled", exc_info=True)
        count_drop("malformed-stun")


def guard_datagrams() -> None:
    """Check every datagram on every ICE socket before aioice and aiortc do (idempotent)."""
    aioice.ice.StunProtocol.datagram_received = _guarded_datagram_received  # type: ignore[method-assign]
    aioice.turn.TurnClientMixin.datagram_received = _guarded_turn_datagram_received  # type: ignore[method-assign]


class _CountedSrtpSession:
    """The receiving SRTP session of a transport, counting the packets it refuses.

    The session is aiortc's (pylibsrtp), or the compiled path's (``use_session``); either way
    a refused packet raises pylibsrtp.Error, which is what aiortc's receive loop expects."""

    __slots__ = ("_guard", "_refused", "_session")

    def __init__(self, session: pylibsrtp.Session, guard: DatagramGuard) -> None:
        self._session = session
        self._guard = guard
        self._refused: type[Exception] | tuple[type[Exception], ...] = pylibsrtp.Error

    def use_session(self, session: Any, refused: type[Exception]) -> None:
        """Unprotect with ``session`` from now on; it raises ``refused`` for a bad packet."""
        self._session = session
        self._refused = refused

    def uses_session_of(self, module: Any) -> bool:
        """Whether the session is the compiled module's."""
        return module is not None and isinstance(self._session, module.InboundSrtp)

    def unprotect(self, data: bytes) -> bytes:
        try:
            return self._session.unprotect(data)
        except self._refused as exc:
            self._guard.drop("srtp-auth")
            raise pylibsrtp.Error(str(exc)) from None

    def unprotect_rtcp(self, data: bytes) -> bytes:
        try:
            return self._session.unprotect_rtcp(data)
        except self._refused as exc:
            self._guard.drop("srtcp-auth")
            raise pylibsrtp.Error(str(exc)) from None


def count_srtp_failures(transport: RTCDtlsTransport) -> None:
    """Count what the transport's receiving SRTP session refuses, now or once it exists."""
    guard = guard_of(transport.transport._connection)

    def wrap() -> None:
        session = transport._rx_srtp
        if session is not None and not isinstance(session, _CountedSrtpSession):
            transport._rx_srtp = _CountedSrtpSession(session, guard)  # type: ignore[assignment]

    if transport._rx_srtp is not None:
        wrap()
        return
    original_setup = transport._setup_srtp

    def setup_srtp() -> None:
        original_setup()
        wrap()

    transport._setup_srtp = setup_srtp


def guard_if_any(connection: aioice.ice.Connection) -> DatagramGuard | None:
    """The connection's guard if a datagram or a tap made one."""
    guard: DatagramGuard | None = getattr(connection, _GUARD, None)
    return guard


def problems() -> list[str]:
    """What of aioice, aiortc and pylibsrtp this module relies on and is missing."""
    found = missing_attributes(
        [
            (aioice.ice, "StunProtocol"),
            (aioice.ice.StunProtocol, "datagram_received"),
            (aioice.ice.Connection, "_nominated"),
            (aioice.ice.Connection, "_check_list"),
            (aioice.ice.Connection, "_queue"),
            (aioice.ice.CandidatePair, "remote_addr"),
            (aioice.stun, "parse_message"),
            (aioice.turn.TurnClientMixin, "datagram_received"),
            (pylibsrtp.Session, "unprotect"),
            (pylibsrtp.Session, "unprotect_rtcp"),
            (RTCDtlsTransport, "_setup_srtp"),
            (RTCDtlsTransport, "_recv_next"),
        ]
    )
    found += missing_names(
        [RTCDtlsTransport.__init__, RTCDtlsTransport._setup_srtp], ["_rx_srtp"], "RTCDtlsTransport.{} is missing"
    )
    # The DTLS receive loop must still read SRTP through ``_rx_srtp.unprotect*`` (counted).
    found += missing_names(
        [RTCDtlsTransport._recv_next], ["unprotect", "unprotect_rtcp"], "RTCDtlsTransport._recv_next no longer calls {}"
    )
    found += missing_names([aioice.ice.StunProtocol.__init__], ["receiver"], "StunProtocol.{} is missing")
    found += missing_names([aioice.ice.CandidatePair.__init__], ["protocol"], "CandidatePair.{} is missing")
    return found

"""Every touch of aiortc's and aioice's private internals, in one place.

aiortc is an endpoint library: its receivers decode and its senders encode. The SFU uses it
only for what an SFU needs from a WebRTC stack (SDP offer/answer, ICE, DTLS, SRTP) and takes
the media path over:

- incoming SRTP is decrypted by aiortc, then handed to our tap *before* aiortc's RTP router,
  jitter buffer and decoder (``install_tap``); aiortc receivers are never started, so no
  decoder thread exists (``detach_receivers``);
- outgoing RTP and RTCP are written by us, protected with the transport's SRTP session and put
  on the selected ICE pair without awaiting a chain of coroutines (``send_packet``); aiortc
  senders are kept for negotiation (SSRC, msid) but their encode loop and their sender-report
  loop never run (``prepare_forwarding_sender``);
- the host candidate addresses can be pinned (``set_host_addresses``), which aioice cannot do;
- the answer can accept what aiortc does not implement (header extensions, RTCP feedback
  types such as transport-cc), and incoming datagrams carry the kernel's receive time for
  transport-cc feedback (``track_arrival_times``).

aiortc is pinned to one minor version in pyproject.toml. ``check_compatibility`` verifies every
internal used here; it runs at server start and in tests/unit/test_aiortc_glue.py, so an aiortc
upgrade that moves any of them fails loudly here and nowhere else.
"""

from __future__ import annotations

import asyncio
import errno as _errno
import inspect as _inspect
import logging
import random as _random
import socket as _socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aioice.candidate
import aioice.ice
import aioice.stun
import aioice.turn
import aiortc
import pylibsrtp
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpTransceiver
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtcpFeedback
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

from .demux import DROP_REASONS as DROP_REASONS
from .demux import DTLS, MAX_BACKLOG, SRTP, STUN, DropCounter, classify, count_drop, is_rtcp, sum_drops
from .demux import drop_totals as drop_totals
from .demux import transport_drops_metric as transport_drops_metric
from .ice_addresses import NetworkSettings as NetworkSettings
from .ice_addresses import announces, is_ipv4, keeps_private, pinned_for, port_order
from .kernel_stamp import kernel_stamp_reader
from .rate import TokenBucket

logger = logging.getLogger(__name__)

SUPPORTED_AIORTC = "1.16."

RtpHandler = Callable[[bytes, int], Awaitable[None]]
RtcpHandler = Callable[[bytes], Awaitable[None]]

_TAPPED = "_sfu_tapped"
_original_get_host_addresses = aioice.ice.get_host_addresses


class GlueError(RuntimeError):
    """The installed aiortc/aioice does not have an internal this module relies on."""


def check_compatibility() -> None:
    """Raise GlueError unless every aiortc/aioice internal used here is present."""
    problems: list[str] = []
    if not aiortc.__version__.startswith(SUPPORTED_AIORTC):
        problems.append(f"aiortc {aiortc.__version__} is not {SUPPORTED_AIORTC}x")
    checks: list[tuple[Any, str]] = [
        (aioice.ice, "get_host_addresses"),
        (aioice.ice, "StunProtocol"),
        (aioice.ice.Connection, "_nominated"),
        (aioice.ice.Connection, "data_received"),
        (aioice.ice.Connection, "recvfrom"),
        (aioice.ice.StunProtocol, "datagram_received"),
        (aioice.ice.Connection, "_check_list"),
        (aioice.ice.Connection, "_queue"),
        (aioice.ice.CandidatePair, "remote_addr"),
        (aioice.stun, "parse_message"),
        (aioice.turn.TurnClientMixin, "datagram_received"),
        (pylibsrtp.Session, "unprotect"),
        (pylibsrtp.Session, "unprotect_rtcp"),
        (RTCDtlsTransport, "_setup_srtp"),
        (RTCDtlsTransport, "_handle_rtp_data"),
        (RTCDtlsTransport, "_handle_rtcp_data"),
        (RTCDtlsTransport, "_recv_next"),
        (RTCRtpSender, "_run_rtp"),
        (RTCRtpSender, "_run_rtcp"),
        (RTCRtpReceiver, "receive"),
        (State, "CONNECTED"),
    ]
    for owner, name in checks:
        # Instance attributes (like Connection._nominated) are checked on a fresh object.
        if hasattr(owner, name):
            continue
        if owner is aioice.ice.Connection and hasattr(aioice.ice.Connection(ice_controlling=True), name):
            continue
        problems.append(f"{getattr(owner, '__name__', owner)}.{name} is missing")
    # Sender and receiver state that the replacements below must drive.
    for attr in ("__rtp_started", "__rtp_exited", "__rtcp_started", "__rtcp_exited"):
        if f"_RTCRtpSender{attr}" not in RTCRtpSender.__init__.__code__.co_names:
            problems.append(f"RTCRtpSender.{attr} is missing")
    for attr in ("_headerExtensions", "_codecs"):
        if attr not in RTCRtpTransceiver.__init__.__code__.co_names:
            problems.append(f"RTCRtpTransceiver.{attr} is missing")
    for attr in ("_ssrc", "_rtx_ssrc", "_stream_id"):
        if attr not in RTCRtpSender.__init__.__code__.co_names:
            problems.append(f"RTCRtpSender.{attr} is missing")
    for attr in ("_state", "_tx_srtp", "_rx_srtp"):
        if attr not in RTCDtlsTransport.__init__.__code__.co_names + RTCDtlsTransport._setup_srtp.__code__.co_names:
            problems.append(f"RTCDtlsTransport.{attr} is missing")
    # The DTLS receive loop must still read SRTP through ``_rx_srtp.unprotect*`` (counted).
    for name in ("unprotect", "unprotect_rtcp"):
        if name not in RTCDtlsTransport._recv_next.__code__.co_names:
            problems.append(f"RTCDtlsTransport._recv_next no longer calls {name}")
    if "receiver" not in aioice.ice.StunProtocol.__init__.__code__.co_names:
        problems.append("StunProtocol.receiver is missing")
    if "protocol" not in aioice.ice.CandidatePair.__init__.__code__.co_names:
        problems.append("CandidatePair.protocol is missing")
    for attr in ("_closing", "_query_consent_task"):
        if attr not in aioice.ice.Connection.__init__.__code__.co_names:
            problems.append(f"Connection.{attr} is missing")
    if "_query_consent_task" not in _original_connect.__code__.co_names:
        problems.append("Connection.connect no longer starts _query_consent_task")
    # The connect task that _PeerConnection ends quietly once closed.
    if not hasattr(RTCPeerConnection, "_RTCPeerConnection__connect"):
        problems.append("RTCPeerConnection.__connect is missing")
    for method in (RTCPeerConnection.setLocalDescription, RTCPeerConnection.setRemoteDescription):
        if "_RTCPeerConnection__connect" not in method.__code__.co_names:
            problems.append(f"RTCPeerConnection.{method.__name__} no longer starts __connect")
    if problems:
        raise GlueError("aiortc internals changed: " + "; ".join(problems))


# -- ICE host candidates ------------------------------------------------------------------


def set_host_addresses(addresses: Sequence[str] | None) -> None:
    """Pin the addresses aioice gathers host candidates on (None: every interface).

    aioice never gathers 127.0.0.1; pinning it makes loopback calls possible, and pinning
    one interface is what a server with several interfaces needs.
    """
    if not addresses:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return
    pinned = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return pinned_for(pinned, use_ipv4, use_ipv6)

    aioice.ice.get_host_addresses = get_host_addresses


# -- incoming datagrams: demultiplexed and checked before aiortc sees them ----------------
#
# aioice hands every datagram that does not parse as STUN to the DTLS transport, from any
# address; aiortc's receive loop then indexes ``data[0]`` (an empty datagram raises IndexError)
# and any exception there ends the transport, and with it the participant. So every datagram
# on an ICE socket passes ``_guarded_datagram_received`` first (installed on aioice's
# StunProtocol class by ``create_peer_connection``, so from the first datagram of every
# socket). It demultiplexes by the first byte as RFC 7983 does (``demux.classify``):
#
#   STUN: handed to aioice if it parses (aioice would pass STUN that does not parse on to
#       the DTLS transport);
#   DTLS: from the selected pair, or before ICE selected one from a pair being checked;
#   SRTP/SRTCP: from the selected pair only;
#   anything else: dropped.
#
# Each drop is counted by reason (``demux.DROP_REASONS``), per ICE connection
# (``transport_drops``) and for the process (``demux.drop_totals``, in /metrics); so are
# SRTP/SRTCP packets that fail authentication or the replay check (aiortc drops those itself,
# uncounted), and packets on which our own RTP/RTCP handlers raised (logged; the transport
# stays up).

_GUARD = "_sfu_guard"
_original_stun_datagram_received = aioice.ice.StunProtocol.datagram_received
_original_turn_datagram_received = aioice.turn.TurnClientMixin.datagram_received


class DatagramGuard(DropCounter):
    """One ICE connection's drop counters, and its selected pair as last seen."""

    __slots__ = ("_host", "_pair", "_port", "connection", "rtcp_bucket")

    def __init__(self, connection: aioice.ice.Connection) -> None:
        super().__init__()
        self.connection = connection
        self.rtcp_bucket: TokenBucket | None = None
        self._pair: Any = None
        self._host = ""
        self._port = -1

    def is_selected(self, protocol: Any, addr: tuple[Any, ...]) -> bool:
        pair = self.connection._nominated.get(1)
        if pair is None:
            return False
        if pair is not self._pair:
            self._pair = pair
            self._host, self._port = pair.remote_addr
        return pair.protocol is protocol and addr[1] == self._port and addr[0] == self._host

    def is_checked(self, protocol: Any, addr: tuple[Any, ...]) -> bool:
        """From a candidate pair of this socket (before ICE has selected one)."""
        remote = (addr[0], addr[1])
        return any(p.protocol is protocol and p.remote_addr == remote for p in self.connection._check_list)


def _guard_of(connection: aioice.ice.Connection) -> DatagramGuard:
    guard: DatagramGuard | None = getattr(connection, _GUARD, None)
    if guard is None:
        guard = DatagramGuard(connection)
        setattr(connection, _GUARD, guard)
    return guard


def _guarded_datagram_received(self: aioice.ice.StunProtocol, data: bytes | str, addr: tuple[Any, ...]) -> None:
    if isinstance(data, str):  # a datagram protocol gets bytes; the signature says otherwise
        data = data.encode()
    guard = _guard_of(self.receiver)
    kind = classify(data)  # one of demux's constants, or a drop reason
    if kind is SRTP:  # the hot path
        if not guard.is_selected(self, addr):
            guard.drop("not-selected-pair")
            return
        bucket = guard.rtcp_bucket
        if bucket is not None and is_rtcp(data) and not bucket.take(len(data), time.monotonic()):
            guard.drop("rtcp-rate")  # RTCP over the limit
            return
    elif kind is STUN:
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
    elif kind is DTLS:
        if not (guard.is_selected(self, addr) or (not self.receiver._nominated and guard.is_checked(self, addr))):
            guard.drop("not-selected-pair")
            return
    else:
        guard.drop(kind)  # the reason
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
    """The receiving SRTP session of a transport, counting the packets it refuses."""

    __slots__ = ("_guard", "_session")

    def __init__(self, session: pylibsrtp.Session, guard: DatagramGuard) -> None:
        self._session = session
        self._guard = guard

    def unprotect(self, data: bytes) -> bytes:
        try:
            return self._session.unprotect(data)
        except pylibsrtp.Error:
            self._guard.drop("srtp-auth")
            raise

    def unprotect_rtcp(self, data: bytes) -> bytes:
        try:
            return self._session.unprotect_rtcp(data)
        except pylibsrtp.Error:
            self._guard.drop("srtcp-auth")
            raise


def _count_srtp_failures(transport: RTCDtlsTransport) -> None:
    """Count what the transport's receiving SRTP session refuses, now or once it exists."""
    guard = _guard_of(transport.transport._connection)

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


def limit_rtcp(pc: RTCPeerConnection, max_bps: int) -> None:
    """Drop (and count) the RTCP that ``pc``'s transports receive over ``max_bps``, before it
    is decrypted (bursts of one second's worth). Idempotent; call after every negotiation step."""
    for transport in dtls_transports(pc):
        guard = _guard_of(transport.transport._connection)
        if guard.rtcp_bucket is None:
            guard.rtcp_bucket = TokenBucket(max_bps, time.monotonic())


def transport_drops(pc: RTCPeerConnection) -> dict[str, int]:
    """What ``pc``'s transports dropped before aiortc, by reason (see demux.DROP_REASONS)."""
    guards = (getattr(transport.transport._connection, _GUARD, None) for transport in dtls_transports(pc))
    return sum_drops(guard for guard in guards if guard is not None)


# -- peer connections ---------------------------------------------------------------------


_original_connect = aioice.ice.Connection.connect


async def _connect(self: aioice.ice.Connection) -> None:
    """aioice's ``connect``, failing if the connection was closed while it checked.

    Closed after its check list completed but before ``connect`` resumed, aioice's method
    would return as if connected and start consent checks on the closed connection: a task
    that nothing cancels any more and that never ends (the connection has no nominated pair
    left whose consent could expire), keeping the connection alive for as long as the
    process runs.
    """
    await _original_connect(self)
    if self._closing:
        consent, self._query_consent_task = self._query_consent_task, None
        if consent is not None:
            consent.cancel()
        raise ConnectionError("ICE connection closed while connecting")


def guard_ice_close() -> None:
    """Make closing an ICE connection at any moment of connecting end it (idempotent)."""
    aioice.ice.Connection.connect = _connect  # type: ignore[method-assign]


class _PeerConnection(RTCPeerConnection):
    """An RTCPeerConnection that can be closed at any moment of connecting.

    aiortc connects (ICE, then DTLS, then senders) from a task that setLocalDescription and
    setRemoteDescription start and nobody awaits. That task checks for a close only before it
    starts: closed while it waits (on the ICE checks, the DTLS handshake), it goes on to the
    next bundled m-section and starts the transport the close has just stopped, which raises
    ``InvalidStateError: RTCIceTransport is closed``, reported by the event loop as "Task
    exception was never retrieved". Once the connection is closed, what its connect task
    raises is the close's doing: it ends the task quietly. Anything raised while the
    connection is open still surfaces as before.
    """

    async def _RTCPeerConnection__connect(self) -> None:
        try:
            await RTCPeerConnection._RTCPeerConnection__connect(self)  # type: ignore[attr-defined]
        except Exception:
            if self.signalingState != "closed":
                raise
            logger.debug("a peer connection was closed while it connected", exc_info=True)


def create_peer_connection(ice_servers: Sequence[dict[str, Any]] = ()) -> RTCPeerConnection:
    """An RTCPeerConnection that bundles everything on one transport.

    ``ice_servers`` are W3C-style dicts ({"urls": ..., "username": ..., "credential": ...}).
    """
    guard_datagrams()
    guard_ice_close()
    servers = [
        RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential")) for s in ice_servers
    ]
    return _PeerConnection(RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


def dtls_transports(pc: RTCPeerConnection) -> list[RTCDtlsTransport]:
    seen: list[RTCDtlsTransport] = []
    for t in pc.getTransceivers():
        transport = t.receiver.transport
        if transport not in seen:
            seen.append(transport)
    return seen


def install_tap(pc: RTCPeerConnection, on_rtp: RtpHandler, on_rtcp: RtcpHandler) -> None:
    """Route every decrypted RTP/RTCP packet of ``pc`` to our handlers, before aiortc's router.

    ``on_rtp(data, arrival_ms)`` and ``on_rtcp(data)`` receive the plain packets. Idempotent;
    call it after every negotiation step (a transport may be created by a new transceiver).
    """
    for transport in dtls_transports(pc):
        if getattr(transport, _TAPPED, False):
            continue

        guard = _guard_of(transport.transport._connection)

        # An exception here would end aiortc's receive loop, and the transport with it.
        async def handle_rtp(data: bytes, arrival_time_ms: int, guard: DatagramGuard = guard) -> None:
            try:
                await on_rtp(data, arrival_time_ms)
            except Exception:
                guard.drop("handler-error")
                logger.exception("an RTP packet was not handled")

        async def handle_rtcp(data: bytes, guard: DatagramGuard = guard) -> None:
            try:
                await on_rtcp(data)
            except Exception:
                guard.drop("handler-error")
                logger.exception("an RTCP packet was not handled")

        _count_srtp_failures(transport)

        transport._handle_rtp_data = handle_rtp  # type: ignore[method-assign]
        transport._handle_rtcp_data = handle_rtcp  # type: ignore[method-assign]
        setattr(transport, _TAPPED, True)


def track_arrival_times(pc: RTCPeerConnection) -> None:
    """Note when each datagram of ``pc`` arrived, for ``arrival_us``.

    aiortc's arrival time is taken after an asyncio.Queue hop and a few awaits per packet,
    and even the moment the event loop reads a datagram is late by however long the loop
    was busy: a burst (Chrome's bandwidth probes) is then read in one go, its spacing lost,
    and transport-cc feedback built on that reports our process's stalls as the network's.
    So the time is the kernel's receive timestamp of the datagram (``SIOCGSTAMP`` on the
    candidate's socket, read in ``datagram_received`` right after the event loop's
    ``recvfrom``; the loop's clock when the kernel has none). aioice passes each datagram on
    to ``Connection.data_received`` and the DTLS transport takes them back one at a time
    with ``Connection.recvfrom``; each returned datagram is matched (by identity) to its
    stamp, which stays on the DTLS transport while aiortc decrypts it and calls our tap.
    Wall-clock microseconds. Idempotent; call after the local description is set (the
    candidate sockets exist).
    """
    for transport in dtls_transports(pc):
        connection = transport.transport._connection
        if getattr(connection, _TAPPED, False):
            continue
        _stamp_arrivals(transport, connection)
        setattr(connection, _TAPPED, True)


def _stamp_arrivals(transport: RTCDtlsTransport, connection: aioice.ice.Connection) -> None:
    stamps: deque[tuple[bytes, int]] = deque()
    clock = time.time_ns
    current: list[int | None] = [None]  # set by a socket's datagram_received, used just below
    original_received = connection.data_received
    original_recvfrom = connection.recvfrom

    for protocol in connection._protocols:
        socket_transport = getattr(protocol, "transport", None)
        if socket_transport is None or getattr(protocol, _TAPPED, False):
            continue
        try:  # a TURN-relayed candidate's transport has no socket of its own
            sock = socket_transport.get_extra_info("socket")
        except Exception:
            sock = None
        kernel_stamp = kernel_stamp_reader(sock)
        original_datagram = protocol.datagram_received

        def datagram_received(
            data: bytes | str, addr: tuple[Any, ...], original: Any = original_datagram, stamp: Any = kernel_stamp
        ) -> None:
            current[0] = stamp()
            try:
                original(data, addr)
            finally:
                current[0] = None

        protocol.datagram_received = datagram_received  # type: ignore[method-assign]
        setattr(protocol, _TAPPED, True)

    def data_received(data: bytes, component: int) -> None:
        if len(stamps) > 10_000:  # nobody reads: do not grow without bound
            stamps.clear()
        at_us = current[0]
        stamps.append((data, at_us if at_us is not None else clock() // 1000))
        original_received(data, component)

    async def recvfrom() -> tuple[bytes, int]:
        result = await original_recvfrom()
        data = result[0]
        while stamps:
            item, at_us = stamps.popleft()
            if item is data:
                transport._sfu_arrival_us = at_us  # type: ignore[attr-defined]
                break
        return result

    connection.data_received = data_received  # type: ignore[method-assign]
    connection.recvfrom = recvfrom  # type: ignore[method-assign]


def arrival_us(transport: RTCDtlsTransport) -> int:
    """When the datagram being handled now arrived (wall-clock µs, see
    ``track_arrival_times``); now if arrival times are not tracked."""
    at_us: int | None = getattr(transport, "_sfu_arrival_us", None)
    return at_us if at_us is not None else time.time_ns() // 1000


def accept_header_extensions(pc: RTCPeerConnection, offer: Any, uris: Sequence[str]) -> None:
    """Answer the offer's header extensions with these URIs too (aiortc knows only a few).

    ``offer`` is the parsed remote offer (aiortc.sdp.SessionDescription). Call between
    setRemoteDescription and createAnswer; the answer then carries the offer's ids.
    """
    by_mid = {t.mid: t for t in pc.getTransceivers()}
    for media in offer.media:
        transceiver = by_mid.get(media.rtp.muxId)
        if transceiver is None:
            continue
        present = {ext.uri for ext in transceiver._headerExtensions}
        for ext in media.rtp.headerExtensions:
            if ext.uri in uris and ext.uri not in present:
                transceiver._headerExtensions.append(ext)


def accept_rtcp_feedback(pc: RTCPeerConnection, offer: Any, feedback_type: str) -> None:
    """Answer ``a=rtcp-fb:<pt> <feedback_type>`` for every codec the offer lists it for
    (aiortc keeps only the feedback types it implements itself, e.g. not transport-cc).

    Call between setRemoteDescription and createAnswer, like accept_header_extensions.
    """
    by_mid = {t.mid: t for t in pc.getTransceivers()}
    for media in offer.media:
        transceiver = by_mid.get(media.rtp.muxId)
        if transceiver is None:
            continue
        offered = {c.payloadType for c in media.rtp.codecs if any(fb.type == feedback_type for fb in c.rtcpFeedback)}
        for codec in transceiver._codecs:
            if codec.payloadType in offered and not any(fb.type == feedback_type for fb in codec.rtcpFeedback):
                codec.rtcpFeedback.append(RTCRtcpFeedback(type=feedback_type))


def detach_receivers(pc: RTCPeerConnection) -> None:
    """Make sure no aiortc receiver of ``pc`` ever starts (no decoder thread, no RTCP loop).

    Call right after setRemoteDescription/setLocalDescription and before yielding to the
    event loop: aiortc starts receivers from a task it schedules there.
    """
    for t in pc.getTransceivers():
        receiver = t.receiver
        if getattr(receiver, _TAPPED, False):
            continue

        async def receive(parameters: object) -> None:
            return None

        receiver.receive = receive  # type: ignore[method-assign]
        setattr(receiver, _TAPPED, True)


def prepare_forwarding_sender(transceiver: RTCRtpTransceiver, stream_id: str, track_id: str) -> tuple[int, int]:
    """Turn an aiortc sender into a pure negotiation object; returns (ssrc, rtx_ssrc).

    ``stream_id``/``track_id`` become the m-section's ``a=msid``. The sender's RTP loop (which
    would pull frames and encode them) and its RTCP loop (which would send sender reports
    that know nothing of our packets) are replaced by tasks that just wait to be cancelled.
    """
    sender = transceiver.sender
    sender._stream_id = stream_id
    sender._track_id = track_id
    if not getattr(sender, _TAPPED, False):

        def idle(started: str, exited: str) -> Callable[..., Awaitable[None]]:
            async def run(*args: object) -> None:
                getattr(sender, started).set()
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    pass
                finally:
                    getattr(sender, exited).set()

            return run

        sender._run_rtp = idle("_RTCRtpSender__rtp_started", "_RTCRtpSender__rtp_exited")  # type: ignore[method-assign,assignment]
        sender._run_rtcp = idle("_RTCRtpSender__rtcp_started", "_RTCRtpSender__rtcp_exited")  # type: ignore[method-assign,assignment]
        setattr(sender, _TAPPED, True)
    return sender._ssrc, sender._rtx_ssrc


# -- sending ------------------------------------------------------------------------------


def is_connected(transport: RTCDtlsTransport) -> bool:
    return transport._state is State.CONNECTED


_pending_sends: set[asyncio.Future[Any]] = set()  # TURN sends in flight (kept referenced)


def send_packet(transport: RTCDtlsTransport, data: bytes, rtcp: bool = False) -> bool:
    """Protect and send one RTP (or RTCP) packet now; False if it could not be sent."""
    if transport._state is not State.CONNECTED:
        return False
    try:
        srtp = transport._tx_srtp
        protected = srtp.protect_rtcp(data) if rtcp else srtp.protect(data)
    except pylibsrtp.Error:
        return False
    pair = transport.transport._connection._nominated.get(1)
    if pair is None:
        return False
    protocol = pair.protocol
    try:
        if type(protocol) is aioice.ice.StunProtocol:
            protocol.transport.sendto(protected, pair.remote_addr)
        else:  # TURN-relayed pair: its send is a coroutine
            task = asyncio.ensure_future(protocol.send_data(protected, pair.remote_addr))
            _pending_sends.add(task)
            task.add_done_callback(_pending_sends.discard)
    except (OSError, AttributeError):
        return False
    return True


# =========================================================================================
# -- ICE behind NAT: UDP port range and announced address (deployment) -------------------
#
# aioice binds each host candidate with ``create_datagram_endpoint(local_addr=(address, 0))``
# in ``Connection.get_component_candidates`` and advertises the bound address. A server in a
# container or behind 1:1 NAT needs two things aioice cannot do:
#
# - a UDP port range (so the range can be published/forwarded): host sockets are bound to a
#   free port of [port_min, port_max] instead of port 0; server-reflexive candidates are then
#   queried over those sockets with aioice's own ``server_reflexive_candidate``, and TURN
#   (whose client socket only talks to the TURN server) is left to aioice;
# - an announced address (what mediasoup calls ``announcedAddress``, LiveKit ``node_ip`` and
#   Janus ``nat_1_1_mapping``): the host candidate keeps its socket but advertises the public
#   address (same port: 1:1 NAT maps ports unchanged). ``keep_private_host`` also keeps the
#   private candidate, like Janus' ``keep_private_host``, for clients on the same LAN.
#
# Both are process-wide, like ``set_host_addresses`` (aioice has no per-connection hook and
# the server is one process); ``create_app`` sets them from its Config every time.
#
# The replacement also closes what a gather opened when the connection was closed meanwhile
# (a participant leaving while its offer or answer is made): aioice's ``close()`` only closes
# the sockets it already knows of, and a later one would stay open, registered in the event
# loop and keeping its connection alive, for as long as the process runs.
# =========================================================================================

_original_get_component_candidates = aioice.ice.Connection.get_component_candidates
# What our replacement assumes of aioice's method; checked by check_network_compatibility.
_GATHER_MARKERS = ("local_addr=(address, 0)", "self._protocols += host_protocols", "server_reflexive_candidate")


_network = NetworkSettings()


def check_network_compatibility() -> None:
    """Raise GlueError unless the aioice internals used in this section are present."""
    problems: list[str] = []
    for owner, name in [
        (aioice.ice, "server_reflexive_candidate"),
        (aioice.ice, "StunProtocol"),
        (aioice.ice.Connection, "get_component_candidates"),
        (aioice.candidate, "candidate_foundation"),
        (aioice.candidate, "candidate_priority"),
        (aioice.turn, "UDP_SOCKET_BUFFER_SIZE"),
    ]:
        if not hasattr(owner, name):
            problems.append(f"{getattr(owner, '__name__', owner)}.{name} is missing")
    try:
        source = _inspect.getsource(_original_get_component_candidates)
    except (OSError, TypeError):
        source = ""
    problems += [f"get_component_candidates no longer has {m!r}" for m in _GATHER_MARKERS if m not in source]
    for attribute in ("_protocols", "_closing"):
        if attribute not in aioice.ice.Connection.__init__.__code__.co_names:
            problems.append(f"Connection.{attribute} is missing")
    params = list(_inspect.signature(aioice.candidate.Candidate).parameters)
    if params[:7] != ["foundation", "component", "transport", "priority", "host", "port", "type"]:
        problems.append(f"Candidate() takes {params}")
    if problems:
        raise GlueError("aioice internals changed: " + "; ".join(problems))


def configure_network(
    port_min: int | None = None,
    port_max: int | None = None,
    announced_address: str | None = None,
    keep_private_host: bool = False,
) -> None:
    """Bind ICE host candidates in [port_min, port_max] and/or advertise ``announced_address``
    for them. All None: aioice's own gathering (sockets opened after a close still closed)."""
    global _network
    _network = NetworkSettings(port_min, port_max, announced_address, keep_private_host)
    check_network_compatibility()
    aioice.ice.Connection.get_component_candidates = _get_component_candidates  # type: ignore[method-assign]


def network_settings() -> NetworkSettings:
    return _network


async def _bind_in_range(
    connection: aioice.ice.Connection, address: str, port_min: int, port_max: int
) -> tuple[asyncio.DatagramTransport, aioice.ice.StunProtocol] | None:
    """A UDP endpoint on ``address`` at a free port of the range (random start), or None."""
    loop = asyncio.get_running_loop()
    for port in port_order(port_min, port_max, _random.randrange(port_max - port_min + 1)):
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: aioice.ice.StunProtocol(connection), local_addr=(address, port)
            )
        except OSError as exc:
            if exc.errno in (_errno.EADDRINUSE, _errno.EACCES):
                continue
            raise
        return transport, protocol
    return None


async def _gather_in_port_range(
    connection: aioice.ice.Connection,
    component: int,
    addresses: list[str],
    timeout: int,
    net: NetworkSettings,
) -> list[aioice.candidate.Candidate]:
    assert net.port_min is not None and net.port_max is not None
    candidates: list[aioice.candidate.Candidate] = []
    host_protocols: list[aioice.ice.StunProtocol] = []
    for address in addresses:
        try:
            bound = await _bind_in_range(connection, address, net.port_min, net.port_max)
        except OSError as exc:
            logger.warning("ICE: could not bind to %s: %s", address, exc)
            continue
        if bound is None:
            logger.warning("ICE: no free UDP port in %d-%d on %s", net.port_min, net.port_max, address)
            continue
        transport, protocol = bound
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, aioice.turn.UDP_SOCKET_BUFFER_SIZE)
        host, port = transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = aioice.candidate.Candidate(
            foundation=aioice.candidate.candidate_foundation("host", "udp", host),
            component=component,
            transport="udp",
            priority=aioice.candidate.candidate_priority(component, "host"),
            host=host,
            port=port,
            type="host",
        )
        candidates.append(protocol.local_candidate)
        host_protocols.append(protocol)
    connection._protocols += host_protocols
    # Server-reflexive candidates over our sockets; TURN exactly as aioice does it (called
    # with no addresses, aioice's method gathers nothing but the relayed candidate).
    tasks = []
    if connection.stun_server:
        for protocol in host_protocols:
            if is_ipv4(protocol.local_candidate.host):
                tasks.append(
                    asyncio.ensure_future(aioice.ice.server_reflexive_candidate(protocol, connection.stun_server))
                )
    relayed = asyncio.ensure_future(_original_get_component_candidates(connection, component, [], timeout))
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in done:
            if task.exception() is None:
                candidates.append(task.result()[0])
        for task in pending:
            task.cancel()
    candidates += await relayed
    return candidates


def _announce(
    connection: aioice.ice.Connection, candidates: list[aioice.candidate.Candidate], net: NetworkSettings
) -> list[aioice.candidate.Candidate]:
    """Advertise the announced address for every host candidate of its IP family."""
    announced = net.announced_address
    assert announced is not None
    out: list[aioice.candidate.Candidate] = []
    for candidate in candidates:
        if candidate.type != "host" or not announces(candidate.host, announced):
            out.append(candidate)
            continue
        public = aioice.candidate.Candidate(
            foundation=aioice.candidate.candidate_foundation("host", "udp", announced),
            component=candidate.component,
            transport=candidate.transport,
            priority=candidate.priority,
            host=announced,
            port=candidate.port,
            type="host",
        )
        for protocol in connection._protocols:
            if protocol.local_candidate is candidate:
                protocol.local_candidate = public
        out.append(public)
        if keeps_private(candidate.host, announced, net.keep_private_host):
            candidate.priority -= 1  # same socket: prefer the public one
            out.append(candidate)
    return out


async def _get_component_candidates(
    self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5
) -> list[aioice.candidate.Candidate]:
    net = _network
    if net.port_min is not None:
        candidates = await _gather_in_port_range(self, component, addresses, timeout, net)
    else:
        candidates = await _original_get_component_candidates(self, component, addresses, timeout)
    if self._closing:
        # Closed while gathering: close() has already closed the sockets it knew of, and the
        # ones opened since would stay registered in the event loop (keeping this connection
        # alive) for good.
        protocols, self._protocols = self._protocols, []
        for protocol in protocols:
            await protocol.close()
        return []
    if net.announced_address:
        candidates = _announce(self, candidates, net)
    return candidates

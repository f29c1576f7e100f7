"""Peer connections: created, negotiated, tapped and sent on as an SFU needs.

- incoming SRTP is decrypted by aiortc, then handed to our tap *before* aiortc's RTP router,
  jitter buffer and decoder (``install_tap``); aiortc receivers are never started, so no
  decoder thread exists (``detach_receivers``);
- outgoing RTP and RTCP are written by us, protected with the transport's SRTP session and put
  on the selected ICE pair without awaiting a chain of coroutines (``send_packet``); aiortc
  senders are kept for negotiation (SSRC, msid) but their encode loop and their sender-report
  loop never run (``prepare_forwarding_sender``);
- the answer can accept what aiortc does not implement (header extensions, RTCP feedback
  types such as transport-cc: ``accept_header_extensions``, ``accept_rtcp_feedback``);
- a peer connection can be closed at any moment of connecting (``create_peer_connection``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aioice.ice
import pylibsrtp
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpTransceiver
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcdtlstransport import SRTP_PROFILES, RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtcpFeedback
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

from .. import fastpath
from ..demux import sum_drops
from ..rate import TokenBucket
from .compat import TAPPED, missing_attributes, missing_names
from .datagrams import (
    DatagramGuard,
    _CountedSrtpSession,
    count_srtp_failures,
    guard_datagrams,
    guard_if_any,
    guard_of,
)
from .ice import guard_ice_close

logger = logging.getLogger(__name__)

RtpHandler = Callable[[bytes, int], Awaitable[None]]
RtcpHandler = Callable[[bytes], Awaitable[None]]
# A plain function the direct receive path calls with each decrypted RTP packet (no
# coroutine, no arrival time: the handler reads its own clock).
RtpNowHandler = Callable[[bytes], None]


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
    """The connection's DTLS transports: the media's, then the data channels' (SCTP) if it
    has its own (a connection may carry data channels only)."""
    seen: list[RTCDtlsTransport] = []
    for t in pc.getTransceivers():
        transport = t.receiver.transport
        if transport not in seen:
            seen.append(transport)
    sctp = pc.sctp
    if sctp is not None and sctp.transport not in seen:
        seen.append(sctp.transport)
    return seen


def install_tap(
    pc: RTCPeerConnection, on_rtp: RtpHandler, on_rtcp: RtcpHandler, on_rtp_now: RtpNowHandler | None = None
) -> None:
    """Route every decrypted RTP/RTCP packet of ``pc`` to our handlers, before aiortc's router.

    ``on_rtp(data, arrival_ms)`` and ``on_rtcp(data)`` receive the plain packets. With
    ``on_rtp_now`` (a plain function doing what ``on_rtp`` does), the packets decrypted in
    the socket's callback (``DatagramGuard.deliver``) go to it directly: no coroutine to
    create and step per packet, no arrival clock read. Idempotent; call it after every
    negotiation step (a transport may be created by a new transceiver).
    """
    for transport in dtls_transports(pc):
        if getattr(transport, TAPPED, False):
            continue

        guard = guard_of(transport.transport._connection)

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

        count_srtp_failures(transport)
        _prepare_fast_send(transport)

        transport._handle_rtp_data = handle_rtp  # type: ignore[method-assign]
        transport._handle_rtcp_data = handle_rtcp  # type: ignore[method-assign]
        guard.deliver = _direct_delivery(transport, on_rtp, on_rtcp, guard, on_rtp_now)
        setattr(transport, TAPPED, True)


_NTP_OFFSET_S = 2208988800  # 1900 to 1970: aiortc's arrival_time_ms counts from the NTP epoch


def _direct_delivery(
    transport: RTCDtlsTransport,
    on_rtp: RtpHandler,
    on_rtcp: RtcpHandler,
    guard: DatagramGuard,
    on_rtp_now: RtpNowHandler | None = None,
) -> Callable[[bytes], bool]:
    """Decrypt one SRTP/SRTCP datagram and run the tap on it now, as aiortc's receive loop
    would after the queue hop (``_recv_next``); False when it must take that way instead."""
    connection = transport.transport._connection
    queue = connection._queue
    connected = State.CONNECTED
    srtp_error = pylibsrtp.Error

    pending = queue._queue  # type: ignore[attr-defined]  # asyncio.Queue's deque: len() is qsize()

    def deliver(data: bytes) -> bool:
        srtp: Any = transport._rx_srtp  # a _CountedSrtpSession once count_srtp_failures wrapped it
        if srtp is None or transport._state is not connected or pending:
            return False
        if 192 <= data[1] <= 223:  # RTCP (RFC 5761)
            try:
                coro = on_rtcp(srtp.unprotect_rtcp(data))
            except (srtp_error, IndexError):
                return True  # refused (and counted) by the SRTP session: dropped, as aiortc does
            _run_now(coro, guard)
            return True
        if on_rtp_now is None or type(srtp) is not _CountedSrtpSession:
            try:
                coro = on_rtp(srtp.unprotect(data), int((time.time() + _NTP_OFFSET_S) * 1000))
            except (srtp_error, IndexError):
                return True
            _run_now(coro, guard)
            return True
        # The hot path: the counted session's own (compiled or pylibsrtp) session, counted
        # here, and the plain handler.
        try:
            plain = srtp._session.unprotect(data)
        except srtp._refused:
            guard.drop("srtp-auth")
            return True
        try:
            on_rtp_now(plain)
        except Exception:
            guard.drop("handler-error")
            logger.exception("an RTP packet was not handled")
        return True

    return deliver


def _run_now(coro: Awaitable[None], guard: DatagramGuard) -> None:
    """Run a tap coroutine to its end now; if it waits for something (the tap's handlers do
    not), the event loop finishes it. What it raises is counted and logged, as ``install_tap``'s
    handlers do: the transport stays up."""
    step = coro.__await__()
    try:
        pending = step.send(None)
    except StopIteration:
        return
    except Exception:
        guard.drop("handler-error")
        logger.exception("an RTP/RTCP packet was not handled")
        return
    task = asyncio.ensure_future(_finish(step, pending, guard))
    _pending_sends.add(task)
    task.add_done_callback(_pending_sends.discard)


async def _finish(step: Any, pending: Any, guard: DatagramGuard) -> None:
    try:
        while True:
            try:
                if pending is None:
                    await asyncio.sleep(0)
                else:
                    await pending
            except BaseException as exc:  # handed to the coroutine, as a task would
                pending = step.throw(exc)
                continue
            pending = step.send(None)
    except StopIteration:
        return
    except Exception:
        guard.drop("handler-error")
        logger.exception("an RTP/RTCP packet was not handled")


def limit_rtcp(pc: RTCPeerConnection, max_bps: int) -> None:
    """Drop (and count) the RTCP that ``pc``'s transports receive over ``max_bps``, before it
    is decrypted (bursts of one second's worth). Idempotent; call after every negotiation step."""
    for transport in dtls_transports(pc):
        guard = guard_of(transport.transport._connection)
        if guard.rtcp_bucket is None:
            guard.rtcp_bucket = TokenBucket(max_bps, time.monotonic())


def direct_deliveries(pc: RTCPeerConnection) -> int:
    """How many SRTP/SRTCP datagrams ``pc``'s transports handed to the tap at once (without
    aioice's queue and aiortc's receive loop)."""
    guards = (guard_if_any(transport.transport._connection) for transport in dtls_transports(pc))
    return sum(guard.delivered for guard in guards if guard is not None)


def transport_drops(pc: RTCPeerConnection) -> dict[str, int]:
    """What ``pc``'s transports dropped before aiortc, by reason (see demux.DROP_REASONS)."""
    guards = (guard_if_any(transport.transport._connection) for transport in dtls_transports(pc))
    return sum_drops(guard for guard in guards if guard is not None)


# -- negotiation ----------------------------------------------------------------------------


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


def answer_as_dtls_server(pc: RTCPeerConnection) -> None:
    """Take the DTLS server role in the answer about to be created (``a=setup:passive``) for
    every transport the remote offer left to us (``actpass``).

    aiortc answers ``active`` by default, and as a DTLS client it offers only ECDSA cipher
    suites: against a DTLS server with an RSA certificate (GStreamer's webrtcbin, so
    simple-whip-client and OBS-style GStreamer publishers) the handshake fails. As the server
    it picks an ECDSA suite with its own certificate, whatever the client's certificate is.
    Call between setRemoteDescription(offer) and createAnswer.
    """
    for transport in dtls_transports(pc):
        if transport._role == "auto":
            transport._set_role("server")


def detach_receivers(pc: RTCPeerConnection) -> None:
    """Make sure no aiortc receiver of ``pc`` ever starts (no decoder thread, no RTCP loop).

    Call right after setRemoteDescription/setLocalDescription and before yielding to the
    event loop: aiortc starts receivers from a task it schedules there.
    """
    for t in pc.getTransceivers():
        receiver = t.receiver
        if getattr(receiver, TAPPED, False):
            continue

        async def receive(parameters: object) -> None:
            return None

        receiver.receive = receive  # type: ignore[method-assign]
        setattr(receiver, TAPPED, True)


def prepare_forwarding_sender(
    transceiver: RTCRtpTransceiver, stream_id: str, track_id: str, ssrcs: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Turn an aiortc sender into a pure negotiation object; returns (ssrc, rtx_ssrc).

    ``stream_id``/``track_id`` become the m-section's ``a=msid``; ``ssrcs`` (media, RTX), when
    given, replace the sender's own (a renewed connection keeps a slot's outgoing streams). The sender's RTP loop (which
    would pull frames and encode them) and its RTCP loop (which would send sender reports
    that know nothing of our packets) are replaced by tasks that just wait to be cancelled.
    """
    sender = transceiver.sender
    sender._stream_id = stream_id
    sender._track_id = track_id
    if ssrcs is not None:
        sender._ssrc, sender._rtx_ssrc = ssrcs
    if not getattr(sender, TAPPED, False):

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
        setattr(sender, TAPPED, True)
    return sender._ssrc, sender._rtx_ssrc


# -- sending ------------------------------------------------------------------------------


def is_connected(transport: RTCDtlsTransport) -> bool:
    return transport._state is State.CONNECTED


try:  # pylibsrtp's cffi binding: its libsrtp functions, called from the compiled path
    from pylibsrtp import _binding as _srtp_binding
except ImportError:
    _srtp_binding = None

_pending_sends: set[asyncio.Future[Any]] = set()  # TURN sends in flight (kept referenced)
_FAST = "_sfu_fast_sender"


class _FastSender:
    """A transport's compiled RTP send path: its own libsrtp2 session (same keys as aiortc's)
    and the selected pair's socket and address, looked up again when the pair changes."""

    __slots__ = ("_addr", "_fd", "_nominated", "_pair", "_transport", "srtp")

    def __init__(self, srtp: Any, transport: RTCDtlsTransport) -> None:
        self.srtp = srtp
        self._transport = transport
        self._nominated = transport.transport._connection._nominated  # one dict for its life
        self._pair: Any = None
        self._fd = -1  # -1: the pair has no socket of its own (TURN-relayed): aioice sends
        self._addr = b""

    def send(self, data: bytes) -> int:
        """Protect and send a packet (stamped by the subscriber's sink); the length sent, or -1."""
        if self._transport._state is not State.CONNECTED:
            return -1
        pair = self._nominated.get(1)
        if pair is not self._pair:
            if not self._select(pair):
                return -1
        elif pair is None:
            return -1
        if self._fd >= 0:
            return int(self.srtp.send(self._fd, data, self._addr))
        # No socket of its own (a TURN-relayed candidate): protected here (one SRTP state per
        # transport), sent by aioice.
        try:
            protected = self.srtp.protect(data)
        except ValueError:
            return -1
        pair = self._pair
        protocol = pair.protocol
        if type(protocol) is aioice.ice.StunProtocol:
            try:
                protocol.transport.sendto(protected, pair.remote_addr)
            except (OSError, AttributeError):
                return -1
            return len(data)
        return len(data) if _send_relayed(pair, protected) else -1

    def _select(self, pair: Any) -> bool:
        self._pair = None
        if pair is None:
            return False
        self._fd = -1
        protocol = pair.protocol
        if type(protocol) is aioice.ice.StunProtocol:
            try:  # a TURN-relayed candidate's transport (aioice's TurnTransport) has no socket
                sock = protocol.transport.get_extra_info("socket")
                if sock is not None:
                    host, port = pair.remote_addr[:2]
                    self._addr = fastpath.compiled.sockaddr(host, port)  # type: ignore[union-attr]
                    self._fd = sock.fileno()
            except (AttributeError, OSError, ValueError):  # e.g. a scoped IPv6 address
                self._fd = -1
        self._pair = pair
        return True


def _srtp_keys(transport: RTCDtlsTransport) -> tuple[int, bytes, bytes] | None:
    """(libsrtp profile, outgoing master key + salt, incoming master key + salt) of the
    transport, as aiortc's ``_setup_srtp`` derives them (None if no profile was negotiated)."""
    ssl = transport._ssl
    if ssl is None:
        return None
    selected = ssl.get_selected_srtp_profile()
    for profile in transport._srtp_profiles:
        if profile.openssl_profile == selected:
            break
    else:
        return None
    view = ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length))
    tx = 1 if transport._role == "server" else 0
    return (
        int(profile.libsrtp_profile),
        bytes(profile.get_key_and_salt(view, tx)),
        bytes(profile.get_key_and_salt(view, 1 - tx)),
    )


# Which libsrtp the compiled path runs: "bundled" (the default), pylibsrtp's own (linked with
# its OpenSSL, the crypto aiortc's sessions use) called from C, or "system": Debian's libsrtp2
# that the extension links (built against NSS there: about four times the instructions per packet,
# bench/README.md).
SRTP_ENV = "SFU_FASTPATH_SRTP"


def _bundled_functions() -> tuple[int, int, int] | None:
    """The addresses of pylibsrtp's srtp_protect, srtp_unprotect and srtp_unprotect_rtcp."""
    try:
        ffi, lib = _srtp_binding.ffi, _srtp_binding.lib
        names = ("srtp_protect", "srtp_unprotect", "srtp_unprotect_rtcp")
        protect, unprotect, unprotect_rtcp = (int(ffi.cast("uintptr_t", ffi.addressof(lib, n))) for n in names)
    except (ImportError, AttributeError, TypeError):
        return None
    return protect, unprotect, unprotect_rtcp


_BUNDLED = _bundled_functions() if os.environ.get(SRTP_ENV, "bundled").strip().lower() != "system" else None


def compiled_srtp(profile: int, key: bytes, inbound: bool) -> Any:
    """A compiled-path SRTP session (``OutboundSrtp`` or ``InboundSrtp``) for a libsrtp profile
    and master key + salt: on a pylibsrtp session, driven from C through pylibsrtp's own
    functions, or (``SFU_FASTPATH_SRTP=system``, or pylibsrtp without them) on the libsrtp2 the
    extension links."""
    compiled = fastpath.compiled
    assert compiled is not None
    if _BUNDLED is not None:
        policy = pylibsrtp.Policy(
            key=key,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=profile,
        )
        policy.allow_repeat_tx = True
        policy.window_size = 1024
        session = pylibsrtp.Session(policy)
        address = int(_srtp_binding.ffi.cast("uintptr_t", session._srtp[0]))
        protect, unprotect, unprotect_rtcp = _BUNDLED
        if inbound:
            return compiled.borrow_srtp(True, address, unprotect, unprotect_rtcp, session)
        return compiled.borrow_srtp(False, address, protect, 0, session)
    return compiled.InboundSrtp(profile, key) if inbound else compiled.OutboundSrtp(profile, key)


def describe_srtp() -> str:
    return "pylibsrtp's libsrtp (OpenSSL)" if _BUNDLED is not None else "the system libsrtp2"


def _probe() -> bytes:
    """An RTP packet on a random SSRC (no stream uses it) to check a session against aiortc's."""
    return bytes((0x80, 0x7F, 0, 1, 0, 0, 0, 1)) + os.urandom(4) + b"fastpath-probe"


def _attach_fast_sender(transport: RTCDtlsTransport) -> None:
    """Give the transport the compiled SRTP path once aiortc has set up SRTP: a session for
    what it sends and one for what it receives, each used only if it handles a probe exactly
    as aiortc's own session does (else that direction keeps aiortc's)."""
    compiled = fastpath.compiled
    if compiled is None or transport._tx_srtp is None or getattr(transport, _FAST, None) is not None:
        return
    try:
        keys = _srtp_keys(transport)
        if keys is None:
            return
        profile, tx_key, rx_key = keys
        srtp = compiled_srtp(profile, tx_key, inbound=False)
        probe = _probe()
        if srtp.protect(probe) != transport._tx_srtp.protect(probe):
            logger.warning("compiled SRTP differs from aiortc's on this transport: pure-Python send path")
            return
        counted = transport._rx_srtp
        if isinstance(counted, _CountedSrtpSession):
            inbound = compiled_srtp(profile, rx_key, inbound=True)
            probe = _probe()
            protected = compiled_srtp(profile, rx_key, inbound=False).protect(probe)
            if counted.unprotect(protected) == probe and inbound.unprotect(protected) == probe:
                counted.use_session(inbound, compiled.SrtpError)
            else:
                logger.warning("compiled SRTP differs from aiortc's on this transport: pure-Python receive path")
    except Exception:
        logger.warning("compiled SRTP path unavailable on this transport", exc_info=True)
        return
    setattr(transport, _FAST, _FastSender(srtp, transport))


def _prepare_fast_send(transport: RTCDtlsTransport) -> None:
    if fastpath.compiled is None:
        return
    if transport._tx_srtp is not None:
        _attach_fast_sender(transport)
        return
    original_setup = transport._setup_srtp

    def setup_srtp() -> None:
        original_setup()
        _attach_fast_sender(transport)

    transport._setup_srtp = setup_srtp


def _send_relayed(pair: Any, protected: bytes) -> bool:
    try:
        task = asyncio.ensure_future(pair.protocol.send_data(protected, pair.remote_addr))
    except (OSError, AttributeError):
        return False
    _pending_sends.add(task)
    task.add_done_callback(_pending_sends.discard)
    return True


def send_packet(transport: RTCDtlsTransport, data: bytes, rtcp: bool = False) -> bool:
    """Protect and send one RTP (or RTCP) packet now; False if it could not be sent."""
    if not rtcp:
        fast: _FastSender | None = getattr(transport, _FAST, None)
        if fast is not None:
            return fast.send(data) >= 0
    if transport._state is not State.CONNECTED:
        return False
    try:
        srtp = transport._tx_srtp
        protected = srtp.protect_rtcp(data) if rtcp else srtp.protect(data)
    except (pylibsrtp.Error, ValueError):
        # ValueError: over what pylibsrtp can protect (1,500 bytes with the SRTP trailer); a
        # publisher whose packets are that large (an MTU of 1,400, GStreamer's default) loses them.
        return False
    pair = transport.transport._connection._nominated.get(1)
    if pair is None:
        return False
    protocol = pair.protocol
    try:
        if type(protocol) is aioice.ice.StunProtocol:
            protocol.transport.sendto(protected, pair.remote_addr)
            return True
    except (OSError, AttributeError):
        return False
    return _send_relayed(pair, protected)  # TURN-relayed pair: its send is a coroutine


def send_rtp_through(transport: RTCDtlsTransport, packet: bytes, sink: Any) -> int:
    """Protect and send an RTP packet (already stamped) for a subscriber's sink
    (sfu.rtc.sink): the length sent, or -1.

    Through the transport's compiled path when it has one; and when the packet went out on a
    pair with a socket of its own, the compiled sink is attached to that session, socket and
    address, so that it sends the next packets itself while the pair stays the nominated one
    and the transport connected (it checks both per packet and comes back here otherwise)."""
    fast: _FastSender | None = getattr(transport, _FAST, None)
    if fast is None:
        return len(packet) if send_packet(transport, packet) else -1
    size = fast.send(packet)
    if size >= 0 and fast._fd >= 0 and not sink.attached:
        sink.attach(
            fast.srtp, fast._fd, fast._addr, fast._nominated, 1, fast._pair, transport, "_state", State.CONNECTED
        )
    return size


def uses_compiled_path(transport: RTCDtlsTransport) -> bool:
    """Whether this transport's SRTP goes through the compiled path, both ways (RTP sent,
    RTP and RTCP received)."""
    counted = transport._rx_srtp
    return (
        getattr(transport, _FAST, None) is not None
        and isinstance(counted, _CountedSrtpSession)
        and counted.uses_session_of(fastpath.compiled)
    )


def problems() -> list[str]:
    """What of aiortc and aioice this module relies on and is missing."""
    found = missing_attributes(
        [
            (aioice.ice, "StunProtocol"),
            (aioice.ice.Connection, "_nominated"),
            (aioice.ice.CandidatePair, "remote_addr"),
            (RTCDtlsTransport, "_handle_rtp_data"),
            (RTCDtlsTransport, "_setup_srtp"),
            (RTCDtlsTransport, "_handle_rtcp_data"),
            (RTCDtlsTransport, "_set_role"),
            (RTCRtpSender, "_run_rtp"),
            (RTCRtpSender, "_run_rtcp"),
            (RTCRtpReceiver, "receive"),
            (State, "CONNECTED"),
            (pylibsrtp, "Error"),
            *((SRTP_PROFILES[0], name) for name in ("openssl_profile", "key_length", "salt_length", "libsrtp_profile")),
            *((SRTP_PROFILES[0], name) for name in ("get_key_and_salt",)),
        ]
    )
    # Sender state that the idle loops of prepare_forwarding_sender must drive.
    found += missing_names(
        [RTCRtpSender.__init__],
        [f"_RTCRtpSender{a}" for a in ("__rtp_started", "__rtp_exited", "__rtcp_started", "__rtcp_exited")],
        "RTCRtpSender.{} is missing",
    )
    found += missing_names([RTCRtpSender.__init__], ["_ssrc", "_rtx_ssrc", "_stream_id"], "RTCRtpSender.{} is missing")
    found += missing_names(
        [RTCRtpTransceiver.__init__], ["_headerExtensions", "_codecs"], "RTCRtpTransceiver.{} is missing"
    )
    found += missing_names(
        [RTCDtlsTransport.__init__, RTCDtlsTransport._setup_srtp],
        ["_state", "_tx_srtp", "_ssl", "_role", "_srtp_profiles"],
        "RTCDtlsTransport.{} is missing",
    )
    found += missing_names([aioice.ice.CandidatePair.__init__], ["protocol"], "CandidatePair.{} is missing")
    # The direct receive path reads the length of aioice's queue (asyncio.Queue's deque).
    found += missing_attributes([(asyncio.Queue(), "_queue")])
    # The connect task that _PeerConnection ends quietly once closed.
    found += missing_attributes([(RTCPeerConnection, "_RTCPeerConnection__connect")])
    found += missing_names(
        [RTCPeerConnection.setLocalDescription],
        ["_RTCPeerConnection__connect"],
        "setLocalDescription no longer starts {}",
    )
    found += missing_names(
        [RTCPeerConnection.setRemoteDescription],
        ["_RTCPeerConnection__connect"],
        "setRemoteDescription no longer starts {}",
    )
    return found

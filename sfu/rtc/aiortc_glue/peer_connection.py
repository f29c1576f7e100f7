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
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aioice.ice
import pylibsrtp
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpTransceiver
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtcpFeedback
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

from ..demux import sum_drops
from ..rate import TokenBucket
from .compat import TAPPED, missing_attributes, missing_names
from .datagrams import DatagramGuard, count_srtp_failures, guard_datagrams, guard_if_any, guard_of
from .ice import guard_ice_close

logger = logging.getLogger(__name__)

RtpHandler = Callable[[bytes, int], Awaitable[None]]
RtcpHandler = Callable[[bytes], Awaitable[None]]


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

        transport._handle_rtp_data = handle_rtp  # type: ignore[method-assign]
        transport._handle_rtcp_data = handle_rtcp  # type: ignore[method-assign]
        setattr(transport, TAPPED, True)


def limit_rtcp(pc: RTCPeerConnection, max_bps: int) -> None:
    """Drop (and count) the RTCP that ``pc``'s transports receive over ``max_bps``, before it
    is decrypted (bursts of one second's worth). Idempotent; call after every negotiation step."""
    for transport in dtls_transports(pc):
        guard = guard_of(transport.transport._connection)
        if guard.rtcp_bucket is None:
            guard.rtcp_bucket = TokenBucket(max_bps, time.monotonic())


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


def prepare_forwarding_sender(transceiver: RTCRtpTransceiver, stream_id: str, track_id: str) -> tuple[int, int]:
    """Turn an aiortc sender into a pure negotiation object; returns (ssrc, rtx_ssrc).

    ``stream_id``/``track_id`` become the m-section's ``a=msid``. The sender's RTP loop (which
    would pull frames and encode them) and its RTCP loop (which would send sender reports
    that know nothing of our packets) are replaced by tasks that just wait to be cancelled.
    """
    sender = transceiver.sender
    sender._stream_id = stream_id
    sender._track_id = track_id
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


_pending_sends: set[asyncio.Future[Any]] = set()  # TURN sends in flight (kept referenced)


def send_packet(transport: RTCDtlsTransport, data: bytes, rtcp: bool = False) -> bool:
    """Protect and send one RTP (or RTCP) packet now; False if it could not be sent."""
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
        else:  # TURN-relayed pair: its send is a coroutine
            task = asyncio.ensure_future(protocol.send_data(protected, pair.remote_addr))
            _pending_sends.add(task)
            task.add_done_callback(_pending_sends.discard)
    except (OSError, AttributeError):
        return False
    return True


def problems() -> list[str]:
    """What of aiortc and aioice this module relies on and is missing."""
    found = missing_attributes(
        [
            (aioice.ice, "StunProtocol"),
            (aioice.ice.Connection, "_nominated"),
            (aioice.ice.CandidatePair, "remote_addr"),
            (RTCDtlsTransport, "_handle_rtp_data"),
            (RTCDtlsTransport, "_handle_rtcp_data"),
            (RTCDtlsTransport, "_set_role"),
            (RTCRtpSender, "_run_rtp"),
            (RTCRtpSender, "_run_rtcp"),
            (RTCRtpReceiver, "receive"),
            (State, "CONNECTED"),
            (pylibsrtp, "Error"),
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
        ["_state", "_tx_srtp", "_role"],
        "RTCDtlsTransport.{} is missing",
    )
    found += missing_names([aioice.ice.CandidatePair.__init__], ["protocol"], "CandidatePair.{} is missing")
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

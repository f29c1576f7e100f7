"""What the two peer connections of a participant share, on top of aiortc.

PublishPeer (sfu/rtc/publish.py): the client offers, we answer; every sending m-section
becomes a Producer. SubscribePeer (sfu/rtc/subscribe.py): we offer, the client answers; every
m-section carries one Consumer at a time. Both are a PeerBase: the aiortc connection, the RTP
and RTCP tap, the periodic tick and RTCP reports (one timer for all peers: sfu/rtc/ticker.py), trickled ICE candidates.

aiortc is used through its public API plus the handful of internals in aiortc_glue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiortc.sdp import candidate_from_sdp

from ..errors import SignalingError
from ..events import EventSink, MediaEvent
from ..media.rtcp import MalformedPacket, RtcpPacket, parse_packet, split_compound
from ..tasks import spawn
from . import aiortc_glue as glue
from .ticker import ticker

logger = logging.getLogger(__name__)

TWCC_EXT_ID = 5  # aiortc uses 1-3 for its own extensions
PADDING_PACKET_BYTES = 255
PADDING_BURSTS = 10  # per tick
RTCP_INTERVAL_S = 1.0
TWCC_FEEDBACK_INTERVAL_S = 0.05  # transport-cc feedback to publishers (libwebrtc: 50-250 ms)
TWCC_FEEDBACK_BURST = 50  # ... or as soon as this many packets wait to be reported
TICK_INTERVAL_S = 0.2
NTP_EPOCH_OFFSET_S = 2208988800


async def deliver(sink: EventSink, event: MediaEvent) -> None:
    """Hand one event to a sink (as a coroutine, for sfu.tasks.spawn)."""
    await sink(event)


def now_ms() -> int:
    """The media path's clock (monotonic milliseconds): arrival times, layer activity,
    NACK timing, estimation. Peers read their injected ``now_s`` clock instead."""
    return int(time.monotonic() * 1000)


def ntp_now() -> int:
    """Wall-clock time in NTP format, only for what RTCP carries (SR timestamps, RTT)."""
    t = time.time() + NTP_EPOCH_OFFSET_S
    return (int(t) << 32) | int((t % 1) * (1 << 32))


async def add_ice_candidate(pc: Any, candidate: dict[str, Any] | None) -> None:
    """Apply a trickled candidate ({candidate, sdp_mid, sdp_mline_index}) or end-of-candidates."""
    if candidate is None:
        return  # aiortc needs no end-of-candidates signal
    text = candidate.get("candidate")
    if not isinstance(text, str):
        raise SignalingError("bad-message", "candidate.candidate must be a string")
    if text == "":
        return
    if text.startswith("candidate:"):
        text = text[len("candidate:") :]
    try:
        parsed = candidate_from_sdp(text)
    except Exception as exc:
        raise SignalingError("bad-message", f"candidate could not be parsed: {exc}") from exc
    parsed.sdpMid = candidate.get("sdp_mid")
    parsed.sdpMLineIndex = candidate.get("sdp_mline_index")
    if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
        parsed.sdpMLineIndex = 0
    if parsed.protocol.lower() != "udp":
        return  # aioice has no ICE-TCP
    try:
        await pc.addIceCandidate(parsed)
    except Exception as exc:
        raise SignalingError("bad-message", f"candidate rejected: {exc}") from exc


class PeerBase:
    """What both peers share: the aiortc connection, the tap, the RTCP timer."""

    def __init__(
        self,
        ice_servers: list[dict[str, Any]],
        on_failed: Callable[[], None],
        now_s: Callable[[], float] = time.monotonic,
        negotiation_timeout_s: float = 10.0,
        max_rtcp_bps: int = 500_000,
    ) -> None:
        self._ice_servers = ice_servers
        self._now_s = now_s  # the one clock of the media path (monotonic seconds)
        self.negotiation_timeout_s = negotiation_timeout_s
        self.max_rtcp_bps = max_rtcp_bps
        self.rtcp_ssrc = random.getrandbits(32)
        self.malformed_packets = 0
        self.closed = False
        self._on_failed = on_failed
        self._transport: Any = None
        self._next_report_s = 0.0  # when the next RTCP reports are due (self._now_s)
        self.connected = False  # the connection has been established (ICE and DTLS) once
        # Answer a=setup:passive where the offer lets us choose (aiortc_glue.answer_as_dtls_server).
        self.dtls_server = False
        self.renewals = 0  # connections that replaced a lost one (renew_connection)
        self.pc = self._connect()

    def _connect(self) -> Any:
        """A new aiortc connection; its state changes count only while it is the current one."""
        pc = glue.create_peer_connection(self._ice_servers)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc is not self.pc:
                return  # a connection we replaced
            state = pc.connectionState
            if state == "connected":
                self.connected = True
                self.on_connected()
            elif state in ("failed", "closed") and not self.closed:
                self._on_failed()

        return pc

    @property
    def connection_state(self) -> str:
        return str(self.pc.connectionState)

    def renew_connection(self) -> None:
        """A new connection in place of the current one, for the same producers or consumers
        (aiortc has no ICE restart); the old one is closed in the background."""
        old = self.pc
        self.pc = self._connect()
        self._transport = None
        self.renewals += 1
        spawn(self._close_connection(old), name=f"close-replaced-{type(self).__name__}")

    def on_connected(self) -> None:
        pass

    def _now_ms(self) -> int:
        return int(self._now_s() * 1000)

    @property
    def transport(self) -> Any:
        """The connection's one DTLS transport (everything is bundled); kept once connected.

        Until then it is looked up each time: between an offer and its answer a new
        m-section has a transport of its own, which bundling then replaces (when the data
        channels' m-section came first, the media is bundled on its transport)."""
        transport = self._transport
        if transport is None:
            transports = glue.dtls_transports(self.pc)
            transport = transports[0] if transports else None
            if transport is not None and glue.is_connected(transport):
                self._transport = transport
        return transport

    def _tap(self) -> None:
        glue.detach_receivers(self.pc)
        glue.install_tap(self.pc, self._on_rtp, self._on_rtcp, self._rtp_now_handler())
        glue.limit_rtcp(self.pc, self.max_rtcp_bps)
        if not self.closed:
            self._next_report_s = self._now_s()
            ticker(TICK_INTERVAL_S).add(self)

    def tick(self, now_ms: int) -> None:
        """Periodic work between RTCP reports (every TICK_INTERVAL_S)."""

    def send_rtcp(self, packets: list[RtcpPacket]) -> bool:
        transport = self.transport
        if transport is None or not packets:
            return False
        return glue.send_packet(transport, b"".join(bytes(p) for p in packets), rtcp=True)

    def send_rtp(self, packet: bytes) -> bool:
        transport = self.transport
        return transport is not None and glue.send_packet(transport, packet)

    async def _on_rtp(self, data: bytes, arrival_ms: int) -> None:
        pass

    def _rtp_now_handler(self) -> glue.RtpNowHandler | None:
        """A plain function doing what ``_on_rtp`` does, for the packets decrypted in the
        socket's callback (``aiortc_glue.install_tap``); None: ``_on_rtp`` for every packet."""
        return None

    async def _on_rtcp(self, data: bytes) -> None:
        """Every packet of a compound RTCP packet to ``handle_rtcp``, as a typed value. A
        malformed packet is dropped and counted (``malformed_packets``); the well-formed
        packets beside it are still handled, unless the compound's framing itself is broken."""
        try:
            parts = split_compound(data)
        except MalformedPacket:
            self.malformed_packets += 1
            return
        for packet_type, fmt, body, raw in parts:
            try:
                packet = parse_packet(packet_type, fmt, body, raw)
            except MalformedPacket:
                self.malformed_packets += 1
                continue
            self.handle_rtcp(packet)

    def handle_rtcp(self, packet: RtcpPacket) -> None:
        pass

    def rtcp_reports(self) -> list[RtcpPacket]:
        return []

    def periodic(self) -> None:
        """The tick, and the RTCP reports when due (sfu.rtc.ticker calls it every tick)."""
        if self.closed:
            return
        self.tick(self._now_ms())
        now = self._now_s()
        if now >= self._next_report_s:
            self._next_report_s = now + RTCP_INTERVAL_S * (0.5 + random.random())
            self.send_rtcp(self.rtcp_reports())

    async def add_candidate(self, candidate: dict[str, Any] | None) -> None:
        async with self.deadline("the ICE candidate"):
            await add_ice_candidate(self.pc, candidate)

    @contextlib.asynccontextmanager
    async def deadline(self, what: str) -> AsyncIterator[None]:
        """Bound a negotiation step (aiortc waiting on something that never comes): past
        negotiation_timeout_s it is abandoned with SignalingError("negotiation-timeout"), so
        the session goes on handling messages (and a closed socket still removes the
        participant). The connection is then in no known state: the caller closes it."""
        try:
            async with asyncio.timeout(self.negotiation_timeout_s):
                yield
        except TimeoutError:
            logger.warning("%s took over %g s and was abandoned", what, self.negotiation_timeout_s)
            raise SignalingError(
                "negotiation-timeout", f"{what} was not handled within {self.negotiation_timeout_s:g} s"
            ) from None

    def _close_children(self) -> None:
        """Close what the peer owns (its producers or consumers); called once, by close()."""

    async def close(self) -> None:
        """Idempotent: closes the peer's producers or consumers, its tasks, the connection."""
        if self.closed:
            return
        self.closed = True
        self._close_children()
        ticker(TICK_INTERVAL_S).discard(self)
        await self._close_connection(self.pc)

    async def _close_connection(self, pc: Any) -> None:
        try:
            # Bounded: a participant leaving must not wait on aiortc for ever.
            async with asyncio.timeout(self.negotiation_timeout_s):
                await pc.close()
        except TimeoutError:
            logger.warning("closing a peer connection took over %g s; abandoned", self.negotiation_timeout_s)
        except Exception:
            logger.exception("closing a peer connection failed")

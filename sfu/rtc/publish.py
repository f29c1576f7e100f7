"""The connection a participant publishes on: the client offers, we answer.

Every sending m-section becomes a Producer. Incoming RTP is routed to its producer and layer
(sfu/rtc/routing.py), stamped for transport-cc feedback to the publisher, and metered for the
active speaker; RTCP back to the publisher carries receiver reports, one REMB, PLIs and NACKs.
Dynacast tells the publisher which simulcast layers its consumers need.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from ..bwe.twcc import TWCC_URI, FeedbackGenerator, read_transport_seq
from ..dynacast import LayerNeed, needed_layers
from ..errors import SignalingError
from ..events import EventSink, LayersNeeded
from ..forwarding import Producer
from ..media.rtcp import (
    ReceptionReport,
    RtcpPacket,
    RtcpPli,
    RtcpReceiverReport,
    RtcpRemb,
    RtcpSenderReport,
    pack_nack,
)
from ..media.rtp import MalformedPacket, parse_rtp
from ..speaker import AUDIO_LEVEL_URI, AudioLevelMeter, read_audio_level
from ..stream import Layer
from ..tasks import spawn
from . import aiortc_glue as glue
from .datachannels import ClientChannels, DataHandler
from .peer import TWCC_FEEDBACK_BURST, TWCC_FEEDBACK_INTERVAL_S, PeerBase, deliver
from .routing import DEFAULT_MAX_SSRCS, SsrcRouter
from .sdp import (
    MID_URI,
    REPAIRED_RID_URI,
    RID_URI,
    SIMULCAST_EXTENSION_URIS,
    add_simulcast_answer,
    check_publish_offer,
    media_codec,
    media_sections,
    parse_sdp,
    rtx_payload_type,
    simulcast_offers,
)

logger = logging.getLogger(__name__)

MAX_DLSR = 0xFFFFFFFF  # delay since last SR, in 1/65536 s, in a 32-bit field


def _ignore_data(reliable: bool, message: bytes | str) -> None:
    pass


def _nothing() -> None:
    pass


class PublishPeer(PeerBase):
    """The connection a participant publishes on (the client offers)."""

    def __init__(
        self,
        participant_id: str,
        ice_servers: list[dict[str, Any]],
        on_failed: Callable[[], None],
        publisher_bitrate_bps: int,
        now_s: Callable[[], float] = time.monotonic,
        events: EventSink | None = None,
        dynacast: bool = True,
        transport_cc: bool = True,
        max_ssrcs: int = DEFAULT_MAX_SSRCS,
        max_tracks: int = 8,
        max_m_sections: int = 32,
        negotiation_timeout_s: float = 10.0,
        max_rtcp_bps: int = 500_000,
        on_data: DataHandler | None = None,
        on_data_open: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(ice_servers, on_failed, now_s, negotiation_timeout_s, max_rtcp_bps)
        self.participant_id = participant_id
        # Data channels the client opens here (relayed by the room to the others).
        self.data = ClientChannels(self.pc, on_data or _ignore_data, on_data_open or _nothing)
        # What offers may be, and the m-sections of the last one accepted (a re-offer keeps them).
        self._max_tracks = max_tracks
        self._max_m_sections = max_m_sections
        self._sections: list[tuple[str, str]] = []
        self.producers: dict[str, Producer] = {}  # by mid (the router holds the same)
        # Dynacast: which layers of each video the publisher is asked to send (`layers`).
        self._emit = events
        self._dynacast = dynacast and events is not None
        self._layer_needs: dict[Producer, LayerNeed] = {}
        self.layer_changes_sent = 0
        self.router = SsrcRouter(max_ssrcs)
        self._ext_ids: dict[str, int] = {}  # header extension URI -> id, from the answer
        self._lsr: dict[int, tuple[int, float]] = {}  # ssrc -> (LSR, arrival on the now_s clock)
        self._publisher_bitrate_bps = publisher_bitrate_bps
        self.unroutable_packets = 0
        self.audio_levels: dict[str, AudioLevelMeter] = {}  # by producer id (audio only)
        # transport-cc: we answer it (if offered and enabled) and send the publisher feedback.
        self._transport_cc = transport_cc
        self._twcc_ext_id: int | None = None
        self._level_ext_id: int | None = None  # RFC 6464 audio level, from the answer
        self.feedback = FeedbackGenerator(self.rtcp_ssrc)
        self._feedback_task: asyncio.Task[None] | None = None
        self._arrivals_pc: Any = None  # the connection whose arrival times are tracked

    def renew(self) -> None:
        """A new connection for the same producers (the client lost the old one): the next
        offer, the client's first on its new connection, is answered on it. The producers and
        their consumers stay; each stream goes on from the first keyframe that comes over the
        new connection (new SSRCs, learnt again from MID/RID or the offer)."""
        self.renew_connection()
        self.data.watch(self.pc)
        self._sections = []  # a new connection: the offer is not held to the old one's m-sections
        self.router.forget_ssrcs()
        self._lsr.clear()
        self.feedback = FeedbackGenerator(self.rtcp_ssrc)
        for producer in self.producers.values():
            producer.source_restarted()

    async def handle_offer(self, sdp: str, sources: dict[str, str]) -> tuple[str, list[Producer], list[Producer]]:
        """Apply an offer; returns (answer SDP, producers added, producers removed)."""
        async with self.deadline("the publish offer"):
            return await self._handle_offer(sdp, sources)

    async def _handle_offer(self, sdp: str, sources: dict[str, str]) -> tuple[str, list[Producer], list[Producer]]:
        offer = parse_sdp(sdp)
        simulcast = simulcast_offers(sdp)
        if self.pc.signalingState != "stable":
            raise SignalingError("wrong-state", "the previous publish offer is still being handled")
        # Refused here, an offer leaves the connection as it was.
        check_publish_offer(offer, self._sections, self._max_tracks, self._max_m_sections)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            glue.detach_receivers(self.pc)
            # RFC 6464 audio levels always (active speaker); RID extensions for simulcast;
            # transport-cc when enabled (feedback to the publisher's send-side estimator).
            uris = (AUDIO_LEVEL_URI,) + (SIMULCAST_EXTENSION_URIS if simulcast else ())
            uris += (TWCC_URI,) if self._transport_cc else ()
            glue.accept_header_extensions(self.pc, offer, uris)
            if self._transport_cc:
                glue.accept_rtcp_feedback(self.pc, offer, "transport-cc")
            if self.dtls_server:
                glue.answer_as_dtls_server(self.pc)
            answer = await self.pc.createAnswer()
            await self.pc.setLocalDescription(answer)
        except SignalingError:
            raise
        except Exception as exc:
            raise SignalingError("bad-sdp", f"offer could not be negotiated: {exc}") from exc
        self._sections = media_sections(offer)
        self._tap()
        answer_sdp = add_simulcast_answer(self.pc.localDescription.sdp, simulcast)
        local = parse_sdp(answer_sdp)
        added, removed = self._update_producers(offer, local, sources, simulcast)
        self.router.set_extension_ids(
            self._ext_ids.get(MID_URI), self._ext_ids.get(RID_URI), self._ext_ids.get(REPAIRED_RID_URI)
        )
        self._twcc_ext_id = self._ext_ids.get(TWCC_URI)
        self._level_ext_id = self._ext_ids.get(AUDIO_LEVEL_URI)
        if self._twcc_ext_id is not None and self._arrivals_pc is not self.pc:
            glue.track_arrival_times(self.pc)
            self._arrivals_pc = self.pc
        if self._twcc_ext_id is not None and self._feedback_task is None:
            self._feedback_task = spawn(self._run_feedback(), name=f"twcc-feedback-{self.participant_id}")
        return answer_sdp, added, removed

    def _update_producers(
        self,
        offer: aiortc_sdp.SessionDescription,
        answer: aiortc_sdp.SessionDescription,
        sources: dict[str, str],
        simulcast: dict[str, list[str]],
    ) -> tuple[list[Producer], list[Producer]]:
        added: list[Producer] = []
        removed: list[Producer] = []
        answer_by_mid = {m.rtp.muxId: m for m in answer.media}
        publishing: set[str] = set()
        for media in offer.media:
            mid = media.rtp.muxId
            if media.kind not in ("audio", "video"):
                continue
            local = answer_by_mid.get(mid)
            sending = media.direction in ("sendonly", "sendrecv") and media.port != 0
            negotiated = local is not None and local.port != 0 and media_codec(local) is not None
            if local is not None:
                for ext in local.rtp.headerExtensions:
                    self._ext_ids.setdefault(ext.uri, ext.id)
            if not (sending and negotiated) or local is None:
                continue
            publishing.add(mid)
            fid = {
                int(g.items[1]): int(g.items[0]) for g in media.ssrc_group if g.semantic == "FID" and len(g.items) > 1
            }
            media_ssrcs = [s.ssrc for s in media.ssrc if s.ssrc not in fid]
            self.router.fid.update(fid)
            rids = simulcast.get(mid)
            producer = self.producers.get(mid)
            offered: list[str | None] = list(rids) if rids else [None]
            if producer is not None and [layer.rid for layer in producer.layers] != offered:
                # The layers changed (e.g. a new track with other encodings): a new producer.
                removed.append(self._remove(mid))
                producer = None
            if producer is None:
                codec, pt = media_codec(local)  # type: ignore[misc]
                source = sources.get(mid) or ("microphone" if media.kind == "audio" else "camera")
                producer = Producer(
                    producer_id=f"{self.participant_id}-{mid}",
                    participant_id=self.participant_id,
                    kind=media.kind,
                    source=source,
                    codec=codec,
                    payload_type=pt,
                    request_keyframe=self._send_pli,
                    rids=rids,
                    send_nack=self._send_nack,
                    on_demand_changed=self._demand_changed if self._dynacast and media.kind == "video" else None,
                )
                self.producers[mid] = producer
                self.router.add_producer(mid, producer)
                added.append(producer)
                if self._dynacast and producer.kind == "video":
                    self._layer_needs[producer] = LayerNeed(len(producer.layers), self._now_ms())
                if producer.kind == "audio":
                    self.audio_levels[producer.id] = AudioLevelMeter()
            producer.rtx_payload_type = rtx_payload_type(local, producer.payload_type)
            if not producer.simulcast and media_ssrcs and producer.layers[0].ssrc != media_ssrcs[0]:
                self.router.bind(producer, producer.layers[0], media_ssrcs[0])
        for mid in list(self.producers):
            if mid not in publishing:
                removed.append(self._remove(mid))
        return added, removed

    def _remove(self, mid: str) -> Producer:
        producer = self.producers.pop(mid)
        self.router.remove_producer(mid)
        self._layer_needs.pop(producer, None)
        self.audio_levels.pop(producer.id, None)
        producer.close()
        return producer

    async def _on_rtp(self, data: bytes, aiortc_arrival_ms: int) -> None:
        self._receive_rtp(data)

    def _rtp_now_handler(self) -> glue.RtpNowHandler | None:
        return self._receive_rtp

    def _receive_rtp(self, data: bytes) -> None:
        """One decrypted RTP packet from the publisher (called from the socket's callback)."""
        arrival_ms = self._now_ms()  # on the media clock (aiortc stamps wall-clock NTP ms)
        try:
            view = parse_rtp(data)
        except MalformedPacket:
            self.malformed_packets += 1
            return
        ext_start = view.ext_start
        if ext_start >= 0:
            twcc_id = self._twcc_ext_id
            if twcc_id is not None:
                tw_seq = read_transport_seq(data, ext_start, twcc_id)
                if tw_seq >= 0:
                    feedback = self.feedback
                    feedback.media_ssrc = view.ssrc
                    feedback.record(tw_seq, glue.arrival_us(self.transport))
                    if len(feedback.pending) >= TWCC_FEEDBACK_BURST:
                        self.send_feedback()
        route = self.router.route(data, ext_start, view.ssrc)
        if route is None:
            self.unroutable_packets += 1
            return
        producer, layer, rtx = route
        if rtx:  # the layer's RTX stream
            if view.payload_type == producer.rtx_payload_type:
                producer.on_rtx(layer, data, view, arrival_ms)
            else:
                self.unroutable_packets += 1
            return
        if ext_start >= 0 and producer.kind == "audio":
            level_id = self._level_ext_id
            if level_id is not None:
                meter = self.audio_levels.get(producer.id)
                if meter is not None:
                    level = read_audio_level(data, ext_start, level_id)
                    if level >= 0:
                        meter.observe(level)
        producer.on_rtp(layer, data, view, arrival_ms)

    def send_feedback(self) -> None:
        """Report the transport-wide sequence numbers received since the last report."""
        transport = self.transport
        for packet in self.feedback.build():
            if transport is not None:
                glue.send_packet(transport, packet, rtcp=True)

    async def _run_feedback(self) -> None:
        try:
            while not self.closed:
                await asyncio.sleep(TWCC_FEEDBACK_INTERVAL_S)
                try:
                    self.send_feedback()
                except Exception:
                    logger.exception("transport-cc feedback failed")
        except asyncio.CancelledError:
            pass

    def handle_rtcp(self, packet: RtcpPacket) -> None:
        if isinstance(packet, RtcpSenderReport):
            route = self.router.media_route(packet.ssrc)
            ntp = packet.ntp_timestamp
            self._lsr[packet.ssrc] = ((ntp >> 16) & 0xFFFFFFFF, self._now_s())
            if route is not None:
                route[0].on_sender_report(route[1], ntp, packet.rtp_timestamp)

    def _demand_changed(self, producer: Producer) -> None:
        self._update_layers(producer, self._now_ms())

    def _update_layers(self, producer: Producer, now: int) -> None:
        """Tell the publisher when the layers its consumers need change (dynacast)."""
        need = self._layer_needs.get(producer)
        if need is None or producer.closed or self._emit is None:
            return
        count, reason = needed_layers(producer.consumers, producer.layers)
        before = need.active
        if not need.update(now, count):
            return
        producer.requested_layers = need.active
        rids = [layer.rid for layer in producer.layers]
        active = [rid for rid in rids[: need.active] if rid is not None]
        logger.debug(
            "publisher %s: %s layers %s -> %s (%s%s)",
            self.participant_id,
            producer.id,
            rids[:before],
            rids[: need.active],
            reason,
            "" if need.active > before else f", unneeded for {need.hold_ms} ms",
        )
        self.layer_changes_sent += 1
        event = LayersNeeded(producer.id, tuple(active), paused=need.active == 0)
        spawn(deliver(self._emit, event), name=f"layers-{self.participant_id}")

    def repeat_layer_requests(self) -> None:
        """Tell the publisher again which layers of each video dynacast asks for (after a
        resume: what was sent while its socket was down is lost)."""
        if self._emit is None:
            return
        for producer, need in self._layer_needs.items():
            rids = [layer.rid for layer in producer.layers]
            active = tuple(rid for rid in rids[: need.active] if rid is not None)
            event = LayersNeeded(producer.id, active, paused=need.active == 0)
            spawn(deliver(self._emit, event), name=f"layers-{self.participant_id}")

    def _send_pli(self, producer: Producer, layer: Layer) -> None:
        if layer.ssrc is not None:
            self.send_rtcp([RtcpPli(self.rtcp_ssrc, layer.ssrc)])

    def _send_nack(self, producer: Producer, layer: Layer, ext_seqs: list[int]) -> None:
        transport = self.transport
        if layer.ssrc is not None and transport is not None:
            glue.send_packet(transport, pack_nack(self.rtcp_ssrc, layer.ssrc, ext_seqs), rtcp=True)

    def tick(self, now_ms: int) -> None:
        for producer in list(self.producers.values()):
            producer.tick(now_ms)  # upstream NACKs due
        for producer in list(self._layer_needs):
            self._update_layers(producer, now_ms)  # dynacast

    def describe(self) -> dict[str, Any]:
        """Upstream loss repair per published track, the transport-cc feedback we send, and
        how the incoming streams are routed."""
        router = self.router
        return {
            "routing": {
                "ssrcs": router.learnt_ssrcs,
                "max_ssrcs": router.max_ssrcs,
                "ssrcs_over_limit": router.ssrcs_over_limit,
                "unroutable_ssrcs_cached": router.unroutable_ssrcs,
                "unroutable_packets": self.unroutable_packets,
            },
            "tracks": [{"track": p.id, **p.describe_repair()} for p in self.producers.values()],
            "malformed_packets": self.malformed_packets,
            "transport_cc": {
                "negotiated": self._twcc_ext_id is not None,
                "feedback_packets_sent": self.feedback.packets_sent,
                "late_dropped": self.feedback.late_dropped,
            },
            "transport_drops": glue.transport_drops(self.pc),
            "data_channels": len(self.data.channels),
        }

    def layers(self) -> list[Layer]:
        return [layer for p in self.producers.values() for layer in p.layers if layer.ssrc is not None]

    def rtcp_reports(self) -> list[RtcpPacket]:
        reports = []
        now = self._now_s()
        for layer in self.layers():
            stats = layer.stats
            if stats.packets == 0 or layer.ssrc is None:
                continue
            lsr, dlsr = 0, 0
            if layer.ssrc in self._lsr:
                lsr, at = self._lsr[layer.ssrc]
                dlsr = int((now - at) * 65536)
                if not 0 <= dlsr <= MAX_DLSR:
                    # The last SR is older than the 32-bit DLSR can say (about 18 h; its LSR is
                    # ambiguous too): report as if none had come (RFC 3550 6.4.1: both zero).
                    lsr, dlsr = 0, 0
            reports.append(
                ReceptionReport(
                    ssrc=layer.ssrc,
                    fraction_lost=stats.fraction_lost(),
                    packets_lost=stats.cumulative_lost,
                    highest_sequence=stats.highest_ext_seq & 0xFFFFFFFF,
                    jitter=stats.jitter,
                    lsr=lsr,
                    dlsr=dlsr,
                )
            )
        packets: list[RtcpPacket] = []
        for i in range(0, len(reports), 31):  # at most 31 report blocks per RR
            packets.append(RtcpReceiverReport(ssrc=self.rtcp_ssrc, reports=reports[i : i + 31]))
        video = [layer.ssrc for p in self.producers.values() if p.kind == "video" for layer in p.layers if layer.ssrc]
        if video and self._publisher_bitrate_bps > 0:
            # One REMB for all video streams and all their layers together.
            packets.append(RtcpRemb(self.rtcp_ssrc, self._publisher_bitrate_bps, video))
        return packets

    def _close_children(self) -> None:
        if self._feedback_task is not None:
            self._feedback_task.cancel()
        for producer in self.producers.values():
            producer.close()  # and with it every consumer of it
        self.producers.clear()
        self._layer_needs.clear()
        self.audio_levels.clear()
        self.router.clear()

"""The connection a participant receives everything on: the server offers, the client answers.

Or, for a player (WHEP), the other way round: the player offers to receive audio and video,
the server answers (``answer``) and then chooses what each m-section carries (``play``),
switching from one source to another on a keyframe without renegotiating.

Every m-section (a Slot) carries one Consumer at a time; slots are reused for new producers of
the same kind and codec. Outgoing RTP is stamped with a transport-wide sequence number when
negotiated; the downlink estimate (transport-cc feedback, REMB, receiver reports) is fitted
over the videos by the stream allocator, and probing tests for more with RTX padding.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from ..bwe.allocator import PAUSED, Allocation, Priority
from ..bwe.downlink import DownlinkController, StreamInput
from ..bwe.twcc import TWCC_URI
from ..errors import SignalingError
from ..events import ConsumerBound, EventSink, SubscribeOfferReady, TrackQualityChanged
from ..forwarding import Consumer, OutStream, Producer
from ..media.nack import ResendBudget
from ..media.rtcp import (
    RtcpFir,
    RtcpNack,
    RtcpPacket,
    RtcpPli,
    RtcpReceiverReport,
    RtcpRemb,
    RtcpSenderReport,
    RtcpTransportCc,
)
from ..media.rtp import padding_packet
from ..stream import Codec
from ..tasks import spawn
from . import aiortc_glue as glue
from .datachannels import ServerChannels
from .peer import (
    PADDING_BURSTS,
    PADDING_PACKET_BYTES,
    TICK_INTERVAL_S,
    TWCC_EXT_ID,
    PeerBase,
    deliver,
    ntp_now,
)
from .sdp import (
    add_transport_cc,
    check_direction,
    extension_id,
    media_codec,
    offered_codecs,
    parse_sdp,
    rtx_payload_type,
)
from .sink import make_sink

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Slot:
    """One m-section of the subscribe connection."""

    transceiver: RTCRtpTransceiver
    kind: str
    codec: Codec
    out: OutStream
    producer: Producer | None = None
    consumer: Consumer | None = None
    mid: str | None = None
    rtx_ssrc: int = 0
    rtx_payload_type: int | None = None
    payload_type: int | None = None  # the negotiated codec's


class SubscribePeer(PeerBase):
    """The connection a participant receives everything on (the server offers)."""

    def __init__(
        self,
        participant_id: str,
        ice_servers: list[dict[str, Any]],
        on_failed: Callable[[], None],
        events: EventSink,
        now_s: Callable[[], float] = time.monotonic,
        initial_bps: int = 1_000_000,
        transport_cc: bool = True,
        max_m_sections: int = 32,
        negotiation_timeout_s: float = 10.0,
        max_rtcp_bps: int = 500_000,
    ) -> None:
        super().__init__(ice_servers, on_failed, now_s, negotiation_timeout_s, max_rtcp_bps)
        self.participant_id = participant_id
        self._max_m_sections = max_m_sections  # slots (m-sections) at most, in every offer
        self._left_out: frozenset[str] = frozenset()  # tracks wanted but not offered (no slot)
        self.slots: list[Slot] = []
        self._by_ssrc: dict[int, Slot] = {}
        self._emit = events
        self._wanted: list[Producer] = []  # producers to consume, in order of arrival
        self._preferences: dict[str, tuple[int | None, bool]] = {}  # by track id
        self._lock = asyncio.Lock()
        self._offer_outstanding = False
        self._dirty = False
        self.negotiations = 0
        # Downlink estimation, allocation, probing and priorities (sfu/bwe/downlink.py).
        self.downlink = DownlinkController(initial_bps)
        self.estimator = self.downlink.estimator
        self._transport_cc = transport_cc
        # Every RTP packet goes out through the sink (transport-wide sequence numbers, the
        # estimator's send history, the compiled send path once the transport has one).
        self.sink = make_sink(self.estimator.history, None if now_s is time.monotonic else self._now_ms)
        self.sink.fallback = self._send_stamped
        self.padding_bytes_sent = 0
        self.resend_budget = ResendBudget()
        # Answering a player's offer (WHEP): the slots are fixed, ``play`` fills them.
        self.answering = False
        # The two data channels the room relays on, in the first offer (one m=application).
        self.data = ServerChannels()
        # The next offer is the first of a renewed connection (the client starts a new one).
        self._restart_offer = False
        self.last_offer: SubscribeOfferReady | None = None

    @property
    def offer_outstanding(self) -> bool:
        return self._offer_outstanding

    async def renew(self) -> None:
        """A new connection for the same consumers (the client lost the old one, or asked):
        each slot gets an m-section on it again, with the same SSRCs, and an offer with
        ``restart`` goes out; every consumer goes on from a keyframe once it connects."""
        async with self._lock:
            if self.closed:
                return
            self.renew_connection()
            self._offer_outstanding = False
            self._dirty = False
            self.sink.ext_id = 0  # until the new connection's negotiation
            self._restart_offer = True
            self.sink.detach()  # the new connection has its own SRTP keys
            self.data = ServerChannels()  # opened on the new connection with its first offer
            kept: list[Slot] = []
            self._by_ssrc.clear()
            for slot in self.slots:
                if slot.producer is None:
                    self._free(slot)
                    continue  # an idle m-section is not carried over
                slot.transceiver = self._add_transceiver(slot.kind, slot.codec)
                glue.prepare_forwarding_sender(
                    slot.transceiver, slot.producer.participant_id, slot.producer.id, (slot.out.ssrc, slot.rtx_ssrc)
                )
                slot.mid = None
                kept.append(slot)
                self._by_ssrc[slot.out.ssrc] = slot
            self.slots = kept
        await self.negotiate()

    def _estimate_bps(self) -> float | None:
        return self.estimator.estimate_bps

    @property
    def pinned(self) -> set[str]:
        """Track ids the subscriber pinned (served before others)."""
        return self.downlink.pinned

    @property
    def active_speaker(self) -> str | None:
        """The room's active speaker (participant id), whose video is served before others'."""
        return self.downlink.active_speaker

    @active_speaker.setter
    def active_speaker(self, participant_id: str | None) -> None:
        self.downlink.active_speaker = participant_id

    @property
    def send_bps(self) -> int:
        return self.downlink.send_bps

    # -- what to consume ------------------------------------------------------------------

    def consume(self, producer: Producer) -> None:
        if producer not in self._wanted:
            self._wanted.append(producer)

    def unconsume(self, producer: Producer) -> None:
        self._preferences.pop(producer.id, None)
        self.pinned.discard(producer.id)
        if producer in self._wanted:
            self._wanted.remove(producer)
        for slot in self.slots:
            if slot.producer is producer:
                self._free(slot)

    def _free(self, slot: Slot) -> None:
        if slot.consumer is not None:
            slot.consumer.close()
        slot.consumer = None
        slot.producer = None

    def consumers(self) -> list[Consumer]:
        return [s.consumer for s in self.slots if s.consumer is not None and not s.consumer.closed]

    # -- negotiation ----------------------------------------------------------------------

    async def negotiate(self) -> None:
        """Send a new offer if anything changed; at most one offer is outstanding."""
        async with self._lock:
            # aiortc closes the connection by itself when the client's DTLS goes away.
            if self.closed or self.answering or self.pc.signalingState == "closed":
                return
            if self._offer_outstanding:
                self._dirty = True
                return
            self._dirty = False
            # The first offer always goes: it carries the data channels.
            changed = self._assign_slots() or self.negotiations == 0 or self._restart_offer
            if not changed:
                return
            self.data.open(self.pc)
            offer = await self.pc.createOffer()
            # aiortc knows no transport-cc: offer it ourselves (we stamp and estimate).
            if self._transport_cc:
                offer = RTCSessionDescription(add_transport_cc(offer.sdp, TWCC_EXT_ID), "offer")
            await self.pc.setLocalDescription(offer)
            self._tap()
            local = parse_sdp(self.pc.localDescription.sdp)
            bound = self._bind_consumers(local)
            self._offer_outstanding = True
            self.negotiations += 1
            sdp = self.pc.localDescription.sdp
            offer_ready = SubscribeOfferReady(sdp, bound, restart=self._restart_offer)
            self._restart_offer = False
            self.last_offer = offer_ready
        await self._emit(offer_ready)

    def _assign_slots(self) -> bool:
        """Update transceiver directions for the producers we want; True if anything changed."""
        changed = False
        for slot in self.slots:
            if slot.producer is not None and (slot.producer.closed or slot.producer not in self._wanted):
                self._free(slot)
        assigned = {id(s.producer) for s in self.slots if s.producer is not None}
        left_out: set[str] = set()
        for producer in self._wanted:
            if producer.closed or id(producer) in assigned:
                continue
            free = next(
                (
                    s
                    for s in self.slots
                    if s.producer is None
                    and s.kind == producer.kind
                    and s.codec.matches(producer.codec)
                    and s.mid is not None
                ),
                None,
            )
            if free is None:
                if len(self.slots) >= self._max_m_sections - 1:  # one m-section is the data channels
                    left_out.add(producer.id)
                    continue  # not offered until a slot is free: the offer stays answerable
                free = self._new_slot(producer.kind, producer.codec, producer.participant_id, producer.id)
            slot = free
            slot.producer = producer
            glue.prepare_forwarding_sender(slot.transceiver, producer.participant_id, producer.id)
            assigned.add(id(producer))
        if left_out - self._left_out:
            logger.warning(
                "subscriber %s: %d track(s) not offered, every one of max_m_sections_per_sdp (%d) "
                "m-sections is taken; they are offered when a slot frees",
                self.participant_id,
                len(left_out),
                self._max_m_sections,
            )
        self._left_out = frozenset(left_out)
        self._wanted = [p for p in self._wanted if not p.closed]
        for slot in self.slots:
            direction = "sendonly" if slot.producer is not None else "inactive"
            if slot.transceiver.direction != direction or slot.mid is None:
                slot.transceiver.direction = direction
                changed = True
            elif slot.producer is not None and (slot.consumer is None or slot.consumer.producer is not slot.producer):
                changed = True
        return changed

    def _add_transceiver(self, kind: str, codec: Codec | None) -> RTCRtpTransceiver:
        """A sending m-section for ``codec`` (None: any codec we can forward, the offer's order)."""
        transceiver: RTCRtpTransceiver = self.pc.addTransceiver(kind, direction="sendonly")
        if codec is not None and codec.name:
            prefs = [
                c
                for c in RTCRtpSender.getCapabilities(kind).codecs
                if c.mimeType.lower() == f"{kind}/rtx"
                or codec.matches(
                    Codec(
                        c.mimeType.split("/", 1)[1],
                        c.clockRate,
                        tuple(sorted((str(k), str(v)) for k, v in c.parameters.items())),
                    )
                )
            ]
            transceiver.setCodecPreferences(prefs)
        return transceiver

    def _new_slot(self, kind: str, codec: Codec | None, stream_id: str, track_id: str) -> Slot:
        transceiver = self._add_transceiver(kind, codec)
        ssrc, rtx = glue.prepare_forwarding_sender(transceiver, stream_id, track_id)
        out = OutStream(ssrc, random.getrandbits(15), random.getrandbits(32))
        placeholder = codec or Codec("", 0)
        slot = Slot(transceiver=transceiver, kind=kind, codec=placeholder, out=out, rtx_ssrc=rtx)
        self.slots.append(slot)
        self._by_ssrc[ssrc] = slot
        return slot

    def _bind_consumers(self, local: aiortc_sdp.SessionDescription) -> tuple[ConsumerBound, ...]:
        by_mid = {m.rtp.muxId: m for m in local.media}
        described = []
        for slot in self.slots:
            slot.mid = slot.transceiver.mid
            producer = slot.producer
            if producer is None:
                continue
            media = by_mid.get(slot.mid or "")
            negotiated = media_codec(media) if media is not None else None
            if negotiated is None:
                continue
            slot.payload_type = negotiated[1]
            slot.rtx_payload_type = rtx_payload_type(media, negotiated[1])  # type: ignore[arg-type]
            if slot.consumer is None or slot.consumer.producer is not producer:
                if slot.consumer is not None:
                    slot.consumer.close()
                slot.consumer = self._make_consumer(slot, producer, negotiated[1])
            described.append(
                ConsumerBound(
                    mid=slot.mid or "",
                    participant_id=producer.participant_id,
                    track_id=producer.id,
                    kind=producer.kind,
                    source=producer.source,
                )
            )
        return tuple(described)

    def _make_consumer(self, slot: Slot, producer: Producer, payload_type: int) -> Consumer:
        consumer = Consumer(
            producer=producer,
            subscriber_id=self.participant_id,
            out=slot.out,
            payload_type=payload_type,
            send=self.sink,
            now_s=self._now_s,
            # Retransmissions go RTX-wrapped where the offer negotiated RTX for the codec.
            rtx_payload_type=slot.rtx_payload_type,
            rtx_ssrc=slot.rtx_ssrc,
            resend_budget=self.resend_budget,
            estimate_bps=self._estimate_bps,
            # A layer restarted (dynacast): allocate now, not at the next tick (no probe).
            on_layer_started=self._on_layer_started,
        )
        if producer.id in self._preferences:
            consumer.set_preferences(*self._preferences[producer.id], self._now_ms())
        return consumer

    # -- answering a player's offer (WHEP) --------------------------------------------------

    async def answer(self, sdp: str, video_codec: Codec | None = None) -> str:
        """Answer a player's offer to receive: one sending slot per live audio/video m-section,
        empty until ``play`` fills it. ``video_codec``: what the video slots should negotiate
        (the source's codec, when the offer has it); None: the first of the offer's codecs
        that we forward."""
        offer = parse_sdp(sdp)
        check_direction(offer, sending=False)
        if len(offer.media) > self._max_m_sections:
            raise SignalingError(
                "too-many-m-sections",
                f"the offer has {len(offer.media)} m-sections; at most {self._max_m_sections} are accepted",
            )
        async with self.deadline("the play offer"), self._lock:
            if self.slots or self.pc.signalingState != "stable":
                raise SignalingError("wrong-state", "this connection has already been negotiated")
            self.answering = True
            for media in offer.media:
                if media.kind not in ("audio", "video") or media.port == 0:
                    continue
                codec = video_codec if media.kind == "video" else None
                if codec is not None and not any(codec.matches(offered) for offered in offered_codecs(media)):
                    codec = None  # the offer lacks it: whatever it has (the caller checks playable())
                self._new_slot(media.kind, codec, self.participant_id, f"{self.participant_id}-{media.kind}")
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
                glue.detach_receivers(self.pc)
                if self._transport_cc:
                    glue.accept_header_extensions(self.pc, offer, (TWCC_URI,))
                    glue.accept_rtcp_feedback(self.pc, offer, "transport-cc")
                # Players are offerers: as the DTLS server we accept RSA clients too.
                glue.answer_as_dtls_server(self.pc)
                await self.pc.setLocalDescription(await self.pc.createAnswer())
            except SignalingError:
                raise
            except Exception as exc:
                raise SignalingError("bad-sdp", f"offer could not be negotiated: {exc}") from exc
            answer_sdp: str = self.pc.localDescription.sdp
            local = parse_sdp(answer_sdp)
            by_mid = {m.rtp.muxId: m for m in local.media}
            for slot in self.slots:
                slot.mid = slot.transceiver.mid
                section = by_mid.get(slot.mid or "")
                if section is None or section.port == 0 or section.direction not in ("sendonly", "sendrecv"):
                    continue
                negotiated = media_codec(section)
                if negotiated is not None:
                    slot.codec, slot.payload_type = negotiated
                    slot.rtx_payload_type = rtx_payload_type(section, negotiated[1])
            self.sink.ext_id = next(
                (ext_id for m in local.media if (ext_id := extension_id(m, TWCC_URI)) is not None), 0
            )
            self._tap()
            self.negotiations += 1
        return answer_sdp

    def playable(self, producer: Producer) -> bool:
        """Whether a slot of this (answered) connection can carry ``producer``'s codec."""
        slot = self._play_slot(producer.kind)
        return slot is not None and slot.codec.matches(producer.codec)

    def has_slot(self, kind: str) -> bool:
        """Whether the answered offer receives ``kind`` in a codec we forward."""
        return self._play_slot(kind) is not None

    def playing(self, kind: str) -> Producer | None:
        """What the first slot of ``kind`` forwards now (None: nothing)."""
        slot = self._play_slot(kind)
        if slot is None or slot.consumer is None or slot.consumer.closed:
            return None
        return slot.producer

    def _play_slot(self, kind: str) -> Slot | None:
        return next((s for s in self.slots if s.kind == kind and s.payload_type is not None), None)

    def play(self, kind: str, producer: Producer | None) -> bool:
        """Forward ``producer`` on the first slot of ``kind`` (None: nothing) in place of what
        it forwarded: a new consumer on the same outgoing stream, so sequence numbers and
        timestamps go on and the player sees one stream; video resumes on a keyframe, asked of
        the new source at once. No renegotiation. False if the slot's codec cannot carry it."""
        slot = self._play_slot(kind)
        if slot is None or slot.payload_type is None:
            return False
        payload_type = slot.payload_type
        if producer is not None and (producer.closed or not slot.codec.matches(producer.codec)):
            return False
        if producer is not None and slot.producer is producer and slot.consumer and not slot.consumer.closed:
            return True
        self._free(slot)
        if producer is None:
            return True
        slot.producer = producer
        slot.consumer = self._make_consumer(slot, producer, payload_type)
        producer.add_consumer(slot.consumer, self._now_s())
        return True

    async def handle_answer(self, sdp: str) -> None:
        parse_sdp(sdp)
        try:
            await self._handle_answer(sdp)
        except SignalingError as exc:
            if exc.code == "negotiation-timeout":
                self._on_failed()  # the connection is in no known state: the participant goes
            raise

    async def _handle_answer(self, sdp: str) -> None:
        async with self.deadline("the subscribe answer"), self._lock:
            if not self._offer_outstanding or self.pc.signalingState != "have-local-offer":
                raise SignalingError("wrong-state", "no subscribe offer is outstanding")
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            except Exception as exc:
                raise SignalingError("bad-sdp", f"answer could not be applied: {exc}") from exc
            answer = parse_sdp(sdp)
            self.sink.ext_id = next(
                (ext_id for m in answer.media if (ext_id := extension_id(m, TWCC_URI)) is not None), 0
            )
            glue.detach_receivers(self.pc)
            self._tap()
            self._offer_outstanding = False
            now = self._now_s()
            for slot in self.slots:
                consumer = slot.consumer
                if consumer is not None and not consumer.closed and not consumer.producer.closed:
                    consumer.producer.add_consumer(consumer, now)
            dirty = self._dirty
        if dirty:
            await self.negotiate()

    def on_connected(self) -> None:
        for consumer in self.consumers():
            consumer.resync(self._now_ms())

    def set_preferences(self, track_id: str, max_height: int | None, paused: bool, pinned: bool = False) -> None:
        """What the subscriber wants of one track: a height cap, or nothing at all (paused);
        a pinned track is served before all but screen shares when bandwidth is short.

        Kept for tracks whose consumer does not exist yet (applied when it does).
        """
        self._preferences[track_id] = (max_height, paused)
        if pinned:
            self.pinned.add(track_id)
        else:
            self.pinned.discard(track_id)
        for consumer in self.consumers():
            if consumer.producer.id == track_id:
                consumer.set_preferences(max_height, paused, self._now_ms())

    def tick(self, now_ms: int) -> None:
        self.downlink.measure_send_rate(now_ms, self.sink.bytes_sent)
        self.allocate(now_ms)
        for consumer in self.consumers():
            if consumer.producer.simulcast:
                consumer.select(now_ms)

    # -- sending, estimation, allocation --------------------------------------------------

    def send_rtp(self, packet: bytes) -> bool:
        """Send one packet, stamped with a transport-wide sequence number when negotiated."""
        return self.sink.send(packet) >= 0

    def _send_stamped(self, packet: bytes) -> int:
        """The sink's way out when it has no direct path: the length sent, or -1."""
        transport = self.transport
        if transport is None:
            return -1
        return glue.send_rtp_through(transport, packet, self.sink)

    def _on_layer_started(self) -> None:
        self.allocate(self._now_ms(), probe=False)

    def allocate(self, now: int, probe: bool = True) -> None:
        """Fit the videos this subscriber receives into its downlink estimate, and probe."""
        consumers = self.consumers()
        decision = self.downlink.update(now, [stream_input(c, now) for c in consumers], probe)
        estimate = decision.estimate_bps
        for c in consumers:
            alloc = decision.allocations.get(c)
            if alloc is None:
                continue  # audio
            if logger.isEnabledFor(logging.DEBUG) and c.bandwidth_layer != _bandwidth_layer(alloc):
                logger.debug(
                    "subscriber %s: %s -> layer %s (%s, priority: %s), estimate %s bps",
                    self.participant_id,
                    c.producer.id,
                    _bandwidth_layer(alloc),
                    alloc.reason,
                    decision.priorities[c].label,
                    estimate,
                )
            c.set_allocation(alloc, now)
        for change in decision.quality_changes:
            event = TrackQualityChanged(change.track_id, change.paused, str(change.reason), change.estimate_bps)
            spawn(deliver(self._emit, event), name=f"track-quality-{self.participant_id}")
        if decision.padding_bps > 0:
            self._pad(decision.padding_bps)

    def priority(self, consumer: Consumer) -> Priority:
        producer = consumer.producer
        return self.downlink.priority(producer.source, producer.id, producer.participant_id)

    def _pad(self, padding_bps: float) -> None:
        """Send RTX padding at this rate over the next tick, on a video slot with RTX."""
        slot = next(
            (s for s in self.slots if s.kind == "video" and s.consumer is not None and s.rtx_payload_type is not None),
            None,
        )
        if slot is None:
            return
        # Paced over the tick in PADDING_BURSTS bursts, not one: a burst queues on a slow link.
        burst = int(padding_bps * TICK_INTERVAL_S / 8 / PADDING_BURSTS)
        loop = asyncio.get_running_loop()
        self._send_padding(slot, burst)
        for i in range(1, PADDING_BURSTS):
            loop.call_later(i * TICK_INTERVAL_S / PADDING_BURSTS, self._send_padding, slot, burst)

    def _send_padding(self, slot: Slot, budget: int) -> None:
        payload_type = slot.rtx_payload_type
        if slot.consumer is None or payload_type is None or not self.downlink.prober.probing:
            return  # the slot was freed or the probe ended meanwhile
        while budget > 0:
            packet = padding_packet(
                payload_type, slot.out.next_rtx_seq(), slot.out.munger.last_ts, slot.rtx_ssrc, PADDING_PACKET_BYTES
            )
            if not self.send_rtp(packet):
                return
            self.padding_bytes_sent += len(packet)
            budget -= len(packet)

    def describe(self) -> dict[str, Any]:
        now = self._now_ms()
        downlink = self.downlink.describe(now)
        return {
            "bandwidth": downlink["bandwidth"],
            "send_bps": downlink["send_bps"],
            "padding_bytes_sent": self.padding_bytes_sent,
            "malformed_packets": self.malformed_packets,
            "resends_over_budget": self.resend_budget.denied,
            "probe": downlink["probe"],
            "transport_drops": glue.transport_drops(self.pc),
            "active_speaker": self.active_speaker,
            "data_channels": self.data.describe(),
            "consumers": [
                {**c.describe(), "pinned": c.producer.id in self.pinned, "priority": self.priority(c).label}
                for c in self.consumers()
            ],
        }

    # -- RTCP from the subscriber ---------------------------------------------------------

    def handle_rtcp(self, packet: RtcpPacket) -> None:
        if isinstance(packet, RtcpTransportCc):
            self.estimator.on_feedback(packet.feedback, self._now_ms())
        elif isinstance(packet, RtcpPli):
            consumer = self._consumer(packet.media_ssrc)
            if consumer is not None:
                consumer.on_keyframe_request()
        elif isinstance(packet, RtcpFir):
            for ssrc, _ in packet.entries:
                consumer = self._consumer(ssrc)
                if consumer is not None:
                    consumer.on_keyframe_request()
        elif isinstance(packet, RtcpRemb):
            self.estimator.on_remb(packet.bitrate_bps)
            for ssrc in packet.ssrcs:
                consumer = self._consumer(ssrc)
                if consumer is not None:
                    consumer.remb_bps = packet.bitrate_bps
        elif isinstance(packet, RtcpNack):
            consumer = self._consumer(packet.media_ssrc)
            if consumer is not None:
                consumer.on_nack(packet.lost, self._now_ms())
        elif isinstance(packet, (RtcpReceiverReport, RtcpSenderReport)):
            worst = max((r.fraction_lost for r in packet.reports if self._consumer(r.ssrc)), default=None)
            if worst is not None:
                self.estimator.on_receiver_report(worst, self._now_ms(), self.send_bps)
            for report in packet.reports:
                consumer = self._consumer(report.ssrc)
                if consumer is not None:
                    consumer.fraction_lost = report.fraction_lost
                    if report.lsr:
                        now_ntp = ntp_now()
                        rtt = ((now_ntp >> 16) & 0xFFFFFFFF) - report.lsr - report.dlsr
                        if 0 <= rtt < 65536 * 10:
                            consumer.rtt_ms = rtt * 1000 / 65536

    def _consumer(self, ssrc: int) -> Consumer | None:
        slot = self._by_ssrc.get(ssrc)
        if slot is None or slot.consumer is None or slot.consumer.closed:
            return None
        return slot.consumer

    def rtcp_reports(self) -> list[RtcpPacket]:
        now_ntp = ntp_now()
        now_ms = self._now_ms()
        packets: list[RtcpPacket] = []
        for slot in self.slots:
            consumer = slot.consumer
            if consumer is None or consumer.closed:
                continue
            rtp_ts = consumer.sender_report_timestamp(now_ntp, now_ms)
            if rtp_ts is None:
                continue
            packets.append(
                RtcpSenderReport(
                    ssrc=slot.out.ssrc,
                    ntp_timestamp=now_ntp,
                    rtp_timestamp=rtp_ts,
                    packet_count=slot.out.packets_sent,
                    octet_count=slot.out.octets_sent,
                )
            )
        return packets

    def _close_children(self) -> None:
        for slot in self.slots:
            self._free(slot)
        self._wanted.clear()


def stream_input(consumer: Consumer, now_ms: int) -> StreamInput:
    """What the downlink controller needs of one consumer (measures its layers' bitrates)."""
    producer = consumer.producer
    layers = producer.layers
    layer_bps: tuple[int, ...]
    if producer.kind == "audio":
        layer_bps = (layers[0].measure(now_ms),) if not producer.muted else ()
    else:
        layer_bps = tuple(layer.measure(now_ms) for layer in layers)
    return StreamInput(
        key=consumer,
        track_id=producer.id,
        participant_id=producer.participant_id,
        kind=producer.kind,
        source=producer.source,
        muted=producer.muted,
        paused=consumer.paused,
        desired_layer=consumer.desired_layer(),
        max_height=consumer.max_height,
        layer_bps=layer_bps,
        layer_bitrate_bps=tuple(layer.bitrate_bps for layer in layers),
    )


def _bandwidth_layer(alloc: Allocation) -> int | None:
    return PAUSED if alloc.paused_for_bandwidth else alloc.layer_cap

"""The connection a participant receives everything on: the server offers, the client answers.

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
from typing import Any, cast

from aiortc import RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from ..bwe.allocator import (
    PAUSED,
    PRIORITY_NAMES,
    PRIORITY_NORMAL,
    PRIORITY_PINNED,
    PRIORITY_SCREEN,
    PRIORITY_SPEAKER,
    REASON_BANDWIDTH,
    StreamAllocator,
    VideoDemand,
)
from ..bwe.estimator import BandwidthEstimator
from ..bwe.probe import Prober
from ..bwe.twcc import TWCC_URI
from ..errors import SignalingError
from ..forwarding import PAUSED_FOR_BANDWIDTH, Codec, Consumer, OutStream, Producer
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
from ..media.rtp import padding_packet, with_transport_seq
from ..tasks import spawn
from . import aiortc_glue as glue
from .peer import (
    PADDING_BURSTS,
    PADDING_PACKET_BYTES,
    TICK_INTERVAL_S,
    TWCC_EXT_ID,
    PeerBase,
    SignalFn,
    now_ms,
    ntp_now,
)
from .sdp import add_transport_cc, extension_id, media_codec, parse_sdp

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


class SubscribePeer(PeerBase):
    """The connection a participant receives everything on (the server offers)."""

    def __init__(
        self,
        participant_id: str,
        ice_servers: list[dict[str, Any]],
        on_failed: Callable[[], None],
        signal: SignalFn,
        now_s: Callable[[], float] = time.monotonic,
        initial_bps: int = 1_000_000,
        transport_cc: bool = True,
    ) -> None:
        super().__init__(ice_servers, on_failed)
        self.participant_id = participant_id
        self.slots: list[Slot] = []
        self._by_ssrc: dict[int, Slot] = {}
        self._signal = signal
        self._now_s = now_s
        self._wanted: list[Producer] = []  # producers to consume, in order of arrival
        self._preferences: dict[str, tuple[int | None, bool]] = {}  # by track id
        self.pinned: set[str] = set()  # track ids the subscriber pinned (served before others)
        self.active_speaker: str | None = None  # participant id, set by the room
        self._lock = asyncio.Lock()
        self._offer_outstanding = False
        self._dirty = False
        self.negotiations = 0
        # Downlink estimation and allocation.
        self.estimator = BandwidthEstimator(initial_bps)
        self.allocator = StreamAllocator()
        self._transport_cc = transport_cc
        self._twcc_ext_id: int | None = None
        self._tw_seq = 0
        self._bytes_sent = 0
        self._rate_window: tuple[int, int] = (0, 0)  # (time, bytes) at the last measurement
        self.send_bps = 0
        self._told: dict[str, bool] = {}  # track id -> paused for bandwidth, as last told
        self.prober = Prober()
        self.padding_bytes_sent = 0
        self.resend_budget = ResendBudget()

    def _estimate_bps(self) -> float | None:
        return self.estimator.estimate_bps

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
            if self.closed or self.pc.signalingState == "closed":
                return
            if self._offer_outstanding:
                self._dirty = True
                return
            self._dirty = False
            changed = self._assign_slots()
            if not changed:
                return
            offer = await self.pc.createOffer()
            # aiortc knows no transport-cc: offer it ourselves (we stamp and estimate).
            if self._transport_cc:
                offer = RTCSessionDescription(add_transport_cc(offer.sdp, TWCC_EXT_ID), "offer")
            await self.pc.setLocalDescription(offer)
            self._tap()
            local = parse_sdp(self.pc.localDescription.sdp)
            consumers_msg = self._bind_consumers(local)
            self._offer_outstanding = True
            self.negotiations += 1
            sdp = self.pc.localDescription.sdp
        await self._signal({"type": "offer", "pc": "subscribe", "sdp": sdp, "consumers": consumers_msg})

    def _assign_slots(self) -> bool:
        """Update transceiver directions for the producers we want; True if anything changed."""
        changed = False
        for slot in self.slots:
            if slot.producer is not None and (slot.producer.closed or slot.producer not in self._wanted):
                self._free(slot)
        assigned = {id(s.producer) for s in self.slots if s.producer is not None}
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
            slot = free if free is not None else self._new_slot(producer)
            slot.producer = producer
            glue.prepare_forwarding_sender(slot.transceiver, producer.participant_id, producer.id)
            assigned.add(id(producer))
        self._wanted = [p for p in self._wanted if not p.closed]
        for slot in self.slots:
            direction = "sendonly" if slot.producer is not None else "inactive"
            if slot.transceiver.direction != direction or slot.mid is None:
                slot.transceiver.direction = direction
                changed = True
            elif slot.producer is not None and (slot.consumer is None or slot.consumer.producer is not slot.producer):
                changed = True
        return changed

    def _new_slot(self, producer: Producer) -> Slot:
        transceiver = self.pc.addTransceiver(producer.kind, direction="sendonly")
        prefs = [
            c
            for c in RTCRtpSender.getCapabilities(producer.kind).codecs
            if c.mimeType.lower() == f"{producer.kind}/rtx"
            or producer.codec.matches(
                Codec(
                    c.mimeType.split("/", 1)[1],
                    c.clockRate,
                    tuple(sorted((str(k), str(v)) for k, v in c.parameters.items())),
                )
            )
        ]
        transceiver.setCodecPreferences(prefs)
        ssrc, rtx = glue.prepare_forwarding_sender(transceiver, producer.participant_id, producer.id)
        out = OutStream(ssrc, random.getrandbits(15), random.getrandbits(32))
        slot = Slot(transceiver=transceiver, kind=producer.kind, codec=producer.codec, out=out, rtx_ssrc=rtx)
        self.slots.append(slot)
        self._by_ssrc[ssrc] = slot
        return slot

    def _bind_consumers(self, local: aiortc_sdp.SessionDescription) -> list[dict[str, Any]]:
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
            slot.rtx_payload_type = next(
                (
                    c.payloadType
                    for c in media.rtp.codecs  # type: ignore[union-attr]
                    if c.name.lower() == "rtx" and str(c.parameters.get("apt")) == str(negotiated[1])
                ),
                None,
            )
            if slot.consumer is None or slot.consumer.producer is not producer:
                if slot.consumer is not None:
                    slot.consumer.close()
                slot.consumer = Consumer(
                    producer=producer,
                    subscriber_id=self.participant_id,
                    out=slot.out,
                    payload_type=negotiated[1],
                    send=self.send_rtp,
                    now_s=self._now_s,
                )
                # A layer restarted (dynacast): allocate now, not at the next tick (no probe).
                slot.consumer.on_layer_started = lambda: self.allocate(now_ms(), probe=False)
                if producer.id in self._preferences:
                    slot.consumer.set_preferences(*self._preferences[producer.id], now_ms())
            # Retransmissions go RTX-wrapped where the offer negotiated RTX for the codec.
            slot.consumer.rtx_payload_type = slot.rtx_payload_type
            slot.consumer.rtx_ssrc = slot.rtx_ssrc
            slot.consumer.resend_budget = self.resend_budget
            slot.consumer.estimate_bps = self._estimate_bps
            described.append(
                {
                    "mid": slot.mid,
                    "participant": producer.participant_id,
                    "track": producer.id,
                    "kind": producer.kind,
                    "source": producer.source,
                }
            )
        return described

    async def handle_answer(self, sdp: str) -> None:
        parse_sdp(sdp)
        async with self._lock:
            if not self._offer_outstanding or self.pc.signalingState != "have-local-offer":
                raise SignalingError("wrong-state", "no subscribe offer is outstanding")
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            except Exception as exc:
                raise SignalingError("bad-sdp", f"answer could not be applied: {exc}") from exc
            answer = parse_sdp(sdp)
            self._twcc_ext_id = next(
                (ext_id for m in answer.media if (ext_id := extension_id(m, TWCC_URI)) is not None), None
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
            consumer.restart()
            consumer.select(now_ms())

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
                consumer.set_preferences(max_height, paused, now_ms())

    def tick(self, now_ms: int) -> None:
        self._measure_send_rate(now_ms)
        self.allocate(now_ms)
        for consumer in self.consumers():
            if consumer.producer.simulcast:
                consumer.select(now_ms)

    # -- sending, estimation, allocation --------------------------------------------------

    def send_rtp(self, packet: bytes) -> bool:
        """Send one packet, stamped with a transport-wide sequence number when negotiated."""
        transport = self.transport
        if transport is None:
            return False
        ext_id = self._twcc_ext_id
        if ext_id is not None:
            tw = self._tw_seq
            self._tw_seq = (tw + 1) & 0xFFFF
            packet = with_transport_seq(packet, ext_id, tw)
            if not glue.send_packet(transport, packet):
                return False
            self.estimator.on_sent(tw, now_ms(), len(packet))
        elif not glue.send_packet(transport, packet):
            return False
        self._bytes_sent += len(packet)
        return True

    def _measure_send_rate(self, now: int) -> None:
        at, sent = self._rate_window
        if now - at >= 500:
            if at:
                self.send_bps = (self._bytes_sent - sent) * 8000 // (now - at)
            self._rate_window = (now, self._bytes_sent)

    def allocate(self, now: int, probe: bool = True) -> None:
        """Fit the videos this subscriber receives into its downlink estimate."""
        estimate = self.estimator.estimate_bps
        consumers = self.consumers()
        demands = []
        audio = 0
        audio_bps = 0
        for c in consumers:
            producer = c.producer
            if producer.kind == "audio":
                if not producer.muted:
                    audio += 1
                    audio_bps += producer.layers[0].measure(now)
                continue
            layer_bps = tuple(layer.measure(now) for layer in producer.layers)
            wanted = PAUSED if c.paused or producer.muted else c.desired_layer()
            priority = self.priority(c)
            demands.append(VideoDemand(c, priority, wanted, layer_bps, c.max_height or 100_000))
        allocations = self.allocator.update(
            now, estimate, audio, demands, self.estimator.loss_limited, audio_bps=audio_bps or None
        )
        for key, alloc in allocations.items():
            c = cast(Consumer, key)
            bandwidth_paused = alloc.layer == PAUSED and alloc.reason == REASON_BANDWIDTH
            if estimate is None:
                layer = None
            elif bandwidth_paused:
                layer = PAUSED_FOR_BANDWIDTH
            else:
                layer = alloc.layer if alloc.layer >= 0 else None
            if layer != c.bandwidth_layer:
                logger.debug(
                    "subscriber %s: %s -> layer %s (%s, priority: %s), estimate %s bps",
                    self.participant_id,
                    c.producer.id,
                    layer,
                    alloc.reason,
                    PRIORITY_NAMES[self.priority(c)],
                    estimate,
                )
            c.set_bandwidth_layer(layer, now)
            if self._told.get(c.producer.id, False) != bandwidth_paused:
                self._told[c.producer.id] = bandwidth_paused
                msg = {
                    "type": "track-quality",
                    "track": c.producer.id,
                    "paused": bandwidth_paused,
                    "reason": alloc.reason,
                    "estimate_bps": estimate,
                }
                spawn(self._signal(msg), name=f"track-quality-{self.participant_id}")
        if probe:
            self._probe(now, estimate, allocations)

    def priority(self, consumer: Consumer) -> int:
        """Screen shares, then what this subscriber pinned, then the active speaker's video."""
        producer = consumer.producer
        if producer.source == "screen":
            return PRIORITY_SCREEN
        if producer.id in self.pinned:
            return PRIORITY_PINNED
        if producer.participant_id == self.active_speaker:
            return PRIORITY_SPEAKER
        return PRIORITY_NORMAL

    def _probe(self, now: int, estimate: int | None, allocations: dict[Any, Any]) -> None:
        """While bandwidth holds a video back, test for more with RTX padding (sfu/bwe/probe.py).

        With transport-cc the server's own estimator judges the probe; without it, the
        subscriber's REMB does (its receive-side estimate may rise to 1.5x what arrives, so a
        REMB-limited subscriber that only ever receives its current layers would never climb).
        """
        if not (self.estimator.transport_cc or self.estimator.remb_bps is not None):
            return
        limited = any(a.reason == REASON_BANDWIDTH for a in allocations.values())
        successes = self.prober.successes
        padding_bps = self.prober.padding_bps(
            now,
            estimate,
            self._videos_bps(allocations, step_up=False),
            self._videos_bps(allocations, step_up=True) if limited else 0.0,
            self.estimator.congestion_events,
            self.estimator.owd_ms,
        )
        if self.prober.successes > successes and estimate is not None:
            self.allocator.confirm(now, estimate)  # the probe showed the estimate gets through
        if padding_bps <= 0:
            return
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
        if slot.consumer is None or payload_type is None or not self.prober.probing:
            return  # the slot was freed or the probe ended meanwhile
        while budget > 0:
            packet = padding_packet(
                payload_type,
                slot.out.next_rtx_seq(),
                slot.out.munger.last_ts,
                slot.rtx_ssrc,
                PADDING_PACKET_BYTES,
            )
            if not self.send_rtp(packet):
                return
            self.padding_bytes_sent += len(packet)
            budget -= len(packet)

    @staticmethod
    def _videos_bps(allocations: dict[Any, Any], step_up: bool) -> float:
        """What the allocated videos need together; with ``step_up``, if each video held back by
        bandwidth got one layer more."""
        total = 0.0
        for consumer, alloc in allocations.items():
            layers = consumer.producer.layers
            index = alloc.layer + 1 if step_up and alloc.reason == REASON_BANDWIDTH else alloc.layer
            if 0 <= index < len(layers):
                total += layers[index].bitrate_bps
        return total

    def describe(self) -> dict[str, Any]:
        now = now_ms()
        return {
            "bandwidth": self.estimator.describe(now),
            "send_bps": self.send_bps,
            "padding_bytes_sent": self.padding_bytes_sent,
            "malformed_packets": self.malformed_packets,
            "resends_over_budget": self.resend_budget.denied,
            "probe": self.prober.describe(),
            "active_speaker": self.active_speaker,
            "consumers": [
                {**c.describe(), "pinned": c.producer.id in self.pinned, "priority": PRIORITY_NAMES[self.priority(c)]}
                for c in self.consumers()
            ],
        }

    # -- RTCP from the subscriber ---------------------------------------------------------

    def handle_rtcp(self, packet: RtcpPacket) -> None:
        if isinstance(packet, RtcpTransportCc):
            self.estimator.on_feedback(packet.feedback, now_ms())
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
                consumer.on_nack(packet.lost, now_ms())
        elif isinstance(packet, (RtcpReceiverReport, RtcpSenderReport)):
            worst = max((r.fraction_lost for r in packet.reports if self._consumer(r.ssrc)), default=None)
            if worst is not None:
                self.estimator.on_receiver_report(worst, now_ms(), self.send_bps)
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
        packets: list[RtcpPacket] = []
        for slot in self.slots:
            consumer = slot.consumer
            if consumer is None or consumer.closed:
                continue
            rtp_ts = consumer.sender_report_timestamp(now_ntp)
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

    async def close(self) -> None:
        for slot in self.slots:
            self._free(slot)
        self._wanted.clear()
        await super().close()

"""The two peer connections of a participant, on top of aiortc.

PublishPeer: the client offers, we answer; every sending m-section becomes a Producer.
SubscribePeer: we offer, the client answers; every m-section carries one Consumer at a time.

aiortc is used through its public API plus the handful of internals in aiortc_glue.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    pack_remb_fci,
    unpack_remb_fci,
)
from aiortc.sdp import candidate_from_sdp

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
from ..bwe.twcc import (
    RTCP_RTPFB,
    TWCC_FMT,
    TWCC_URI,
    FeedbackGenerator,
    add_transport_cc,
    parse_feedback,
    read_transport_seq,
    split_compound,
)
from ..dynacast import LayerNeed, needed_layers
from ..errors import SignalingError
from ..forwarding import PAUSED_FOR_BANDWIDTH, Codec, Consumer, Layer, OutStream, Producer
from ..media.nack import ResendBudget, nack_packet
from ..media.rtp import MalformedPacket, header_extensions, parse_rtp
from ..speaker import AUDIO_LEVEL_URI, AudioLevelMeter, read_audio_level
from ..tasks import spawn
from . import aiortc_glue as glue

logger = logging.getLogger(__name__)

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
SIMULCAST_EXTENSION_URIS = (RID_URI, REPAIRED_RID_URI)
MAX_SIMULCAST_LAYERS = 4
TWCC_EXT_ID = 5  # aiortc uses 1-3 for its own extensions
PADDING_PACKET_BYTES = 255
PADDING_BURSTS = 10  # per tick
RTCP_INTERVAL_S = 1.0
TWCC_FEEDBACK_INTERVAL_S = 0.05  # transport-cc feedback to publishers (libwebrtc: 50-250 ms)
TWCC_FEEDBACK_BURST = 50  # ... or as soon as this many packets wait to be reported
TICK_INTERVAL_S = 0.2
NTP_EPOCH_OFFSET_S = 2208988800
NON_MEDIA_CODECS = {"rtx", "red", "ulpfec", "flexfec-03", "cn", "telephone-event"}

SignalFn = Callable[[dict[str, Any]], Awaitable[None]]


def now_ms() -> int:
    """Wall-clock milliseconds since the NTP epoch, the clock of packet arrival times."""
    return int((time.time() + NTP_EPOCH_OFFSET_S) * 1000)


def ntp_now() -> int:
    t = time.time() + NTP_EPOCH_OFFSET_S
    return (int(t) << 32) | int((t % 1) * (1 << 32))


def parse_sdp(text: str) -> aiortc_sdp.SessionDescription:
    """Parse SDP or raise SignalingError("bad-sdp")."""
    if not isinstance(text, str) or not text.startswith("v=0"):
        raise SignalingError("bad-sdp", "SDP must start with v=0")
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line]
    bad = next((line for line in lines if len(line) < 2 or line[1] != "=" or not line[0].islower()), None)
    if bad is not None:
        raise SignalingError("bad-sdp", f"not an SDP line: {bad[:40]!r}")
    present = {line[0] for line in lines}
    missing = [f"{k}=" for k in "vost" if k not in present]
    if missing:
        raise SignalingError("bad-sdp", f"SDP lacks {', '.join(missing)}")
    try:
        description = aiortc_sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc raises many kinds on garbage
        raise SignalingError("bad-sdp", f"SDP could not be parsed: {exc}") from exc
    for media in description.media:
        if media.kind in ("audio", "video"):
            if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
                raise SignalingError("bad-sdp", f"m-section {media.rtp.muxId} has no ICE credentials")
            if media.dtls is None or not media.dtls.fingerprints:
                raise SignalingError("bad-sdp", f"m-section {media.rtp.muxId} has no DTLS fingerprint")
            if not media.rtp.muxId:
                raise SignalingError("bad-sdp", "every m-section needs an a=mid")
    return description


def media_codec(media: aiortc_sdp.MediaDescription) -> tuple[Codec, int] | None:
    for c in media.rtp.codecs:
        if c.name.lower() not in NON_MEDIA_CODECS:
            params = tuple(sorted((str(k), str(v)) for k, v in c.parameters.items()))
            return Codec(c.name, c.clockRate, params), c.payloadType
    return None


def rtx_payload_type(media: aiortc_sdp.MediaDescription, payload_type: int) -> int | None:
    """The payload type of the RTX codec for ``payload_type`` in an m-section (None: none)."""
    for c in media.rtp.codecs:
        if c.name.lower() == "rtx" and str(c.parameters.get("apt")) == str(payload_type):
            return c.payloadType  # type: ignore[no-any-return]
    return None


def extension_id(media: aiortc_sdp.MediaDescription, uri: str) -> int | None:
    for ext in media.rtp.headerExtensions:
        if ext.uri == uri:
            return ext.id
    return None


def _sections(sdp: str) -> list[list[str]]:
    """SDP lines grouped by section: the session part first, then one list per m-line."""
    sections: list[list[str]] = [[]]
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("m="):
            sections.append([])
        if line:
            sections[-1].append(line)
    return sections


def simulcast_offers(sdp: str) -> dict[str, list[str]]:
    """mid -> send RIDs, lowest quality first, for m-sections that offer RID simulcast.

    Only what ``a=simulcast:send`` lists and ``a=rid:... send`` declares counts; paused
    RIDs (``~rid``) are received too, alternatives (``a,b``) take their first choice.
    """
    out: dict[str, list[str]] = {}
    for lines in _sections(sdp)[1:]:
        mid = next((ln[6:].strip() for ln in lines if ln.startswith("a=mid:")), None)
        declared = {
            ln[6:].split()[0]
            for ln in lines
            if ln.startswith("a=rid:") and len(ln[6:].split()) > 1 and ln[6:].split()[1] == "send"
        }
        spec = next((ln[len("a=simulcast:") :].strip() for ln in lines if ln.startswith("a=simulcast:")), None)
        if mid is None or spec is None:
            continue
        parts = spec.split()
        if len(parts) < 2 or parts[0] != "send":
            continue
        rids = []
        for alternatives in parts[1].split(";"):
            rid = alternatives.split(",")[0].lstrip("~")
            if rid in declared and rid not in rids:
                rids.append(rid)
        if len(rids) > 1:
            out[mid] = rids[:MAX_SIMULCAST_LAYERS]
    return out


def add_simulcast_answer(sdp: str, simulcast: dict[str, list[str]]) -> str:
    """Add the receive RIDs and ``a=simulcast:recv`` to the answer's m-sections."""
    if not simulcast:
        return sdp
    out: list[str] = []
    for lines in _sections(sdp):
        mid = next((ln[6:].strip() for ln in lines if ln.startswith("a=mid:")), None)
        out.extend(lines)
        rids = simulcast.get(mid or "")
        if rids and lines and lines[0].startswith("m=video") and not lines[0].startswith("m=video 0 "):
            out.extend(f"a=rid:{rid} recv" for rid in rids)
            out.append("a=simulcast:recv " + ";".join(rids))
    return "\r\n".join(out) + "\r\n"


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

    def __init__(self, ice_servers: list[dict[str, Any]], on_failed: Callable[[], None]) -> None:
        self.pc = glue.create_peer_connection(ice_servers)
        self.rtcp_ssrc = random.getrandbits(32)
        self.malformed_packets = 0
        self.closed = False
        self._on_failed = on_failed
        self._transport: Any = None
        self._rtcp_task: asyncio.Task[None] | None = None

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            state = self.pc.connectionState
            if state == "connected":
                self.on_connected()
            elif state in ("failed", "closed") and not self.closed:
                self._on_failed()

    def on_connected(self) -> None:
        pass

    @property
    def transport(self) -> Any:
        """The connection's one DTLS transport (everything is bundled); looked up once."""
        if self._transport is None:
            transports = glue.dtls_transports(self.pc)
            self._transport = transports[0] if transports else None
        return self._transport

    def _tap(self) -> None:
        glue.detach_receivers(self.pc)
        glue.install_tap(self.pc, self._on_rtp, self._on_rtcp)
        if self._rtcp_task is None:
            self._rtcp_task = asyncio.get_running_loop().create_task(
                self._run_rtcp(), name=f"rtcp-{type(self).__name__}"
            )

    def tick(self, now_ms: int) -> None:
        """Periodic work between RTCP reports (every TICK_INTERVAL_S)."""

    def send_rtcp(self, packets: list[Any]) -> bool:
        transport = self.transport
        if transport is None or not packets:
            return False
        return glue.send_packet(transport, b"".join(bytes(p) for p in packets), rtcp=True)

    def send_rtp(self, packet: bytes) -> bool:
        transport = self.transport
        return transport is not None and glue.send_packet(transport, packet)

    async def _on_rtp(self, data: bytes, arrival_ms: int) -> None:
        pass

    async def _on_rtcp(self, data: bytes) -> None:
        try:
            packets = RtcpPacket.parse(data)
        except Exception:
            self.malformed_packets += 1
            return
        for packet in packets:
            self.handle_rtcp(packet)

    def handle_rtcp(self, packet: Any) -> None:
        pass

    def rtcp_reports(self) -> list[Any]:
        return []

    async def _run_rtcp(self) -> None:
        next_report = time.monotonic()
        try:
            while not self.closed:
                await asyncio.sleep(TICK_INTERVAL_S)
                try:
                    self.tick(now_ms())
                    if time.monotonic() >= next_report:
                        next_report = time.monotonic() + RTCP_INTERVAL_S * (0.5 + random.random())
                        self.send_rtcp(self.rtcp_reports())
                except Exception:
                    logger.exception("periodic RTCP work failed")
        except asyncio.CancelledError:
            pass

    async def add_candidate(self, candidate: dict[str, Any] | None) -> None:
        await add_ice_candidate(self.pc, candidate)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._rtcp_task is not None:
            self._rtcp_task.cancel()
        try:
            await self.pc.close()
        except Exception:
            logger.exception("closing a peer connection failed")


class PublishPeer(PeerBase):
    """The connection a participant publishes on (the client offers)."""

    def __init__(
        self,
        participant_id: str,
        ice_servers: list[dict[str, Any]],
        on_failed: Callable[[], None],
        publisher_bitrate_bps: int,
        now_s: Callable[[], float] = time.monotonic,
        signal: SignalFn | None = None,
        dynacast: bool = True,
        transport_cc: bool = True,
    ) -> None:
        super().__init__(ice_servers, on_failed)
        self.participant_id = participant_id
        self.producers: dict[str, Producer] = {}  # by mid
        # Dynacast: which layers of each video the publisher is asked to send (`layers`).
        self._signal = signal
        self._dynacast = dynacast and signal is not None
        self._layer_needs: dict[Producer, LayerNeed] = {}
        self.layer_changes_sent = 0
        self._by_ssrc: dict[int, tuple[Producer, Layer]] = {}
        self._ignored_ssrcs: set[int] = set()  # streams we do not forward
        self._rtx_by_ssrc: dict[int, tuple[Producer, Layer]] = {}  # the layers' RTX streams
        self._fid: dict[int, int] = {}  # RTX SSRC -> media SSRC, from a=ssrc-group:FID
        self._ext_ids: dict[str, int] = {}  # header extension URI -> id, from the answer
        self._lsr: dict[int, tuple[int, float]] = {}  # ssrc -> (LSR, arrival)
        self._publisher_bitrate_bps = publisher_bitrate_bps
        self._now_s = now_s
        self.unroutable_packets = 0
        self.audio_levels: dict[str, AudioLevelMeter] = {}  # by producer id (audio only)
        # transport-cc: we answer it (if offered and enabled) and send the publisher feedback.
        self._transport_cc = transport_cc
        self._twcc_ext_id: int | None = None
        self.feedback = FeedbackGenerator(self.rtcp_ssrc)
        self._feedback_task: asyncio.Task[None] | None = None

    async def handle_offer(self, sdp: str, sources: dict[str, str]) -> tuple[str, list[Producer], list[Producer]]:
        """Apply an offer; returns (answer SDP, producers added, producers removed)."""
        offer = parse_sdp(sdp)
        simulcast = simulcast_offers(sdp)
        if self.pc.signalingState != "stable":
            raise SignalingError("wrong-state", "the previous publish offer is still being handled")
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
            answer = await self.pc.createAnswer()
            await self.pc.setLocalDescription(answer)
        except SignalingError:
            raise
        except Exception as exc:
            raise SignalingError("bad-sdp", f"offer could not be negotiated: {exc}") from exc
        self._tap()
        answer_sdp = add_simulcast_answer(self.pc.localDescription.sdp, simulcast)
        local = parse_sdp(answer_sdp)
        added, removed = self._update_producers(offer, local, sources, simulcast)
        self._twcc_ext_id = self._ext_ids.get(TWCC_URI)
        if self._twcc_ext_id is not None and self._feedback_task is None:
            glue.track_arrival_times(self.pc)
            self._feedback_task = asyncio.get_running_loop().create_task(
                self._run_feedback(), name=f"twcc-feedback-{self.participant_id}"
            )
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
            if not (sending and negotiated):
                continue
            publishing.add(mid)
            fid = {
                int(g.items[1]): int(g.items[0]) for g in media.ssrc_group if g.semantic == "FID" and len(g.items) > 1
            }
            media_ssrcs = [s.ssrc for s in media.ssrc if s.ssrc not in fid]
            self._fid.update(fid)
            rids = simulcast.get(mid)
            producer = self.producers.get(mid)
            if producer is not None and [layer.rid for layer in producer.layers] != (rids or [None]):
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
                )
                self.producers[mid] = producer
                added.append(producer)
                if self._dynacast and producer.kind == "video":
                    self._layer_needs[producer] = LayerNeed(len(producer.layers), now_ms())
                    producer.on_demand_changed = lambda p=producer: self._update_layers(p, now_ms())
                if producer.kind == "audio":
                    self.audio_levels[producer.id] = AudioLevelMeter()
            producer.rtx_payload_type = rtx_payload_type(local, producer.payload_type)  # type: ignore[arg-type]
            if not producer.simulcast and media_ssrcs and producer.layers[0].ssrc != media_ssrcs[0]:
                self._bind(producer, producer.layers[0], media_ssrcs[0])
        for mid in list(self.producers):
            if mid not in publishing:
                removed.append(self._remove(mid))
        return added, removed

    def _remove(self, mid: str) -> Producer:
        producer = self.producers.pop(mid)
        self._layer_needs.pop(producer, None)
        self.audio_levels.pop(producer.id, None)
        for layer in producer.layers:
            if layer.ssrc is not None:
                self._by_ssrc.pop(layer.ssrc, None)
        for ssrc in [s for s, route in self._rtx_by_ssrc.items() if route[0] is producer]:
            del self._rtx_by_ssrc[ssrc]
        producer.close()
        return producer

    def _bind(self, producer: Producer, layer: Layer, ssrc: int) -> None:
        if layer.ssrc is not None:
            self._by_ssrc.pop(layer.ssrc, None)
        layer.ssrc = ssrc
        self._by_ssrc[ssrc] = (producer, layer)
        if layer.nack is not None:
            layer.nack.reset()
        for rtx_ssrc, media_ssrc in self._fid.items():
            if media_ssrc == ssrc:
                self._rtx_by_ssrc[rtx_ssrc] = (producer, layer)

    def _route_unknown(self, data: bytes, ext_start: int, ssrc: int) -> tuple[Producer, Layer] | None:
        """Learn the SSRC of a stream from its MID and RID header extensions."""
        if ssrc in self._ignored_ssrcs or ext_start < 0:
            return None
        extensions = header_extensions(data, ext_start)
        mid_id = self._ext_ids.get(MID_URI)
        mid_bytes = extensions.get(mid_id) if mid_id is not None else None
        if mid_bytes is None:
            return None
        producer = self.producers.get(mid_bytes.decode("ascii", "replace"))
        if producer is None:
            return None
        repaired_id = self._ext_ids.get(REPAIRED_RID_URI)
        repaired = repaired_id is not None and repaired_id in extensions
        if producer.simulcast:
            rid_id = repaired_id if repaired else self._ext_ids.get(RID_URI)
            rid = extensions.get(rid_id) if rid_id is not None else None
            layer = producer.layer_by_rid(rid.decode("ascii", "replace")) if rid is not None else None
        else:
            layer = producer.layers[0]
        if repaired:
            if layer is not None and producer.rtx_payload_type is not None:
                self._rtx_by_ssrc[ssrc] = (producer, layer)  # the layer's RTX stream
            else:
                self._ignored_ssrcs.add(ssrc)
            return None
        if layer is None or layer.ssrc is not None:
            return None  # a second SSRC on a known stream (e.g. RTX): not forwarded
        self._bind(producer, layer, ssrc)
        return producer, layer

    async def _on_rtp(self, data: bytes, arrival_ms: int) -> None:
        try:
            view = parse_rtp(data)
        except MalformedPacket:
            self.malformed_packets += 1
            return
        if self._twcc_ext_id is not None:
            tw_seq = read_transport_seq(data, view.ext_start, self._twcc_ext_id)
            if tw_seq >= 0:
                feedback = self.feedback
                feedback.media_ssrc = view.ssrc
                feedback.record(tw_seq, glue.arrival_us(self.transport))
                if len(feedback.pending) >= TWCC_FEEDBACK_BURST:
                    self.send_feedback()
        route = self._by_ssrc.get(view.ssrc)
        if route is None:
            rtx = self._rtx_by_ssrc.get(view.ssrc)
            if rtx is None:
                route = self._route_unknown(data, view.ext_start, view.ssrc)
                rtx = self._rtx_by_ssrc.get(view.ssrc) if route is None else None
            if rtx is not None and view.payload_type == rtx[0].rtx_payload_type:
                rtx[0].on_rtx(rtx[1], data, view, arrival_ms)
                return
            if route is None:
                self.unroutable_packets += 1
                return
        producer = route[0]
        if producer.kind == "audio" and view.ext_start >= 0:
            level_id = self._ext_ids.get(AUDIO_LEVEL_URI)
            if level_id is not None:
                level = read_audio_level(data, view.ext_start, level_id)
                meter = self.audio_levels.get(producer.id)
                if level >= 0 and meter is not None:
                    meter.observe(level)
        producer.on_rtp(route[1], data, view, arrival_ms)

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

    def handle_rtcp(self, packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            route = self._by_ssrc.get(packet.ssrc)
            ntp = packet.sender_info.ntp_timestamp
            self._lsr[packet.ssrc] = ((ntp >> 16) & 0xFFFFFFFF, time.time())
            if route is not None:
                route[0].on_sender_report(route[1], ntp, packet.sender_info.rtp_timestamp)

    def _update_layers(self, producer: Producer, now: int) -> None:
        """Tell the publisher when the layers its consumers need change (dynacast)."""
        need = self._layer_needs.get(producer)
        if need is None or producer.closed or self._signal is None:
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
        msg = {"type": "layers", "track": producer.id, "active": active, "paused": need.active == 0}
        spawn(self._signal(msg), name=f"layers-{self.participant_id}")

    def _send_pli(self, producer: Producer, layer: Layer) -> None:
        if layer.ssrc is not None:
            self.send_rtcp([RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self.rtcp_ssrc, media_ssrc=layer.ssrc)])

    def _send_nack(self, producer: Producer, layer: Layer, ext_seqs: list[int]) -> None:
        transport = self.transport
        if layer.ssrc is not None and transport is not None:
            glue.send_packet(transport, nack_packet(self.rtcp_ssrc, layer.ssrc, ext_seqs), rtcp=True)

    def tick(self, now_ms: int) -> None:
        now_s = self._now_s()
        for producer in list(self.producers.values()):
            producer.tick(now_ms, now_s)  # upstream NACKs due
        for producer in list(self._layer_needs):
            self._update_layers(producer, now_ms)  # dynacast

    def describe(self) -> dict[str, Any]:
        """Upstream loss repair per published track, and the transport-cc feedback we send."""
        return {
            "tracks": [{"track": p.id, **p.describe_repair()} for p in self.producers.values()],
            "transport_cc": {
                "negotiated": self._twcc_ext_id is not None,
                "feedback_packets_sent": self.feedback.packets_sent,
                "late_dropped": self.feedback.late_dropped,
            },
        }

    def layers(self) -> list[Layer]:
        return [layer for p in self.producers.values() for layer in p.layers if layer.ssrc is not None]

    def rtcp_reports(self) -> list[Any]:
        reports = []
        now = time.time()
        for layer in self.layers():
            stats = layer.stats
            if stats.packets == 0:
                continue
            lsr, dlsr = 0, 0
            if layer.ssrc in self._lsr:
                lsr, at = self._lsr[layer.ssrc]
                dlsr = int((now - at) * 65536)
            reports.append(
                RtcpReceiverInfo(
                    ssrc=layer.ssrc,
                    fraction_lost=stats.fraction_lost(),
                    packets_lost=stats.cumulative_lost,
                    highest_sequence=stats.highest_ext_seq & 0xFFFFFFFF,
                    jitter=stats.jitter,
                    lsr=lsr,
                    dlsr=dlsr,
                )
            )
        packets: list[Any] = []
        for i in range(0, len(reports), 31):  # at most 31 report blocks per RR
            packets.append(RtcpRrPacket(ssrc=self.rtcp_ssrc, reports=reports[i : i + 31]))
        video = [layer.ssrc for p in self.producers.values() if p.kind == "video" for layer in p.layers if layer.ssrc]
        if video and self._publisher_bitrate_bps > 0:
            # One REMB for all video streams and all their layers together.
            packets.append(
                RtcpPsfbPacket(
                    fmt=RTCP_PSFB_APP,
                    ssrc=self.rtcp_ssrc,
                    media_ssrc=0,
                    fci=pack_remb_fci(self._publisher_bitrate_bps, video),
                )
            )
        return packets

    async def close(self) -> None:
        if self._feedback_task is not None:
            self._feedback_task.cancel()
        for producer in self.producers.values():
            producer.close()
        self.producers.clear()
        self._layer_needs.clear()
        self._by_ssrc.clear()
        self._rtx_by_ssrc.clear()
        await super().close()


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
            slot = next(
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
            if slot is None:
                slot = self._new_slot(producer)
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
                Codec(c.mimeType.split("/", 1)[1], c.clockRate, tuple(sorted(c.parameters.items())))
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
            packet = (
                bytes((packet[0] | 0x10,))
                + packet[1:12]
                + bytes((0xBE, 0xDE, 0, 1, (ext_id << 4) | 1, tw >> 8, tw & 0xFF, 0))
                + packet[12:]
            )
            if not glue.send_packet(transport, packet):
                return False
            self.estimator.on_sent(tw, now_ms(), len(packet))
        elif not glue.send_packet(transport, packet):
            return False
        self._bytes_sent += len(packet)
        return True

    async def _on_rtcp(self, data: bytes) -> None:
        try:
            parts = split_compound(data)
        except ValueError:
            self.malformed_packets += 1
            return
        rest = []
        for pt, fmt, body, raw in parts:
            if pt == RTCP_RTPFB and fmt == TWCC_FMT:
                try:
                    feedback = parse_feedback(body)
                except ValueError:
                    self.malformed_packets += 1
                    continue
                self.estimator.on_feedback(feedback, now_ms())
            else:
                rest.append(raw)
        if rest:
            await super()._on_rtcp(b"".join(rest))

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
        for c, alloc in allocations.items():
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
        if slot.consumer is None or not self.prober.probing:
            return  # the slot was freed or the probe ended meanwhile
        while budget > 0:
            header = struct.pack(
                "!BBHII", 0xA0, slot.rtx_payload_type, slot.out.next_rtx_seq(), slot.out.munger.last_ts, slot.rtx_ssrc
            )
            packet = header + bytes(PADDING_PACKET_BYTES - 1) + bytes((PADDING_PACKET_BYTES,))
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
            "resends_over_budget": self.resend_budget.denied,
            "probe": self.prober.describe(),
            "active_speaker": self.active_speaker,
            "consumers": [
                {**c.describe(), "pinned": c.producer.id in self.pinned, "priority": PRIORITY_NAMES[self.priority(c)]}
                for c in self.consumers()
            ],
        }

    # -- RTCP from the subscriber ---------------------------------------------------------

    def handle_rtcp(self, packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket):
            if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                consumer = self._consumer(packet.media_ssrc)
                if consumer is not None:
                    consumer.on_keyframe_request()
            elif packet.fmt == RTCP_PSFB_APP:
                try:
                    bitrate, ssrcs = unpack_remb_fci(packet.fci)
                except ValueError:
                    self.malformed_packets += 1
                    return
                self.estimator.on_remb(bitrate)
                for ssrc in ssrcs:
                    consumer = self._consumer(ssrc)
                    if consumer is not None:
                        consumer.remb_bps = bitrate
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            consumer = self._consumer(packet.media_ssrc)
            if consumer is not None:
                consumer.on_nack(list(packet.lost), now_ms())
        elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
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

    def rtcp_reports(self) -> list[Any]:
        now_ntp = ntp_now()
        packets: list[Any] = []
        for slot in self.slots:
            consumer = slot.consumer
            if consumer is None or consumer.closed:
                continue
            rtp_ts = consumer.sender_report_timestamp(now_ntp)
            if rtp_ts is None:
                continue
            packets.append(
                RtcpSrPacket(
                    ssrc=slot.out.ssrc,
                    sender_info=RtcpSenderInfo(
                        ntp_timestamp=now_ntp,
                        rtp_timestamp=rtp_ts,
                        packet_count=slot.out.packets_sent & 0xFFFFFFFF,
                        octet_count=slot.out.octets_sent & 0xFFFFFFFF,
                    ),
                )
            )
        return packets

    async def close(self) -> None:
        for slot in self.slots:
            self._free(slot)
        self._wanted.clear()
        await super().close()

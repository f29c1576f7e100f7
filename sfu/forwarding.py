"""Producers and consumers: the RTP forwarding core.

A Producer is one incoming media stream of a publisher, with one Layer per simulcast encoding
(a single layer without simulcast). A Consumer is one outgoing copy of a producer for one
subscriber: it forwards one layer at a time and switches layers only on a keyframe. Packets are never decoded: the producer parses the RTP header
once, and each consumer rewrites SSRC, sequence number, timestamp and payload type and sends
the same payload bytes.

Loss is repaired hop by hop. Upstream, each video layer has a NackGenerator that NACKs the
publisher for gaps; the publisher's RTX retransmissions are unwrapped and forwarded like late
packets. Downstream, each consumer answers its subscriber's NACKs from its PacketCache (RTX-
wrapped where negotiated); what the cache cannot serve and the SFU never received is asked
of the publisher through the layer's NackGenerator (shared by all consumers, so deduplicated).

No I/O here: sending is an injected callable, time is an argument.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .bwe.allocator import PAUSED, Allocation
from .media.compiled import twin
from .media.keyframe import keyframe_detector, keyframe_size_reader
from .media.munger import RtpMunger
from .media.nack import NackGenerator, ResendBudget
from .media.packet_cache import PacketCache
from .media.rtp import PLAIN_HEADER, RtpView
from .media.rtx import unwrap_rtx, wrap_rtx
from .media.seq import seq_diff
from .media.vp8 import Vp8Munger
from .stream import LAYER_TIMEOUT_MS, Codec, Layer

logger = logging.getLogger(__name__)

SendFn = Callable[[bytes], bool]
_pack_header = PLAIN_HEADER.pack  # media.rtp.write_header, without the call
# Send a NACK to the publisher for these extended sequence numbers of a layer.
SendNackFn = Callable[["Producer", "Layer", list[int]], None]
KEYFRAME_REQUEST_INTERVAL_S = 0.5
# A stream silent this long (the publisher's network went away and came back) resumes at its
# consumers on a keyframe, as after a layer switch: what was lost meanwhile is not asked for.
SOURCE_RESUME_MS = 1000
# A subscriber NACK asks for at most this many packets (the rest is ignored).
MAX_NACK_SEQS = 256
# A cached packet is resent at most once per RTT (this long while the RTT is unknown).
DEFAULT_RESEND_GUARD_MS = 100.0
MAX_RESEND_GUARD_MS = 250.0


class Producer:
    """One incoming stream (audio or video) of a publisher, with its layers (lowest first)."""

    def __init__(
        self,
        producer_id: str,
        participant_id: str,
        kind: str,
        source: str,
        codec: Codec,
        payload_type: int,
        request_keyframe: Callable[[Producer, Layer], None],
        rids: list[str] | None = None,
        send_nack: SendNackFn | None = None,
        on_demand_changed: Callable[[Producer], None] | None = None,
    ) -> None:
        self.id = producer_id
        self.participant_id = participant_id
        self.kind = kind
        self.source = source
        self.codec = codec
        self.payload_type = payload_type
        self.layers = [Layer(i, rid, codec.clock_rate) for i, rid in enumerate(rids or [None])]
        self.muted = False
        self.closed = False
        self.consumers: list[Consumer] = []
        self._gates: list[object] = []  # each consumer's gate, in the same order (fanout reads them)
        self.is_keyframe_start = keyframe_detector(codec.name)
        self._keyframe_size = keyframe_size_reader(codec.name)  # layer sizes come from keyframes
        self._request_keyframe = request_keyframe
        self.keyframe_requests_sent = 0
        self.packets_dropped = 0
        # Dynacast (sfu/dynacast.py): how many of the lowest layers the publisher was asked to
        # send, and a hook called when what the consumers want may have changed.
        self.requested_layers = len(self.layers)
        self._on_demand_changed = on_demand_changed
        # Upstream repair: NACKs to the publisher, and its RTX stream (payload type from the
        # publish answer; None: not negotiated).
        self._send_nack = send_nack
        if send_nack is not None and kind == "video":
            for layer in self.layers:
                layer.nack = NackGenerator()
        self.rtx_payload_type: int | None = None
        self.rtx_received = 0
        self.rtx_padding = 0  # RTX packets with no payload (the publisher's bandwidth probes)
        self.rtx_duplicates = 0  # retransmissions of packets we had (or had given up on)
        self.rtx_malformed = 0
        self.retransmissions_requested = 0  # subscribers' NACKs passed on to the generator

    @property
    def simulcast(self) -> bool:
        return len(self.layers) > 1

    def describe(self, detail: bool = False) -> dict[str, object]:
        """The wire's track object; ``detail`` adds server state for the admin API."""
        d: dict[str, object] = {"id": self.id, "kind": self.kind, "source": self.source, "muted": self.muted}
        if self.simulcast:
            d["layers"] = [layer.rid for layer in self.layers]
        if detail:
            # What the publisher is asked to send (dynacast): RIDs, or [null] / [] without simulcast.
            d["requested_layers"] = [layer.rid for layer in self.layers[: self.requested_layers]]
            d["layer_heights"] = [layer.height for layer in self.layers]
        return d

    def demand_changed(self) -> None:
        if self._on_demand_changed is not None and not self.closed:
            self._on_demand_changed(self)

    def layer_by_rid(self, rid: str) -> Layer | None:
        for layer in self.layers:
            if layer.rid == rid:
                return layer
        return None

    def on_rtp(self, layer: Layer, data: bytes, view: RtpView, arrival_ms: int) -> None:
        """Forward one packet of one layer of this stream to every consumer."""
        if view.payload_type != self.payload_type:
            self.packets_dropped += 1  # e.g. RTX or padding on a PT we do not forward
            return
        stats = layer.stats
        highest = stats.highest_ext_seq
        last_arrival_ms = layer.last_arrival_ms
        silent_ms = arrival_ms - last_arrival_ms
        if silent_ms >= SOURCE_RESUME_MS and last_arrival_ms > 0:
            self._resumed_after_silence(layer)
        ext_seq = stats.update(view.seq, view.timestamp, arrival_ms, len(data))
        started = silent_ms >= LAYER_TIMEOUT_MS
        late = ext_seq <= highest
        if not late:
            layer.last_timestamp = view.timestamp
        layer.last_arrival_ms = arrival_ms
        nack = layer.nack
        if nack is not None:
            nack.on_packet(ext_seq, arrival_ms)
            if arrival_ms >= nack.next_due_ms:
                self._poll_nacks(layer, arrival_ms)
        payload = data[view.payload_start : view.payload_end]
        if not payload:
            # Padding only: not forwarded, and the consumers close the hole in their sequence.
            for consumer in self.consumers:
                if consumer.current == layer.index:
                    consumer.out.munger.skip(ext_seq)
            return
        keyframe = self.is_keyframe_start is not None and self.is_keyframe_start(payload)
        if keyframe and self._keyframe_size is not None:
            size = self._keyframe_size(payload)
            if size is not None and size != (layer.width, layer.height):
                layer.width, layer.height = size
                # What a capped subscriber needs depends on the heights (an unknown one counts
                # as fitting until learnt): a worker relaying this producer asks again.
                self.demand_changed()
        if self.muted:
            return
        if late:
            # A repaired or reordered packet fills its place; never (re)start a layer on one
            # (what followed it was dropped while waiting for a keyframe).
            keyframe = False
        index = layer.index
        if started and self.simulcast:
            # A layer (re)starts, e.g. asked back by dynacast: consumers may move onto it now,
            # on the keyframe a starting encoder begins with, rather than at their next tick.
            for consumer in self.consumers:
                consumer.layer_started(index, keyframe, arrival_ms)
        _fanout(self.consumers, self._gates, index, ext_seq, view.timestamp, view.marker, payload, keyframe, arrival_ms)

    def _resumed_after_silence(self, layer: Layer) -> None:
        """The layer sends again after a silence: its consumers restart on a keyframe (asked
        for at once) instead of forwarding frames that cannot be decoded, and the packets lost
        meanwhile are not NACKed (they are long late)."""
        if layer.nack is not None:
            layer.nack.reset()
        for consumer in self.consumers:
            if consumer.current == layer.index:
                consumer.restart()
        layer.last_keyframe_request_s = -1e9  # the request goes out now, not after the throttle

    def on_rtx(self, layer: Layer, data: bytes, view: RtpView, arrival_ms: int) -> None:
        """A packet of the layer's RTX stream: forward the original if it fills a hole."""
        self.rtx_received += 1
        if view.payload_end == view.payload_start:
            self.rtx_padding += 1
            return
        original = unwrap_rtx(data, view, self.payload_type, layer.ssrc or 0)
        if original is None:
            self.rtx_malformed += 1
            return
        nack = layer.nack
        highest = layer.stats.highest_ext_seq
        if nack is None or highest < 0:
            self.rtx_duplicates += 1
            return
        ext_seq = highest + seq_diff(original.seq, highest & 0xFFFF)
        if ext_seq >= highest or not nack.on_packet(ext_seq, arrival_ms):
            self.rtx_duplicates += 1
            return
        self.on_rtp(layer, data, original, arrival_ms)

    def _poll_nacks(self, layer: Layer, now_ms: int) -> None:
        nack = layer.nack
        if nack is None or self._send_nack is None:
            return
        lost = nack.poll(now_ms)
        if lost:
            self._send_nack(self, layer, lost)

    def retransmission_requested(self, layer_index: int, ext_seqs: list[int], now_ms: int) -> int:
        """Subscribers want packets their consumer never had: ask the publisher for those the
        layer still waits for (each at most once per retry interval). Returns how many."""
        if not 0 <= layer_index < len(self.layers):
            return 0
        layer = self.layers[layer_index]
        nack = layer.nack
        if nack is None:
            return 0
        count = sum(1 for ext_seq in ext_seqs if nack.request(ext_seq, now_ms))
        self.retransmissions_requested += count
        if count:
            self._poll_nacks(layer, now_ms)
        return count

    def tick(self, now_ms: int) -> None:
        """Periodic work: NACKs due on a layer that went quiet, keyframes for what was lost."""
        now_s = now_ms / 1000
        for layer in self.layers:
            nack = layer.nack
            if nack is None:
                continue
            if now_ms >= nack.next_due_ms:
                self._poll_nacks(layer, now_ms)
            if nack.take_keyframe_request() and self.consumers:
                self.request_keyframe(now_s, layer.index)

    def describe_repair(self) -> dict[str, object]:
        """Upstream repair counters, for the admin API."""
        d: dict[str, object] = {
            "rtx_negotiated": self.rtx_payload_type is not None,
            "rtx_received": self.rtx_received,
            "rtx_padding": self.rtx_padding,
            "rtx_duplicates": self.rtx_duplicates,
            "rtx_malformed": self.rtx_malformed,
            "retransmissions_requested": self.retransmissions_requested,
        }
        d["layers"] = [{"rid": layer.rid, **(layer.nack.describe() if layer.nack else {})} for layer in self.layers]
        return d

    def request_keyframe(self, now_s: float, layer_index: int = 0) -> bool:
        """Ask the publisher for a keyframe on one layer, at most once per interval per layer."""
        if self.kind != "video" or self.closed or not 0 <= layer_index < len(self.layers):
            return False
        layer = self.layers[layer_index]
        if now_s - layer.last_keyframe_request_s < KEYFRAME_REQUEST_INTERVAL_S:
            return False
        layer.last_keyframe_request_s = now_s
        self.keyframe_requests_sent += 1
        self._request_keyframe(self, layer)
        return True

    def set_muted(self, muted: bool, now_s: float) -> None:
        if muted == self.muted:
            return
        self.muted = muted
        if not muted:
            # Resume every consumer on a fresh keyframe.
            for consumer in self.consumers:
                consumer.restart()
                self.request_keyframe(now_s, max(consumer.target, 0))

    def source_restarted(self) -> None:
        """The publisher sends this stream over a new connection: every layer starts afresh,
        and every consumer goes on with it on its next keyframe (as on a layer switch: the
        outgoing sequence numbers and timestamps stay continuous)."""
        for layer in self.layers:
            layer.restart_source()
        for consumer in self.consumers:
            consumer.restart()

    def add_consumer(self, consumer: Consumer, now_s: float) -> None:
        if consumer not in self.consumers:
            self.consumers.append(consumer)
            self._gates.append(consumer.gate)
        consumer.restart()
        if self.kind == "video":
            self.request_keyframe(now_s, max(consumer.target, 0))
        self.demand_changed()

    def remove_consumer(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
            self._gates.remove(consumer.gate)
            self.demand_changed()

    def on_sender_report(self, layer: Layer, ntp_timestamp: int, rtp_timestamp: int) -> None:
        layer.sr_ntp = ntp_timestamp
        layer.sr_rtp = rtp_timestamp

    def close(self) -> None:
        """Idempotent; closes every consumer of this producer."""
        if self.closed:
            return
        self.closed = True
        self._on_demand_changed = None
        for consumer in list(self.consumers):
            consumer.close()
        self.consumers.clear()
        self._gates.clear()


class PyOutStream:
    """The outgoing RTP stream of one subscriber m-section; it outlives the consumers that
    use it in turn, so sequence numbers, timestamps and VP8 picture IDs stay continuous.

    The reference implementation; ``OutStream`` is its compiled twin when the extension is
    built (sfu/rtc/_fastpath.c), which the compiled forwarding loop reads without Python."""

    __slots__ = ("last_send_ms", "munger", "octets_sent", "packets_sent", "rtx_seq", "ssrc", "vp8")

    def __init__(self, ssrc: int, initial_seq: int, initial_ts: int) -> None:
        self.ssrc = ssrc
        self.rtx_seq = initial_seq ^ 0x5A5A  # the RTX stream's own sequence numbers
        self.munger = RtpMunger(initial_seq, initial_ts)
        self.vp8 = Vp8Munger()
        self.packets_sent = 0
        self.octets_sent = 0
        self.last_send_ms = 0

    def next_rtx_seq(self) -> int:
        seq = self.rtx_seq
        self.rtx_seq = (seq + 1) & 0xFFFF
        return seq


class PyGate:
    """A consumer's per-packet state, read by the forwarding loop (``fanout``): the layer it
    forwards, the one it waits for, whether it must restart on a keyframe, whether it is paused
    (by the subscriber or for bandwidth), and what it needs to forward a packet on its own.

    The reference implementation, whose loop calls ``Consumer.forward`` for every consumer;
    the compiled twin (``Gate`` in sfu/rtc/_fastpath.c) forwards a consumer that is steady on
    the packet's layer without Python, skips one that waits for another layer, and calls
    ``Consumer.forward`` for the rest (a layer start or switch). ``python_only``: a consumer
    whose ``forward`` is its own (a subclass's), always called."""

    __slots__ = (
        "bandwidth_paused",
        "cache",
        "current",
        "must_restart",
        "out",
        "packets_dropped",
        "paused",
        "payload_type",
        "python_only",
        "rewrite_vp8",
        "send",
        "target",
    )

    def __init__(
        self, out: object, cache: object, send: SendFn, payload_type: int, rewrite_vp8: bool, python_only: bool
    ) -> None:
        self.out = out
        self.cache = cache
        self.send = send
        self.payload_type = payload_type
        self.rewrite_vp8 = rewrite_vp8
        self.python_only = python_only
        self.current = -1
        self.target = 0
        self.must_restart = True
        self.paused = False
        self.bandwidth_paused = False
        self.packets_dropped = 0


def py_fanout(
    consumers: list[Consumer],
    gates: list[object],
    layer: int,
    ext_seq: int,
    timestamp: int,
    marker: int,
    payload: bytes,
    keyframe: bool,
    arrival_ms: int,
) -> None:
    """One packet of one layer to every consumer of a producer (the reference loop)."""
    for consumer in consumers:
        consumer.forward(layer, ext_seq, timestamp, marker, payload, keyframe, arrival_ms)


if TYPE_CHECKING:  # the compiled twins have the reference classes' interface
    OutStream = PyOutStream
    Gate = PyGate
else:
    OutStream = twin("OutStream") or PyOutStream
    Gate = twin("Gate") or PyGate
_fanout: Callable[..., None] = twin("fanout") or py_fanout


class Consumer:
    """One subscriber's copy of a producer: one layer at a time, switching on keyframes."""

    def __init__(
        self,
        producer: Producer,
        subscriber_id: str,
        out: OutStream,
        payload_type: int,
        send: SendFn,
        now_s: Callable[[], float],
        rtx_payload_type: int | None = None,
        rtx_ssrc: int = 0,
        *,
        resend_budget: ResendBudget | None = None,
        estimate_bps: Callable[[], float | None] | None = None,
        on_layer_started: Callable[[], None] | None = None,
    ) -> None:
        self.producer = producer
        self.subscriber_id = subscriber_id
        self.out = out
        self.payload_type = payload_type
        # Retransmissions go RTX-wrapped when the subscriber negotiated RTX.
        self.rtx_payload_type = rtx_payload_type
        self.rtx_ssrc = rtx_ssrc
        self._send = send
        self._now_s = now_s
        # Shared by the subscriber's consumers: caps retransmissions to a share of its
        # downlink estimate (None: no cap), which ``estimate_bps`` reads.
        self._resend_budget = resend_budget
        self._estimate_bps = estimate_bps
        # Called when a layer of the producer starts (the subscriber re-runs its allocation).
        self._on_layer_started = on_layer_started
        self._video = producer.kind == "video"
        self._rewrite_vp8 = producer.codec.name.upper() == "VP8"
        self.cache = PacketCache(512 if self._video else 64)
        # What the forwarding loop reads per packet: the layer being forwarded (-1: none yet)
        # and the layer wanted (a switch happens on a keyframe), whether to restart, pauses.
        self.gate = Gate(
            out, self.cache, send, payload_type, self._rewrite_vp8, type(self).forward is not Consumer.forward
        )
        self.gate.target = 0 if not producer.simulcast else len(producer.layers) - 1
        # What the subscriber asked for.
        self.max_height: int | None = None
        # What its downlink allows: the allocator's last decision (None: no estimate, no cap).
        self.allocation: Allocation | None = None
        self.closed = False
        self.nacks_received = 0  # sequence numbers the subscriber asked for
        self.retransmitted = 0  # of those, resent from the cache
        self.rtx_sent = 0  # of those, RTX-wrapped
        self.nacks_throttled = 0  # cached but resent less than an RTT ago, or over budget
        self.nacks_unserved = 0  # not in the cache
        self.nacks_forwarded = 0  # of those, asked of the publisher
        self.layer_switches = 0
        # From the subscriber's receiver reports.
        self.fraction_lost = 0
        self.rtt_ms: float | None = None
        self.remb_bps: int | None = None

    # The gate's state, as the consumer's own attributes.
    @property
    def current(self) -> int:
        return self.gate.current

    @current.setter
    def current(self, value: int) -> None:
        self.gate.current = value

    @property
    def target(self) -> int:
        return self.gate.target

    @target.setter
    def target(self, value: int) -> None:
        self.gate.target = value

    @property
    def paused(self) -> bool:
        return bool(self.gate.paused)

    @paused.setter
    def paused(self, value: bool) -> None:
        self.gate.paused = value

    @property
    def packets_dropped(self) -> int:
        return self.gate.packets_dropped

    def restart(self) -> None:
        """Resume on the next keyframe (video) or the next packet (audio)."""
        self.gate.must_restart = True

    def resync(self, now_ms: int) -> None:
        """The subscriber's connection (re)connected: start again on a keyframe asked for now,
        not held back by the request throttle (one asked for while it was connecting went
        into a connection that could not carry it)."""
        self.restart()
        if self._video:
            self.producer.layers[max(self.target, 0)].last_keyframe_request_s = -1e9
        self.select(now_ms)

    def set_preferences(self, max_height: int | None, paused: bool, now_ms: int) -> None:
        if paused and not self.paused:
            self.restart()
        self.max_height = max_height
        self.paused = paused
        self.select(now_ms)
        if self in self.producer.consumers:
            self.producer.demand_changed()

    @property
    def bandwidth_paused(self) -> bool:
        return bool(self.gate.bandwidth_paused)

    @property
    def bandwidth_layer(self) -> int | None:
        """The highest layer the downlink carries, PAUSED if none, None if it sets no cap."""
        allocation = self.allocation
        if allocation is None:
            return None
        return PAUSED if allocation.paused_for_bandwidth else allocation.layer_cap

    def set_allocation(self, allocation: Allocation | None, now_ms: int) -> None:
        """Apply the allocator's decision (None: there is no estimate, nothing limits)."""
        before = self.bandwidth_layer
        self.allocation = allocation
        self.gate.bandwidth_paused = allocation is not None and allocation.paused_for_bandwidth
        layer = self.bandwidth_layer
        if layer == before:
            return
        if layer == PAUSED:
            self.restart()
        self.select(now_ms)

    def layer_started(self, index: int, keyframe: bool, now_ms: int) -> None:
        # Only the best layer it can expect (wanted, and asked of the publisher): moving onto a
        # lower one that happens to restart first would be one more switch for nothing.
        if index != min(self.desired_layer(), self.producer.requested_layers - 1):
            return
        if index == self.current or not self.forwarding:
            return
        if keyframe:
            # It begins with a keyframe: asking for another one now would only cost bandwidth.
            self.producer.layers[index].last_keyframe_request_s = self._now_s()
        if self._on_layer_started is not None:
            self._on_layer_started()
        self.select(now_ms)

    def desired_layer(self) -> int:
        """The highest layer within the subscriber's cap (the lowest if none fits)."""
        layers = self.producer.layers
        if self.max_height is None:
            return len(layers) - 1
        best = 0
        for layer in layers[1:]:
            if 0 < layer.height <= self.max_height:
                best = layer.index
        return best

    def select(self, now_ms: int) -> int:
        """Choose the target layer from the cap and what the publisher is sending now."""
        layers = self.producer.layers
        if len(layers) > 1:
            desired = self.desired_layer()
            cap = self.bandwidth_layer
            if cap is not None and cap >= 0:
                desired = min(desired, cap)
            active = [layer.index for layer in layers if layer.active(now_ms)]
            if active:
                fitting = [i for i in active if i <= desired]
                target = max(fitting) if fitting else min(active)
            else:
                target = desired
            self.target = target
        if self.forwarding and self._video and (self.target != self.current or self.gate.must_restart):
            self.producer.request_keyframe(self._now_s(), self.target)
        return self.target

    def forward(
        self,
        layer: int,
        ext_seq: int,
        timestamp: int,
        marker: int,
        payload: bytes,
        keyframe: bool,
        arrival_ms: int,
    ) -> None:
        gate = self.gate
        if gate.paused or gate.bandwidth_paused:
            return
        out = self.out
        if layer != gate.current or gate.must_restart:
            if layer != gate.target:
                return  # another layer, or a late packet of the layer we left
            if self._video and not keyframe:
                self.producer.request_keyframe(self._now_s(), layer)
                return
            gap = 1
            if out.last_send_ms and out.munger.started:
                gap = (arrival_ms - out.last_send_ms) * self.producer.codec.clock_rate // 1000
            out.munger.start(ext_seq, timestamp, gap)
            out.vp8.restart()
            if gate.current != layer and gate.current >= 0:
                self.layer_switches += 1
            gate.current = layer
            gate.must_restart = False
        mapped = out.munger.map(ext_seq, timestamp)
        if mapped is None:
            gate.packets_dropped += 1
            return
        seq, ts = mapped
        if self._rewrite_vp8:
            payload = out.vp8.rewrite(payload)
        packet = _pack_header(0x80, (marker << 7) | self.payload_type, seq, ts, out.ssrc) + payload
        self.cache.put(seq, packet)
        if self._send(packet):
            out.packets_sent += 1
            out.octets_sent += len(payload)
            out.last_send_ms = arrival_ms
        elif out.packets_sent == 0:
            self.restart()  # not connected yet: start again on a later keyframe

    @property
    def forwarding(self) -> bool:
        return not self.paused and not self.bandwidth_paused

    def on_nack(self, lost: list[int], now_ms: int = 0) -> None:
        """Retransmit what the cache holds (at most once per RTT per packet); ask the publisher
        for what the SFU never received."""
        lost = list(dict.fromkeys(seq & 0xFFFF for seq in lost[:MAX_NACK_SEQS]))
        self.nacks_received += len(lost)
        cache = self.cache
        out = self.out
        guard_ms = min(self.rtt_ms, MAX_RESEND_GUARD_MS) if self.rtt_ms else DEFAULT_RESEND_GUARD_MS
        budget = self._resend_budget
        estimate = self._estimate_bps
        upstream: list[int] = []
        for seq in lost:
            packet = cache.get(seq)
            if packet is None:
                self.nacks_unserved += 1
                ext_seq = out.munger.reverse(seq)
                if ext_seq is not None:
                    upstream.append(ext_seq)
                continue
            if now_ms - cache.resent_ms(seq) < guard_ms or (
                budget is not None and not budget.allow(len(packet), now_ms, estimate() if estimate else None)
            ):
                self.nacks_throttled += 1
                continue
            cache.mark_resent(seq, now_ms)
            if self.rtx_payload_type is not None:
                packet = wrap_rtx(packet, self.rtx_payload_type, out.next_rtx_seq(), self.rtx_ssrc)
            if self._send(packet):
                self.retransmitted += 1
                if self.rtx_payload_type is not None:
                    self.rtx_sent += 1
        if upstream and self.current >= 0:
            self.nacks_forwarded += self.producer.retransmission_requested(self.current, upstream, now_ms)

    def on_keyframe_request(self) -> None:
        self.producer.request_keyframe(self._now_s(), max(self.current, self.target, 0))

    def sender_report_timestamp(self, now_ntp: int, now_ms: int) -> int | None:
        """The outgoing RTP timestamp that corresponds to wall-clock ``now_ntp`` (NTP format),
        ``now_ms`` being the same instant on the media clock.

        From the publisher's last sender report for the forwarded layer when there is one
        (keeps audio/video sync), else from the last forwarded packet.
        """
        if self.current < 0 or not self.out.munger.started:
            return None
        layer = self.producer.layers[self.current]
        rate = self.producer.codec.clock_rate
        munger = self.out.munger
        if layer.sr_ntp is not None:
            elapsed_s = (now_ntp - layer.sr_ntp) / (1 << 32)
            return munger.out_timestamp(layer.sr_rtp + int(elapsed_s * rate))
        if layer.last_timestamp is None:
            return None
        elapsed_ms = now_ms - layer.last_arrival_ms
        return munger.out_timestamp(layer.last_timestamp + int(elapsed_ms * rate / 1000))

    def describe(self) -> dict[str, object]:
        return {
            "track": self.producer.id,
            "current_layer": self.current,
            "target_layer": self.target,
            "max_height": self.max_height,
            "paused": self.paused,
            "bandwidth_layer": self.bandwidth_layer,
            "packets_sent": self.out.packets_sent,
            "layer_switches": self.layer_switches,
            "nacks_received": self.nacks_received,
            "retransmitted": self.retransmitted,
            "rtx_sent": self.rtx_sent,
            "nacks_unserved": self.nacks_unserved,
            "nacks_forwarded": self.nacks_forwarded,
        }

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.producer.remove_consumer(self)

"""Producers and consumers: the RTP forwarding core.

A Producer is one incoming media stream of a publisher. A Consumer is one outgoing copy of a
producer for one subscriber. Packets are never decoded: the producer parses the RTP header
once, and each consumer rewrites SSRC, sequence number, timestamp and payload type and sends
the same payload bytes.

No I/O here: sending is an injected callable, time is an argument.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .media.keyframe import keyframe_detector
from .media.munger import RtpMunger
from .media.packet_cache import PacketCache
from .media.rtp import RtpView, write_header
from .media.stats import ReceiveStats

logger = logging.getLogger(__name__)

SendFn = Callable[[bytes], bool]
KEYFRAME_REQUEST_INTERVAL_S = 0.5


@dataclass(frozen=True, slots=True)
class Codec:
    """A negotiated codec: its name ("VP8", "opus", "H264"), clock rate and fmtp parameters."""

    name: str
    clock_rate: int
    parameters: tuple[tuple[str, str], ...] = ()

    def matches(self, other: Codec) -> bool:
        if self.name.lower() != other.name.lower() or self.clock_rate != other.clock_rate:
            return False
        if self.name.upper() == "H264":
            mine, theirs = dict(self.parameters), dict(other.parameters)
            if mine.get("packetization-mode", "0") != theirs.get("packetization-mode", "0"):
                return False
            return mine.get("profile-level-id", "")[:2] == theirs.get("profile-level-id", "")[:2]
        return True


class Producer:
    """One incoming stream (audio or video) of a publisher."""

    def __init__(
        self,
        producer_id: str,
        participant_id: str,
        kind: str,
        source: str,
        codec: Codec,
        payload_type: int,
        request_keyframe: Callable[[Producer], None],
    ) -> None:
        self.id = producer_id
        self.participant_id = participant_id
        self.kind = kind
        self.source = source
        self.codec = codec
        self.payload_type = payload_type
        self.ssrc: int | None = None
        self.muted = False
        self.closed = False
        self.consumers: list[Consumer] = []
        self.stats = ReceiveStats(codec.clock_rate)
        self.is_keyframe_start = keyframe_detector(codec.name)
        self._request_keyframe = request_keyframe
        self._last_keyframe_request_s = -1e9
        self.keyframe_requests_sent = 0
        self.packets_dropped = 0
        # Last sender report from the publisher: NTP time (64-bit) and RTP timestamp.
        self.sr_ntp: int | None = None
        self.sr_rtp = 0
        self.sr_arrival_s = 0.0
        # Last packet forwarded: its RTP timestamp and arrival time.
        self.last_timestamp: int | None = None
        self.last_arrival_ms = 0

    def describe(self) -> dict[str, object]:
        return {"id": self.id, "kind": self.kind, "source": self.source, "muted": self.muted}

    def on_rtp(self, data: bytes, view: RtpView, arrival_ms: int) -> None:
        """Forward one packet of this stream to every consumer."""
        if view.payload_type != self.payload_type:
            self.packets_dropped += 1  # e.g. RTX or padding on a PT we do not forward
            return
        ext_seq = self.stats.update(view.seq, view.timestamp, arrival_ms, len(data))
        self.last_timestamp = view.timestamp
        self.last_arrival_ms = arrival_ms
        if self.muted or not self.consumers:
            return
        payload = data[view.payload_start : view.payload_end]
        if not payload:
            # Padding only: not forwarded, and the consumers close the hole in their sequence.
            for consumer in self.consumers:
                consumer.out.munger.skip(ext_seq)
            return
        keyframe = self.is_keyframe_start is not None and self.is_keyframe_start(payload)
        for consumer in self.consumers:
            consumer.forward(ext_seq, view.timestamp, view.marker, payload, keyframe, arrival_ms)

    def request_keyframe(self, now_s: float) -> bool:
        """Ask the publisher for a keyframe, at most once per KEYFRAME_REQUEST_INTERVAL_S."""
        if self.kind != "video" or self.closed:
            return False
        if now_s - self._last_keyframe_request_s < KEYFRAME_REQUEST_INTERVAL_S:
            return False
        self._last_keyframe_request_s = now_s
        self.keyframe_requests_sent += 1
        self._request_keyframe(self)
        return True

    def set_muted(self, muted: bool, now_s: float) -> None:
        if muted == self.muted:
            return
        self.muted = muted
        if not muted:
            # Resume every consumer on a fresh keyframe.
            for consumer in self.consumers:
                consumer.restart()
            self.request_keyframe(now_s)

    def add_consumer(self, consumer: Consumer, now_s: float) -> None:
        if consumer not in self.consumers:
            self.consumers.append(consumer)
        if self.kind == "video":
            self.request_keyframe(now_s)

    def remove_consumer(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int, now_s: float) -> None:
        self.sr_ntp = ntp_timestamp
        self.sr_rtp = rtp_timestamp
        self.sr_arrival_s = now_s

    def close(self) -> None:
        self.closed = True
        for consumer in list(self.consumers):
            consumer.close()
        self.consumers.clear()


class OutStream:
    """The outgoing RTP stream of one subscriber m-section; it outlives the consumers that
    use it in turn, so sequence numbers and timestamps stay continuous when it is reused."""

    __slots__ = ("ssrc", "munger", "packets_sent", "octets_sent", "last_send_ms")

    def __init__(self, ssrc: int, initial_seq: int, initial_ts: int) -> None:
        self.ssrc = ssrc
        self.munger = RtpMunger(initial_seq, initial_ts)
        self.packets_sent = 0
        self.octets_sent = 0
        self.last_send_ms = 0


class Consumer:
    """One subscriber's copy of a producer."""

    def __init__(
        self,
        producer: Producer,
        subscriber_id: str,
        out: OutStream,
        payload_type: int,
        send: SendFn,
        now_s: Callable[[], float],
    ) -> None:
        self.producer = producer
        self.subscriber_id = subscriber_id
        self.out = out
        self.payload_type = payload_type
        self._send = send
        self._now_s = now_s
        self.cache = PacketCache(512 if producer.kind == "video" else 64)
        self.needs_keyframe = producer.kind == "video"
        self._must_restart = True
        self.closed = False
        self.packets_dropped = 0
        self.retransmitted = 0
        self.nacks_unserved = 0
        # From the subscriber's receiver reports.
        self.fraction_lost = 0
        self.rtt_ms: float | None = None
        self.remb_bps: int | None = None

    def restart(self) -> None:
        """Resume on the next keyframe (video) or the next packet (audio)."""
        self._must_restart = True
        self.needs_keyframe = self.producer.kind == "video"

    def forward(
        self,
        ext_seq: int,
        timestamp: int,
        marker: int,
        payload: bytes,
        keyframe: bool,
        arrival_ms: int,
    ) -> None:
        out = self.out
        if self._must_restart:
            if self.needs_keyframe and not keyframe:
                self.producer.request_keyframe(self._now_s())
                return
            gap = 1
            if out.last_send_ms and out.munger.started:
                gap = (arrival_ms - out.last_send_ms) * self.producer.codec.clock_rate // 1000
            out.munger.start(ext_seq, timestamp, gap)
            self._must_restart = False
            self.needs_keyframe = False
        mapped = out.munger.map(ext_seq, timestamp)
        if mapped is None:
            self.packets_dropped += 1
            return
        seq, ts = mapped
        packet = write_header(marker, self.payload_type, seq, ts, out.ssrc) + payload
        self.cache.put(seq, packet)
        if self._send(packet):
            out.packets_sent += 1
            out.octets_sent += len(payload)
            out.last_send_ms = arrival_ms
        elif out.packets_sent == 0:
            self.restart()  # not connected yet: start again on a later keyframe

    def on_nack(self, lost: list[int]) -> None:
        """Retransmit what the cache still holds."""
        for seq in lost:
            packet = self.cache.get(seq)
            if packet is None:
                self.nacks_unserved += 1
                continue
            if self._send(packet):
                self.retransmitted += 1

    def on_keyframe_request(self) -> None:
        self.producer.request_keyframe(self._now_s())

    def sender_report_timestamp(self, now_ntp: int) -> int | None:
        """The outgoing RTP timestamp that corresponds to wall-clock ``now_ntp`` (NTP format).

        From the publisher's last sender report when there is one (keeps audio/video sync),
        else from the last forwarded packet.
        """
        producer = self.producer
        rate = producer.codec.clock_rate
        munger = self.out.munger
        if not munger.started:
            return None
        if producer.sr_ntp is not None:
            elapsed_s = (now_ntp - producer.sr_ntp) / (1 << 32)
            return munger.out_timestamp(producer.sr_rtp + int(elapsed_s * rate))
        if producer.last_timestamp is None:
            return None
        elapsed_ms = ((now_ntp * 1000) >> 32) - producer.last_arrival_ms
        return munger.out_timestamp(producer.last_timestamp + int(elapsed_ms * rate / 1000))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.producer.remove_consumer(self)

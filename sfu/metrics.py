"""Prometheus metrics, read at scrape time from the counters the objects already keep.

Nothing here runs per packet: producers, out streams and peers count packets and bytes as
plain integers as part of their work; the collector walks rooms → participants → producers /
subscribe slots when Prometheus scrapes /metrics. Totals of objects that are gone (a participant
left, a track was unpublished) are folded into ``RetiredTotals`` when they go, so the
``*_total`` counters never go backwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .data_relay import DROP_REASONS
from .room import RoomManager
from .rtc.aiortc_glue import transport_drops_metric
from .stats import DataStats, ServerStats, Totals, participant_totals

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SfuCollector(Collector):
    def __init__(self, rooms: RoomManager, stats: ServerStats) -> None:
        self.rooms = rooms
        self.stats = stats
        self._last: tuple[float, int, int] | None = None  # (time, bytes in, bytes out)

    def collect(self) -> Iterator[Metric]:
        totals = Totals()
        totals.add(self.rooms.retired)
        participants = 0
        producers = {"audio": 0, "video": 0}
        consumers = 0
        peers = 0
        viewers = 0
        per_room = GaugeMetricFamily("sfu_room_participants", "Participants in each room", labels=["room"])
        for room in list(self.rooms.rooms.values()):
            per_room.add_metric([room.name], len(room.participants))
            viewers += len(room.viewers)
            for participant in [*room.participants.values(), *room.viewers.values()]:
                participants += not participant.viewer
                participant_totals(participant, totals)
                peers += sum(1 for peer in (participant.publisher, participant.subscriber) if peer and not peer.closed)
                for producer in participant.producers():
                    producers[producer.kind] = producers.get(producer.kind, 0) + 1
                if participant.subscriber is not None:
                    consumers += len(participant.subscriber.consumers())
        now = time.monotonic()
        bitrate_in = bitrate_out = 0.0
        if self._last is not None and now - self._last[0] > 0.05:
            dt = now - self._last[0]
            bitrate_in = max(0.0, (totals.bytes_in - self._last[1]) * 8 / dt)
            bitrate_out = max(0.0, (totals.bytes_out - self._last[2]) * 8 / dt)
        self._last = (now, totals.bytes_in, totals.bytes_out)

        yield GaugeMetricFamily("sfu_rooms", "Rooms open", value=len(self.rooms.rooms))
        yield GaugeMetricFamily("sfu_participants", "Participants in all rooms", value=participants)
        yield per_room
        yield GaugeMetricFamily("sfu_viewers", "WHEP players in all rooms (not participants)", value=viewers)
        streams = GaugeMetricFamily("sfu_producers", "Incoming media streams (published tracks)", labels=["kind"])
        for kind, count in sorted(producers.items()):
            streams.add_metric([kind], count)
        yield streams
        yield GaugeMetricFamily(
            "sfu_consumers", "Outgoing media streams (one per subscriber and track)", value=consumers
        )
        yield GaugeMetricFamily("sfu_peer_connections", "Open peer connections of participants", value=peers)
        yield GaugeMetricFamily("sfu_asyncio_tasks", "Tasks of the event loop", value=len(asyncio.all_tasks()))
        yield CounterMetricFamily(
            "sfu_packets_received", "RTP packets received from publishers", value=totals.packets_in
        )
        yield CounterMetricFamily("sfu_bytes_received", "RTP bytes received from publishers", value=totals.bytes_in)
        yield CounterMetricFamily(
            "sfu_packets_forwarded", "RTP packets forwarded to subscribers", value=totals.packets_out
        )
        yield CounterMetricFamily(
            "sfu_bytes_forwarded", "RTP payload bytes forwarded to subscribers", value=totals.bytes_out
        )
        yield CounterMetricFamily(
            "sfu_packets_dropped",
            "RTP packets not forwarded (wrong payload type, out of window; live consumers' drops included)",
            value=totals.packets_dropped,
        )
        yield CounterMetricFamily(
            "sfu_keyframe_requests", "Keyframe requests (PLI) sent to publishers", value=totals.keyframe_requests
        )
        yield CounterMetricFamily(
            "sfu_malformed_packets", "Malformed RTP/RTCP packets dropped", value=totals.malformed_packets
        )
        yield CounterMetricFamily(
            "sfu_unroutable_packets", "RTP packets of no known stream dropped", value=totals.unroutable_packets
        )
        yield CounterMetricFamily(
            "sfu_ssrcs_over_limit",
            "New incoming streams refused because a connection had learnt max_ssrcs_per_transport SSRCs",
            value=totals.ssrcs_over_limit,
        )
        yield CounterMetricFamily(
            "sfu_dynacast_layer_changes",
            "Changes of the layers publishers are asked to send (dynacast `layers` messages)",
            value=totals.layer_changes,
        )
        yield CounterMetricFamily(
            "sfu_transport_cc_feedback",
            "transport-cc feedback packets sent to publishers",
            value=totals.twcc_feedback_sent,
        )
        yield CounterMetricFamily(
            "sfu_nacks_received",
            "Sequence numbers subscribers asked to be resent (live consumers)",
            value=totals.nacks_received,
        )
        yield CounterMetricFamily(
            "sfu_retransmissions",
            "Packets resent to subscribers from the packet cache, RTX where negotiated (live consumers)",
            value=totals.retransmitted,
        )
        yield CounterMetricFamily(
            "sfu_upstream_nacks", "Sequence numbers the server NACKed to publishers", value=totals.upstream_nacks
        )
        yield CounterMetricFamily(
            "sfu_packets_repaired",
            "Packets lost on the way from a publisher and recovered by a NACK",
            value=totals.packets_repaired,
        )
        yield GaugeMetricFamily(
            "sfu_bitrate_in_bps", "Incoming RTP bitrate since the previous scrape", value=bitrate_in
        )
        yield GaugeMetricFamily(
            "sfu_bitrate_out_bps", "Forwarded RTP bitrate since the previous scrape", value=bitrate_out
        )
        yield CounterMetricFamily("sfu_joins", "Successful joins", value=self.stats.joins)
        yield CounterMetricFamily(
            "sfu_resumes", "Lost sessions taken back with resume (same participant)", value=self.stats.resumes
        )
        yield CounterMetricFamily(
            "sfu_auth_failures", "Joins and requests refused for a bad or missing token", value=self.stats.auth_failures
        )
        yield CounterMetricFamily("sfu_kicks", "Participants removed by an admin", value=self.stats.kicks)
        errors = CounterMetricFamily("sfu_errors", "Error messages sent to clients, by code", labels=["code"])
        for code, count in sorted(self.stats.errors_by_code.items()):
            errors.add_metric([code], count)
        yield errors
        limited = CounterMetricFamily(
            "sfu_signaling_limited",
            "Connections, frames and sockets refused or dropped by a signaling limit, by limit",
            labels=["limit"],
        )
        for limit, count in sorted(self.stats.limited.items()):
            limited.add_metric([limit], count)
        yield limited
        yield from data_metrics(self.rooms.data_stats)
        yield transport_drops_metric()
        recording = self.rooms.recording_totals
        yield GaugeMetricFamily(
            "sfu_recording_files",
            "Recording files being written",
            value=sum(len(room.recording.files) for room in list(self.rooms.rooms.values())),
        )
        yield CounterMetricFamily(
            "sfu_recording_frames", "Frames queued for a recording file", value=recording.frames_queued
        )
        yield CounterMetricFamily(
            "sfu_recording_frames_dropped",
            "Frames not recorded because the writer's queue was full (a disk slower than the media)",
            value=recording.frames_dropped,
        )
        yield CounterMetricFamily(
            "sfu_recording_frames_lost",
            "Frames not recorded because packets were missing (and those until the next keyframe), in finished files",
            value=recording.frames_lost,
        )
        yield CounterMetricFamily(
            "sfu_recording_files_finished", "Recording files finished", value=recording.files_finished
        )
        yield GaugeMetricFamily("sfu_start_time_seconds", "Unix time the server started", value=self.stats.started_at_s)


def data_metrics(data: DataStats) -> Iterator[Metric]:
    """Data channel messages relayed and dropped (sfu/data_relay.py)."""
    yield CounterMetricFamily(
        "sfu_data_messages_received", "Data channel messages received from participants", value=data.received
    )
    yield CounterMetricFamily(
        "sfu_data_messages_relayed", "Data channel messages accepted and relayed", value=data.relayed
    )
    yield CounterMetricFamily(
        "sfu_data_bytes_relayed", "Frame bytes of the data channel messages relayed", value=data.relayed_bytes
    )
    yield CounterMetricFamily(
        "sfu_data_deliveries", "Copies of data channel messages sent to subscribers", value=data.deliveries
    )
    yield CounterMetricFamily(
        "sfu_data_bytes_delivered", "Bytes of data channel messages sent to subscribers", value=data.delivered_bytes
    )
    dropped = CounterMetricFamily(
        "sfu_data_dropped",
        "Data channel messages refused (sender's fault: rate-limited, too-large, bad-message, unknown-participant) "
        "and copies a subscriber could not take (not-open, backlog, send-failed), by reason",
        labels=["reason"],
    )
    for reason in DROP_REASONS:
        dropped.add_metric([reason], data.dropped.get(reason, 0))
    yield dropped


def make_registry(rooms: RoomManager, stats: ServerStats) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SfuCollector(rooms, stats))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)

"""Media links: RTP and RTCP over UDP between two workers, for rooms that span workers.

Each worker has one ``LinkEndpoint``: one UDP socket on its internal address, and one ``Link``
per peer worker, shared by every room the two have in common. The address of the socket and
the key of each direction are exchanged on the room's control channel (an internal WebSocket,
sfu/cluster/span.py), never on the link itself. Between nodes a link is SRTP (libsrtp, through
pylibsrtp, AES-CM-128 / HMAC-SHA1-80, one fresh key per link and direction); inside one node,
or with ``link_srtp`` off, it is plain RTP.

What crosses, and how:

- **Forward**: a producer's packets, one copy per link, only for the lowest ``layers`` of it
  that the other worker's consumers need (its demand, sent on the control channel; 0: nothing
  crosses). Each relayed layer is one link stream: SSRC ``stream << 2 | layer``, the
  publisher's own sequence numbers and timestamps, the payload unchanged (header extensions
  are not relayed: what the remote worker needs of them, audio levels, comes on the control
  channel). The sending side is a ``RelayOut``: a consumer of the producer like any other, so
  dynacast counts the remote demand with the local one.
- **Back**: keyframe requests (PLI) and NACKs for a link stream, and pings for the round-trip
  time, as RTCP. The receiving side's relayed producer is an ordinary ``Producer``: its
  consumers answer their subscribers' NACKs from their own caches, its NackGenerator asks
  over the link for what it never got (deduplicated for all its consumers), and its keyframe
  requests are throttled by it (one per layer per 500 ms for the whole worker), then again by
  the publisher's producer (one per layer per 500 ms for the whole room). The sending side
  answers a NACK from its cache of what it relayed, and asks the publisher for the rest.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pylibsrtp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..forwarding import Consumer, OutStream, Producer
from ..media.packet_cache import PacketCache
from ..media.rtcp import (
    RtcpNack,
    RtcpPli,
    RtcpSenderReport,
    RtcpUnknown,
    pack_nack,
    pack_pli,
    parse_compound,
)
from ..media.rtp import MalformedPacket, is_rtcp, parse_rtp, write_header
from ..media.seq import seq_diff
from ..stream import Layer
from ..tasks import spawn

logger = logging.getLogger(__name__)

KEY_BYTES = 30  # SRTP master key (16) and salt (14) of AES-CM-128 / HMAC-SHA1-80
LAYER_BITS = 2  # a link stream's SSRC: stream id << 2 | layer index (up to 4 layers)
MAX_STREAM = (1 << (32 - LAYER_BITS)) - 1
PING_INTERVAL_S = 1.0
REPLAY_WINDOW = 1024  # packets: a repaired packet may arrive this far behind
_APP = 204  # RTCP APP: the link's ping and pong
_APP_NAME = b"SFUL"
_PING, _PONG = 0, 1
_APP_PACKET = struct.Struct("!BBHI4sd")  # V/subtype, PT, length, SSRC, name, sent (ms)


def link_ssrc(stream: int, layer: int) -> int:
    return (stream << LAYER_BITS) | layer


def split_ssrc(ssrc: int) -> tuple[int, int]:
    return ssrc >> LAYER_BITS, ssrc & ((1 << LAYER_BITS) - 1)


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def pack_ping(subtype: int, sent_ms: float) -> bytes:
    return _APP_PACKET.pack(0x80 | subtype, _APP, _APP_PACKET.size // 4 - 1, 0, _APP_NAME, sent_ms)


def read_ping(raw: bytes) -> tuple[int, float] | None:
    """(subtype, sent ms) of a link ping or pong; None for any other APP packet."""
    if len(raw) != _APP_PACKET.size:
        return None
    b0, _pt, _length, _ssrc, name, sent_ms = _APP_PACKET.unpack(raw)
    if name != _APP_NAME or (b0 & 0x1F) not in (_PING, _PONG):
        return None
    return b0 & 0x1F, sent_ms


def _layer_names(producer: Producer) -> list[str]:
    return [layer.rid if layer.rid is not None else "single" for layer in producer.layers]


def _never_send(packet: bytes) -> bool:
    return False


class RelayOut(Consumer):
    """The copy of a producer that one link carries to one peer worker: the lowest
    ``layers`` of it, every layer at once (the remote consumers choose among them)."""

    def __init__(self, producer: Producer, link: Link, stream: int, now_s: Callable[[], float]) -> None:
        super().__init__(
            producer, f"link:{link.peer_worker}", OutStream(0, 0, 0), producer.payload_type, _never_send, now_s
        )
        self.link = link
        self.stream = stream
        # The remote worker's demand: how many of the lowest layers (0: none), and for dynacast
        # the largest height its consumers accept (None: any).
        self.layers = 0
        self.paused = True
        self.max_height = None
        self.current = -1  # never one layer: the producer's padding bookkeeping skips us
        self.target = 0
        size = 512 if producer.kind == "video" else 64
        self.caches = [PacketCache(size) for _ in producer.layers]
        self.packets_by_layer = [0] * len(producer.layers)
        self.resent = 0
        self.nacks_upstream = 0

    def set_demand(self, layers: int, max_height: int | None) -> None:
        layers = max(0, min(layers, len(self.producer.layers)))
        if layers == self.layers and max_height == self.max_height:
            return
        self.layers = layers
        self.paused = layers == 0
        self.max_height = max_height
        self.producer.demand_changed()  # dynacast: the union of every worker's demand

    # The consumer's layer selection is the remote consumers' business.
    def restart(self) -> None:
        pass

    def select(self, now_ms: int) -> int:
        return self.target

    def layer_started(self, index: int, keyframe: bool, now_ms: int) -> None:
        pass

    def set_preferences(self, max_height: int | None, paused: bool, now_ms: int) -> None:
        pass

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
        if layer >= self.layers:
            return
        seq = ext_seq & 0xFFFF
        packet = write_header(marker, self.payload_type, seq, timestamp, link_ssrc(self.stream, layer)) + payload
        self.caches[layer].put(seq, packet)
        self.packets_by_layer[layer] += 1
        self.link.send_media(packet, first=True)

    def on_link_nack(self, layer_index: int, seqs: list[int], now_ms: int) -> None:
        """The remote worker lacks these packets: resend what we relayed, ask the publisher
        for what we never had."""
        if not 0 <= layer_index < len(self.caches):
            return
        cache = self.caches[layer_index]
        layer = self.producer.layers[layer_index]
        upstream: list[int] = []
        for seq in dict.fromkeys(s & 0xFFFF for s in seqs[:256]):
            packet = cache.get(seq)
            if packet is not None:
                if now_ms - cache.resent_ms(seq) >= 20:
                    cache.mark_resent(seq, now_ms)
                    self.resent += 1
                    self.link.send_media(packet, first=False)
                continue
            highest = layer.stats.highest_ext_seq
            if highest >= 0:
                upstream.append(highest + seq_diff(seq, highest & 0xFFFF))
        if upstream:
            self.nacks_upstream += self.producer.retransmission_requested(layer_index, upstream, now_ms)

    def describe(self) -> dict[str, object]:
        return {
            "track": self.producer.id,
            "stream": self.stream,
            "layers": self.layers,
            "packets_by_layer": dict(zip(_layer_names(self.producer), self.packets_by_layer, strict=True)),
            "resent": self.resent,
            "nacks_upstream": self.nacks_upstream,
        }


class RelayIn:
    """A relayed producer on the receiving worker, and the link stream it comes from."""

    __slots__ = ("producer", "stream")

    def __init__(self, producer: Producer, stream: int) -> None:
        self.producer = producer
        self.stream = stream


class Link:
    """The media link with one peer worker (both directions)."""

    def __init__(self, endpoint: LinkEndpoint, peer_worker: str, peer_node: str, encrypted: bool) -> None:
        self.endpoint = endpoint
        self.peer_worker = peer_worker
        self.peer_node = peer_node
        self.encrypted = encrypted
        self.address: tuple[str, int] | None = None
        self.tx_key = new_key() if encrypted else b""
        self.rx_key = b""
        self._tx: pylibsrtp.Session | None = None
        self._rx: pylibsrtp.Session | None = None
        if encrypted:
            self._tx = _session(self.tx_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        self.rooms = 0  # rooms using it; closed at 0
        self.closed = False
        self._next_stream = 1
        self.outgoing: dict[int, RelayOut] = {}
        self.incoming: dict[int, RelayIn] = {}
        self._drop_every = endpoint.drop_every
        self._sent_first = 0
        # Counters.
        self.packets_sent = 0
        self.bytes_sent = 0
        self.packets_received = 0
        self.bytes_received = 0
        self.rtcp_sent = 0
        self.rtcp_received = 0
        self.dropped_for_test = 0
        self.undecryptable = 0
        self.malformed = 0
        self.unknown_stream = 0
        self.keyframe_requests_received = 0
        self.nacks_received = 0
        self.rtt_ms: float | None = None
        self._last_ping_s = 0.0

    # -- set-up ---------------------------------------------------------------------------

    def allocate_stream(self) -> int:
        stream = self._next_stream
        self._next_stream = stream + 1 if stream < MAX_STREAM else 1
        return stream

    def set_peer(self, host: str, port: int, rx_key: bytes) -> None:
        """The peer's link address and the key it encrypts with (b"" when plain)."""
        self.address = (host, port)
        self.endpoint.bind_address(self)
        if self.encrypted and rx_key and rx_key != self.rx_key:
            self.rx_key = rx_key
            self._rx = _session(rx_key, pylibsrtp.Policy.SSRC_ANY_INBOUND)

    def describe_local(self) -> dict[str, Any]:
        """What the peer needs to send to us: our address, and our key for this direction."""
        host, port = self.endpoint.address
        return {"host": host, "port": port, "key": self.tx_key.hex()}

    # -- sending --------------------------------------------------------------------------

    def send_media(self, packet: bytes, first: bool) -> None:
        if self.closed or self.address is None:
            return
        if first and self._drop_every:
            self._sent_first += 1
            if self._sent_first % self._drop_every == 0:
                self.dropped_for_test += 1
                return
        if self._tx is not None:
            try:
                packet = self._tx.protect(packet)
            except pylibsrtp.Error:
                return
        self.packets_sent += 1
        self.bytes_sent += len(packet)
        self.endpoint.sendto(packet, self.address)

    def send_rtcp(self, packet: bytes) -> None:
        if self.closed or self.address is None:
            return
        if self._tx is not None:
            try:
                packet = self._tx.protect_rtcp(packet)
            except pylibsrtp.Error:
                return
        self.rtcp_sent += 1
        self.endpoint.sendto(packet, self.address)

    def request_keyframe(self, stream: int, layer: int) -> None:
        self.send_rtcp(pack_pli(0, link_ssrc(stream, layer)))

    def send_nack(self, stream: int, layer: int, ext_seqs: list[int]) -> None:
        self.send_rtcp(pack_nack(0, link_ssrc(stream, layer), ext_seqs))

    def ping(self, now_s: float) -> None:
        self._last_ping_s = now_s
        self.send_rtcp(pack_ping(_PING, now_s * 1000))

    def send_sender_reports(self) -> None:
        """The publisher's last sender report of every relayed layer, on its link stream, so
        remote subscribers keep audio/video sync (an SR pairs a wall-clock time with an RTP
        timestamp once and for all: one every ping interval is plenty)."""
        packets = b""
        for out in self.outgoing.values():
            for layer in out.producer.layers[: out.layers]:
                if layer.sr_ntp is not None:
                    sr = RtcpSenderReport(link_ssrc(out.stream, layer.index), layer.sr_ntp, layer.sr_rtp, 0, 0)
                    packets += bytes(sr)
                    if len(packets) > 1000:
                        self.send_rtcp(packets)
                        packets = b""
        if packets:
            self.send_rtcp(packets)

    # -- receiving ------------------------------------------------------------------------

    def received(self, data: bytes, now_ms: int) -> None:
        rtcp = is_rtcp(data)
        if self._rx is not None:
            try:
                data = self._rx.unprotect_rtcp(data) if rtcp else self._rx.unprotect(data)
            except pylibsrtp.Error:
                self.undecryptable += 1
                return
        elif self.encrypted:
            self.undecryptable += 1  # no key yet
            return
        if rtcp:
            self._received_rtcp(data, now_ms)
            return
        try:
            view = parse_rtp(data)
        except MalformedPacket:
            self.malformed += 1
            return
        stream, layer_index = split_ssrc(view.ssrc)
        relay = self.incoming.get(stream)
        if relay is None or layer_index >= len(relay.producer.layers):
            self.unknown_stream += 1
            return
        self.packets_received += 1
        self.bytes_received += len(data)
        layer = relay.producer.layers[layer_index]
        if layer.ssrc is None:
            layer.ssrc = view.ssrc
        relay.producer.on_rtp(layer, data, view, now_ms)

    def _received_rtcp(self, data: bytes, now_ms: int) -> None:
        try:
            packets = parse_compound(data)
        except MalformedPacket:
            self.malformed += 1
            return
        self.rtcp_received += 1
        for packet in packets:
            if isinstance(packet, RtcpPli):
                self.keyframe_requests_received += 1
                stream, layer = split_ssrc(packet.media_ssrc)
                out = self.outgoing.get(stream)
                if out is not None:
                    out.producer.request_keyframe(now_ms / 1000, layer)
            elif isinstance(packet, RtcpNack):
                self.nacks_received += len(packet.lost)
                stream, layer = split_ssrc(packet.media_ssrc)
                out = self.outgoing.get(stream)
                if out is not None:
                    out.on_link_nack(layer, packet.lost, now_ms)
            elif isinstance(packet, RtcpSenderReport):
                stream, layer_index = split_ssrc(packet.ssrc)
                relay = self.incoming.get(stream)
                if relay is not None and layer_index < len(relay.producer.layers):
                    relay.producer.on_sender_report(
                        relay.producer.layers[layer_index], packet.ntp_timestamp, packet.rtp_timestamp
                    )
            elif isinstance(packet, RtcpUnknown) and packet.packet_type == _APP:
                ping = read_ping(packet.raw)
                if ping is None:
                    continue
                subtype, sent_ms = ping
                if subtype == _PING:
                    self.send_rtcp(pack_ping(_PONG, sent_ms))
                else:
                    self.rtt_ms = max(0.0, time.monotonic() * 1000 - sent_ms)

    # -- the relayed producers ------------------------------------------------------------

    def add_out(self, producer: Producer) -> RelayOut:
        out = RelayOut(producer, self, self.allocate_stream(), time.monotonic)
        self.outgoing[out.stream] = out
        producer.add_consumer(out, time.monotonic())
        return out

    def remove_out(self, out: RelayOut) -> None:
        if self.outgoing.get(out.stream) is out:
            del self.outgoing[out.stream]
        out.close()

    def add_in(self, producer: Producer, stream: int) -> None:
        self.incoming[stream] = RelayIn(producer, stream)

    def remove_in(self, stream: int) -> None:
        relay = self.incoming.pop(stream, None)
        if relay is not None:
            relay.producer.close()

    def loss(self) -> tuple[int, float]:
        """Packets lost on the way here (as the relayed layers count them), and the fraction."""
        lost = sum(max(0, layer.stats.cumulative_lost) for r in self.incoming.values() for layer in r.producer.layers)
        got = self.packets_received
        return lost, (lost / (lost + got) if lost + got else 0.0)

    def describe(self) -> dict[str, Any]:
        lost, fraction = self.loss()
        layers_relayed = sum(out.layers for out in self.outgoing.values())
        return {
            "peer_worker": self.peer_worker,
            "peer_node": self.peer_node,
            "address": f"{self.address[0]}:{self.address[1]}" if self.address else None,
            "encrypted": self.encrypted,
            "rooms": self.rooms,
            "packets_sent": self.packets_sent,
            "bytes_sent": self.bytes_sent,
            "packets_received": self.packets_received,
            "bytes_received": self.bytes_received,
            "rtcp_sent": self.rtcp_sent,
            "rtcp_received": self.rtcp_received,
            "packets_lost": lost,
            "fraction_lost": round(fraction, 4),
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 3),
            "dropped_for_test": self.dropped_for_test,
            "undecryptable": self.undecryptable,
            "malformed": self.malformed,
            "unknown_stream": self.unknown_stream,
            "keyframe_requests_received": self.keyframe_requests_received,
            "nacks_received": self.nacks_received,
            "layers_relayed": layers_relayed,
            "relayed": [out.describe() for out in self.outgoing.values()],
            "received": [
                {
                    "track": r.producer.id,
                    "stream": r.stream,
                    "packets": sum(la.stats.packets for la in r.producer.layers),
                }
                for r in self.incoming.values()
            ],
        }

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for out in list(self.outgoing.values()):
            out.close()
        self.outgoing.clear()
        for relay in list(self.incoming.values()):
            relay.producer.close()
        self.incoming.clear()
        self.endpoint.forget(self)


def _session(key: bytes, ssrc_type: int) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=key, ssrc_type=ssrc_type, srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    )
    policy.allow_repeat_tx = True  # a NACKed packet is resent as it was
    policy.window_size = REPLAY_WINDOW
    return pylibsrtp.Session(policy=policy)


class LinkEndpoint(asyncio.DatagramProtocol):
    """A worker's UDP socket for its media links, and its links by peer worker."""

    def __init__(self, worker_id: str, node_id: str, srtp_between_nodes: bool = True, drop_every: int = 0) -> None:
        self.worker_id = worker_id
        self.node_id = node_id
        self.srtp_between_nodes = srtp_between_nodes
        self.drop_every = drop_every
        self.links: dict[str, Link] = {}
        self._by_address: dict[tuple[str, int], Link] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self.address: tuple[str, int] = ("", 0)
        self.unknown_address = 0
        self._ping_task: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._transport = transport
        sockname = transport.get_extra_info("sockname")
        self.address = (str(sockname[0]), int(sockname[1]))

        self._ping_task = spawn(self._pings(), name="link-pings")

    async def _pings(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            now = time.monotonic()
            for link in list(self.links.values()):
                link.ping(now)
                link.send_sender_reports()

    def link(self, peer_worker: str, peer_node: str) -> Link:
        """The link with a peer worker (made on first use); each room holds it once."""
        link = self.links.get(peer_worker)
        if link is None or link.closed:
            encrypted = self.srtp_between_nodes and peer_node != self.node_id
            link = Link(self, peer_worker, peer_node, encrypted)
            self.links[peer_worker] = link
        link.rooms += 1
        return link

    def release(self, link: Link) -> None:
        link.rooms -= 1
        if link.rooms <= 0:
            link.close()

    def bind_address(self, link: Link) -> None:
        for address, known in list(self._by_address.items()):
            if known is link and address != link.address:
                del self._by_address[address]
        if link.address is not None:
            self._by_address[link.address] = link

    def forget(self, link: Link) -> None:
        if self.links.get(link.peer_worker) is link:
            del self.links[link.peer_worker]
        for address, known in list(self._by_address.items()):
            if known is link:
                del self._by_address[address]

    def sendto(self, packet: bytes, address: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(packet, address)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        link = self._by_address.get((str(addr[0]), int(addr[1])))
        if link is None:
            self.unknown_address += 1
            return
        try:
            link.received(data, int(time.monotonic() * 1000))
        except Exception:
            logger.exception("media link with %s: a packet failed", link.peer_worker)

    def error_received(self, exc: Exception) -> None:
        logger.debug("media link socket: %r", exc)

    def describe(self) -> dict[str, Any]:
        return {
            "address": f"{self.address[0]}:{self.address[1]}",
            "unknown_address": self.unknown_address,
            "links": [link.describe() for link in self.links.values()],
        }

    def close(self) -> None:
        if self._ping_task is not None:
            self._ping_task.cancel()
            self._ping_task = None
        for link in list(self.links.values()):
            link.close()
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class LinkCollector:
    """The worker's media links in /metrics, one series per peer worker."""

    def __init__(self, endpoint: LinkEndpoint) -> None:
        self.endpoint = endpoint

    def collect(self) -> Iterator[Metric]:
        labels = ["peer_worker"]
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "packets_sent": CounterMetricFamily(
                "sfu_link_packets_sent", "RTP packets sent on a media link", labels=labels
            ),
            "bytes_sent": CounterMetricFamily("sfu_link_bytes_sent", "RTP bytes sent on a media link", labels=labels),
            "packets_received": CounterMetricFamily(
                "sfu_link_packets_received", "RTP packets received on a media link", labels=labels
            ),
            "bytes_received": CounterMetricFamily(
                "sfu_link_bytes_received", "RTP bytes received on a media link", labels=labels
            ),
            "packets_lost": CounterMetricFamily(
                "sfu_link_packets_lost", "RTP packets lost on the way here on a media link", labels=labels
            ),
            "rtt_ms": GaugeMetricFamily("sfu_link_rtt_ms", "Round-trip time of a media link (ms)", labels=labels),
            "layers_relayed": GaugeMetricFamily(
                "sfu_link_layers_relayed", "Layers of producers relayed to the peer now", labels=labels
            ),
            "tracks_relayed": GaugeMetricFamily(
                "sfu_link_tracks_relayed", "Producers offered to the peer (relayed when it needs them)", labels=labels
            ),
            "encrypted": GaugeMetricFamily("sfu_link_encrypted", "1 if the link is SRTP", labels=labels),
        }
        for link in list(self.endpoint.links.values()):
            lost, _ = link.loss()
            values = {
                "packets_sent": link.packets_sent,
                "bytes_sent": link.bytes_sent,
                "packets_received": link.packets_received,
                "bytes_received": link.bytes_received,
                "packets_lost": lost,
                "rtt_ms": link.rtt_ms if link.rtt_ms is not None else float("nan"),
                "layers_relayed": sum(out.layers for out in link.outgoing.values()),
                "tracks_relayed": len(link.outgoing),
                "encrypted": int(link.encrypted),
            }
            for name, family in families.items():
                family.add_metric([link.peer_worker], values[name])
        yield from families.values()


__all__ = ["Layer", "Link", "LinkCollector", "LinkEndpoint", "RelayIn", "RelayOut"]

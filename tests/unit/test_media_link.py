"""The media link between two workers, on loopback with real sockets and real libsrtp: what
crosses (only the demanded layers), SRTP between nodes, repair of dropped packets by NACK,
keyframe requests merged, the link's ping."""

import asyncio
import time

import pytest

from sfu.cluster.media_link import LinkEndpoint, link_ssrc, pack_ping, read_ping, split_ssrc
from sfu.dynacast import needed_layers
from sfu.forwarding import Producer
from sfu.media.rtp import parse_rtp, write_header
from sfu.stream import Codec

pytestmark = pytest.mark.timeout(30)


def test_a_link_stream_ssrc_names_the_stream_and_the_layer():
    assert split_ssrc(link_ssrc(12345, 2)) == (12345, 2)
    assert link_ssrc(1, 0) != link_ssrc(1, 1)


def test_a_ping_round_trips_and_other_app_packets_are_not_pings():
    subtype, sent_ms = read_ping(pack_ping(1, 1234.5))
    assert (subtype, sent_ms) == (1, 1234.5)
    assert read_ping(pack_ping(0, 1.0)[:-1]) is None
    assert read_ping(pack_ping(0, 1.0).replace(b"SFUL", b"XXXX")) is None


class Pair:
    """Two workers' endpoints (on two nodes unless told otherwise) and the link between them."""

    def __init__(self, same_node: bool = False, drop_every: int = 0) -> None:
        self.a = LinkEndpoint("n0/0", "n0", drop_every=drop_every)
        self.b = LinkEndpoint("n0/1" if same_node else "n1/0", "n0" if same_node else "n1")

    async def __aenter__(self):
        await self.a.start("127.0.0.1")
        await self.b.start("127.0.0.1")
        self.ab = self.a.link(self.b.worker_id, self.b.node_id)
        self.ba = self.b.link(self.a.worker_id, self.a.node_id)
        self.ab.set_peer(*self.b.address, self.ba.tx_key)
        self.ba.set_peer(*self.a.address, self.ab.tx_key)
        return self

    async def __aexit__(self, *exc):
        self.a.close()
        self.b.close()


def producer(rids=None, requests=None, demands=None, nacks=None):
    return Producer(
        "t1",
        "p1",
        "video",
        "camera",
        Codec("VP8", 90000),
        96,
        request_keyframe=lambda p, layer: requests.append(layer.index) if requests is not None else None,
        rids=rids,
        send_nack=(lambda p, layer, seqs: nacks.extend(seqs)) if nacks is not None else None,
        on_demand_changed=(lambda p: demands.append(p)) if demands is not None else None,
    )


def feed(prod, layer_index, seqs, ssrc=1111):
    layer = prod.layers[layer_index]
    for seq in seqs:
        data = write_header(0, 96, seq & 0xFFFF, seq * 3000, ssrc) + bytes([0x10, 0, 0, 0]) + b"x" * 100
        prod.on_rtp(layer, data, parse_rtp(data), int(time.monotonic() * 1000))


def relayed_producer(pair, stream, rids=None):
    link = pair.ba
    remote = Producer(
        "t1",
        "p1",
        "video",
        "camera",
        Codec("VP8", 90000),
        96,
        request_keyframe=lambda p, layer: link.request_keyframe(stream, layer.index),
        rids=rids,
        send_nack=lambda p, layer, seqs: link.send_nack(stream, layer.index, seqs),
    )
    link.add_in(remote, stream)
    return remote


async def until(check, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.01)


async def test_between_nodes_the_link_is_srtp_and_only_demanded_layers_cross():
    async with Pair() as pair:
        assert pair.ab.encrypted and pair.ba.encrypted
        demands = []
        origin = producer(rids=["q", "h", "f"], demands=demands)
        out = pair.ab.add_out(origin)
        remote = relayed_producer(pair, out.stream, rids=["q", "h", "f"])
        feed(origin, 0, range(100, 120))
        await asyncio.sleep(0.1)
        assert pair.ba.packets_received == 0, "no demand: nothing crosses"
        for layer, height in zip(origin.layers, (90, 180, 360), strict=True):
            layer.height = height
        out.set_demand(1, 100)
        assert demands and needed_layers(origin.consumers, origin.layers)[0] == 1, "dynacast counts the link"
        for i in range(3):
            feed(origin, i, range(200, 230), ssrc=1000 + i)
        await until(lambda: remote.layers[0].stats.packets == 30)
        assert remote.layers[1].stats.packets == 0 and remote.layers[2].stats.packets == 0
        assert out.packets_by_layer == [30, 0, 0]
        assert pair.ba.undecryptable == 0 and pair.ab.bytes_sent > 30 * 112, "SRTP adds its tag"
        out.set_demand(3, None)
        feed(origin, 2, range(300, 310), ssrc=1002)
        await until(lambda: remote.layers[2].stats.packets == 10)


async def test_on_one_node_the_link_is_plain():
    async with Pair(same_node=True) as pair:
        assert not pair.ab.encrypted
        origin = producer()
        out = pair.ab.add_out(origin)
        remote = relayed_producer(pair, out.stream)
        out.set_demand(1, None)
        feed(origin, 0, range(10))
        await until(lambda: remote.layers[0].stats.packets == 10)
        assert pair.ab.bytes_sent == 10 * 116


async def test_a_key_that_does_not_match_is_refused_and_counted():
    async with Pair() as pair:
        pair.ba.set_peer(*pair.a.address, bytes(30))  # not the key the other side encrypts with
        origin = producer()
        out = pair.ab.add_out(origin)
        relayed_producer(pair, out.stream)
        out.set_demand(1, None)
        feed(origin, 0, range(10))
        await until(lambda: pair.ba.undecryptable == 10)
        assert pair.ba.packets_received == 0


async def test_packets_dropped_on_the_link_are_resent_from_the_senders_cache_on_nack():
    async with Pair(drop_every=4) as pair:
        origin = producer(nacks=[])
        out = pair.ab.add_out(origin)
        remote = relayed_producer(pair, out.stream)
        out.set_demand(1, None)
        feed(origin, 0, range(1000, 1041))  # (the 40th dropped, the 41st tells it was)
        assert pair.ab.dropped_for_test == 10

        def repaired():
            remote.tick(int(time.monotonic() * 1000))
            return pair.ba.packets_received == 41

        await until(repaired)
        assert out.resent == 10 and pair.ab.nacks_received >= 10
        assert origin.retransmissions_requested == 0, "all from the link's cache: none asked of the publisher"


async def test_keyframe_requests_over_the_link_reach_the_publisher_once_per_500_ms():
    async with Pair() as pair:
        requests = []
        origin = producer(requests=requests)
        out = pair.ab.add_out(origin)
        requests.clear()  # (adding the relay asked for one)
        origin.layers[0].last_keyframe_request_s = -1e9
        for _ in range(10):
            pair.ba.request_keyframe(out.stream, 0)
        await until(lambda: pair.ab.keyframe_requests_received == 10)
        assert requests == [0]


async def test_the_ping_measures_the_round_trip():
    async with Pair() as pair:
        pair.ab.ping(time.monotonic())
        await until(lambda: pair.ab.rtt_ms is not None)
        assert 0 <= pair.ab.rtt_ms < 1000


async def test_the_publishers_sender_reports_reach_the_relayed_layers():
    async with Pair() as pair:
        origin = producer()
        out = pair.ab.add_out(origin)
        remote = relayed_producer(pair, out.stream)
        origin.on_sender_report(origin.layers[0], 0x1234567890ABCDEF, 424242)
        pair.ab.send_sender_reports()
        await asyncio.sleep(0.1)
        assert remote.layers[0].sr_ntp is None, "not relayed: no demand"
        out.set_demand(1, None)
        pair.ab.send_sender_reports()
        await until(lambda: remote.layers[0].sr_ntp == 0x1234567890ABCDEF)
        assert remote.layers[0].sr_rtp == 424242

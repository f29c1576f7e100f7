"""Simulcast through the real server with a Python publisher that sends three RID layers."""

import asyncio
import time

from sfu.app import ROOMS_KEY
from sfu.client import Participant
from tests.conftest import eventually, settled


async def setup(server, room):
    pub = Participant(server.ws_url, room, "pub")
    await pub.join()
    await pub.publish_rtp(audio=True, video=True, simulcast=True)
    a, b = Participant(server.ws_url, room, "a"), Participant(server.ws_url, room, "b")
    await a.join()
    await b.join()
    producer = next(p for p in server.app[ROOMS_KEY].rooms[room].participants[pub.id].producers() if p.kind == "video")
    return pub, a, b, producer


def consumer_of(producer, participant):
    return next(c for c in producer.consumers if c.subscriber_id == participant.id)


def video_stream(p, producer):
    return next(s for s in p.streams.values() if s.track == producer.id)


async def test_layers_are_learnt_and_each_subscriber_gets_the_layer_it_asks_for(server):
    pub, a, b, producer = await setup(server, "sim")
    try:
        assert [layer.rid for layer in producer.layers] == ["q", "h", "f"]
        await eventually(lambda: [layer.height for layer in producer.layers] == [90, 180, 360], timeout=10)
        await a.send({"type": "subscription", "track": producer.id, "max_height": 100, "paused": False})
        await eventually(lambda: len(producer.consumers) == 2 and consumer_of(producer, a).current == 0, timeout=10)
        await eventually(lambda: consumer_of(producer, b).current == 2, timeout=10)

        # Raise A's cap: it moves up on a keyframe of the top layer (one per second here).
        t0 = time.monotonic()
        await a.send({"type": "subscription", "track": producer.id, "max_height": None, "paused": False})
        await eventually(lambda: consumer_of(producer, a).current == 2, timeout=10)
        print(f"switch up after {time.monotonic() - t0:.2f}s")
        await a.send({"type": "subscription", "track": producer.id, "max_height": 200, "paused": False})
        await eventually(lambda: consumer_of(producer, a).current == 1, timeout=10)
        # Some of the middle layer reaches A, and enough frames for a median latency (waited
        # for by count: a busy machine sends fewer frames in a given time).
        stream = video_stream(a, producer)
        after_switch = stream.packets
        await eventually(lambda: stream.packets > after_switch + 10 and len(stream.latencies_ms) > 20, timeout=15)

        # Whatever layers it went through, A saw one gapless stream.
        seqs = sorted(stream.seqs)
        assert seqs[-1] - seqs[0] + 1 == len(seqs), "no gap in the outgoing sequence across switches"
        assert consumer_of(producer, a).layer_switches >= 2
        lat = sorted(stream.latencies_ms)
        assert len(lat) > 20 and lat[len(lat) // 2] < 100, "send-time trailers arrive, and quickly"

        # Paused: nothing at all; resumed: back.
        await a.send({"type": "subscription", "track": producer.id, "max_height": None, "paused": True})
        await eventually(lambda: consumer_of(producer, a).paused, timeout=10)
        before = await settled(lambda: stream.packets)  # what was on its way arrives, then nothing
        await asyncio.sleep(1.0)
        assert stream.packets == before
        await a.send({"type": "subscription", "track": producer.id, "max_height": None, "paused": False})
        await eventually(lambda: stream.packets > before + 30, timeout=10)
    finally:
        for p in (pub, a, b):
            await p.close()


async def test_subscriber_falls_back_when_the_top_layer_stops_and_returns(server):
    pub, a, b, producer = await setup(server, "fallback")
    try:
        await eventually(lambda: len(producer.consumers) == 2 and consumer_of(producer, b).current == 2, timeout=10)
        top = next(s for s in pub.rtp_streams if s.rid == "f")
        pub.rtp_streams.remove(top)  # the publisher stops sending its top layer
        t0 = time.monotonic()
        await eventually(lambda: consumer_of(producer, b).current == 1, timeout=10)
        fell_back_s = time.monotonic() - t0
        print(f"fell back after {fell_back_s:.2f}s")
        # By itself, while the top layer stays away: 0.5 s to notice, then the next keyframe of
        # the lower layer (one per second), with room for a busy machine.
        assert fell_back_s < 10.0
        pub.rtp_streams.append(top)
        await eventually(lambda: consumer_of(producer, b).current == 2, timeout=10)
        stream = video_stream(b, producer)
        seqs = sorted(stream.seqs)
        assert seqs[-1] - seqs[0] + 1 == len(seqs)
    finally:
        for p in (pub, a, b):
            await p.close()

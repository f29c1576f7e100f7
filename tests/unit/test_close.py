"""close() is idempotent and cascades: peer -> producers -> consumers."""

import asyncio

from aiortc import RTCPeerConnection

from sfu.forwarding import Codec, Consumer, OutStream, Producer
from sfu.rtc.peer import TICK_INTERVAL_S
from sfu.rtc.publish import PublishPeer
from sfu.rtc.ticker import ticker

VP8 = Codec("VP8", 90000)


def consumer_of(producer):
    consumer = Consumer(producer, "s", OutStream(1, 0, 0), 97, send=lambda b: True, now_s=lambda: 0.0)
    producer.add_consumer(consumer, 0.0)
    return consumer


def test_closing_a_producer_closes_each_consumer_and_a_second_close_changes_nothing():
    producer = Producer("p-0", "p", "video", "camera", VP8, 96, request_keyframe=lambda p, layer: None)
    consumers = [consumer_of(producer), consumer_of(producer)]
    producer.close()
    assert all(c.closed for c in consumers) and producer.consumers == []
    producer.close()
    consumers[0].close()
    assert producer.closed and producer.consumers == []


async def test_closing_a_publish_peer_twice_closes_its_producers_consumers_and_tasks_once():
    client = RTCPeerConnection()
    client.addTransceiver("audio", direction="sendonly")
    client.addTransceiver("video", direction="sendonly")
    await client.setLocalDescription(await client.createOffer())
    peer = PublishPeer("p1", [], lambda: None, 0)
    try:
        _, added, _ = await peer.handle_offer(client.localDescription.sdp, {})
        consumers = [consumer_of(p) for p in added]
        tasks = [t for t in (peer._feedback_task,) if t is not None]
        assert peer in ticker(TICK_INTERVAL_S), "the peer's periodic work is on the ticker"
        await peer.close()
        assert all(p.closed for p in added) and all(c.closed for c in consumers)
        assert peer.producers == {} and peer.pc.connectionState == "closed"
        assert peer not in ticker(TICK_INTERVAL_S)
        await asyncio.sleep(0)
        assert all(t.done() for t in tasks)
        await peer.close()  # nothing left to do, nothing raised
        assert peer.closed
    finally:
        await client.close()

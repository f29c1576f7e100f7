"""Bad input gets a typed error and disturbs nobody: not the sender's socket, not another room."""

import struct

import aiohttp

from sfu.app import ROOMS_KEY
from sfu.client import Participant
from sfu.rtc import aiortc_glue
from tests.conftest import eventually

GARBAGE_SDP = "v=0\r\nthis is not sdp\r\nm=video banana\r\n"
NO_ICE_SDP = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n"
)


async def publisher_and_viewer(server, room):
    """a publishes, b receives; returns once b gets a's video."""
    a, b = Participant(server.ws_url, room, "a"), Participant(server.ws_url, room, "b")
    await a.join()
    await a.publish()
    await b.join()
    await eventually(lambda: b.received_from(a.id, "video") > 20, timeout=15)
    return a, b


async def test_every_bad_message_gets_a_typed_error_and_the_call_next_door_goes_on(server):
    # A healthy call in another room.
    a, b = Participant(server.ws_url, "good", "a"), Participant(server.ws_url, "good", "b")
    await a.join()
    await a.publish()
    await b.join()
    await eventually(lambda: b.received_from(a.id, "video") > 20, timeout=15)

    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws_url)

        async def ask(frame, binary=False):
            if binary:
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
            return await ws.receive_json(timeout=10)

        assert (await ask("{oops"))["code"] == "bad-json"
        assert (await ask('{"type": "teleport"}'))["code"] == "unknown-type"
        assert (await ask(b"\x00\x01", binary=True))["code"] == "bad-json"
        err = await ask('{"type": "offer", "pc": "publish", "sdp": "v=0\\r\\n"}')
        assert (err["code"], err["request"]) == ("not-joined", "offer")
        big = '{"type": "chat", "text": "' + "x" * 70000 + '"}'
        assert (await ask(big))["code"] == "too-large"
        assert (await ask('{"type": "ping"}'))["type"] == "pong"

        await ws.send_str('{"type": "join", "room": "bad", "name": "mallory"}')
        joined = await ws.receive_json(timeout=10)
        assert joined["type"] == "joined"
        assert (await ask('{"type": "join", "room": "bad", "name": "again"}'))["code"] == "already-joined"
        for sdp in (GARBAGE_SDP, NO_ICE_SDP, "v=0\r\n" + "a=x\r\n" * 100):
            msg = {"type": "offer", "pc": "publish", "sdp": sdp}
            assert (await ask(__import__("json").dumps(msg)))["code"] == "bad-sdp"
        assert (await ask('{"type": "answer", "pc": "subscribe", "sdp": "v=0\\r\\n"}'))["code"] in (
            "bad-sdp",
            "wrong-state",
        )
        cand = '{"type": "candidate", "pc": "subscribe", "candidate": {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host"}}'
        assert (await ask(cand))["code"] == "wrong-state"
        assert (await ask('{"type": "mute", "track": "nope", "muted": true}'))["code"] == "unknown-track"

        # After all that, the same socket can still publish for real.
        rooms = server.app[ROOMS_KEY]
        assert rooms.rooms["bad"].participants[joined["id"]].publisher is None

        # Far over the limit: the WebSocket layer closes with 1009, the participant is removed.
        await ws.send_str("x" * (server.config.max_message_bytes * 5))
        closing = await ws.receive(timeout=10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await eventually(lambda: "bad" not in rooms.rooms, timeout=15)

    # The call next door never noticed.
    before = b.received_from(a.id, "video")
    await eventually(lambda: b.received_from(a.id, "video") > before + 30, timeout=15)
    assert not [m for m in a.messages + b.messages if m["type"] == "error"]
    await a.close()
    await b.close()


async def test_a_failed_reoffer_leaves_the_published_tracks_consistent(server):
    a, b = await publisher_and_viewer(server, "reoffer")
    await a.send({"type": "offer", "pc": "publish", "sdp": GARBAGE_SDP})
    assert (await a.wait_type("error"))["code"] == "bad-sdp"
    # the garbage was rejected before touching the connection: media still flows
    before = b.received_from(a.id, "video")
    await eventually(lambda: b.received_from(a.id, "video") > before + 30, timeout=15)
    participant = server.app[ROOMS_KEY].rooms["reoffer"].participants[a.id]
    assert len(participant.producers()) == 2
    await a.close()
    await b.close()


async def test_malformed_rtp_and_rtcp_are_dropped_and_counted(server):
    a, b = await publisher_and_viewer(server, "packets")
    transport = aiortc_glue.dtls_transports(a.publish_pc)[0]

    def bad_rtp(seq):  # a fresh sequence number each time, or SRTP drops them as replays
        return [
            struct.pack("!BBHII", 0x90, 96, seq, 2, 3) + b"\xbe\xde\x00\xff",  # extension past the end
            struct.pack("!BBHII", 0xA0, 96, seq, 2, 3) + b"\x00\x00\x00\xff",  # padding past the end
            struct.pack("!BBHII", 0x8F, 96, seq, 2, 3),  # 15 CSRCs that are not there
            struct.pack("!BBHII", 0x80, 96, seq, 2, 0xDEADBEEF) + b"unknown ssrc",
        ]

    bad_rtcp = [
        bytes([0x81, 200, 0, 40]) + b"\x00" * 8,  # SR claiming more than it has
        bytes([0x83, 201, 0, 1]) + b"\x00" * 4,  # RR announcing three reports, holding none
        bytes([0x80, 205, 0, 1]) + b"\x00" * 4,  # RTP feedback too short for its media SSRC
    ]
    # libsrtp itself refuses to protect some of these (header longer than the packet); the
    # ones it lets through reach the server's tap.
    rtp_through = [i for i, pkt in enumerate(bad_rtp(0)) if aiortc_glue.send_packet(transport, pkt)]
    rtcp_through = [pkt for pkt in bad_rtcp if aiortc_glue.send_packet(transport, pkt, rtcp=True)]
    assert rtp_through == [1, 3]
    assert rtcp_through == bad_rtcp
    for seq in range(1, 20):
        for i in rtp_through:
            aiortc_glue.send_packet(transport, bad_rtp(seq)[i])
        for pkt in rtcp_through:
            aiortc_glue.send_packet(transport, pkt, rtcp=True)
    publisher = server.app[ROOMS_KEY].rooms["packets"].participants[a.id].publisher
    # every bad RTCP packet and the RTP packet with impossible padding are malformed
    await eventually(lambda: publisher.malformed_packets >= 20 * (len(rtcp_through) + 1), timeout=15)
    await eventually(lambda: publisher.unroutable_packets >= 20, timeout=15)
    before = b.received_from(a.id, "video")
    await eventually(lambda: b.received_from(a.id, "video") > before + 30, timeout=15)
    await a.close()
    await b.close()


async def test_malformed_rtx_and_absurd_nacks_disturb_nobody(server):
    a, b = await publisher_and_viewer(server, "repair")
    room = server.app[ROOMS_KEY].rooms["repair"]
    publisher = room.participants[a.id].publisher
    producer = next(p for p in publisher.producers.values() if p.kind == "video")
    assert producer.rtx_payload_type is not None, "the publish answer negotiated RTX"
    layer = producer.layers[0]
    rtx_ssrc = next(rtx for rtx, media in publisher.router.fid.items() if media == layer.ssrc)
    pt = producer.rtx_payload_type
    transport = aiortc_glue.dtls_transports(a.publish_pc)[0]
    for seq in range(1, 21):
        for packet in (
            struct.pack("!BBHII", 0x80, pt, seq, 0, rtx_ssrc) + b"\x01",  # too short for an OSN
            struct.pack("!BBHII", 0x80, pt, seq + 100, 0, rtx_ssrc) + struct.pack("!H", 30000) + b"x",  # far ahead
        ):
            aiortc_glue.send_packet(transport, packet)
    await eventually(lambda: producer.rtx_malformed >= 20 and producer.rtx_duplicates >= 20, timeout=15)
    # A subscriber NACKs everything there is, over and over.
    subscriber = room.participants[b.id].subscriber
    consumer = next(c for c in subscriber.consumers() if c.producer is producer)
    sub_transport = aiortc_glue.dtls_transports(b.subscribe_pc)[0]
    fci = b"".join(struct.pack("!HH", pid, 0xFFFF) for pid in range(0, 65536, 17)[:300])
    nack = struct.pack("!BBHII", 0x81, 205, 2 + len(fci) // 4, 1, consumer.out.ssrc) + fci
    for _ in range(20):
        aiortc_glue.send_packet(sub_transport, nack, rtcp=True)
    await eventually(lambda: consumer.nacks_received >= 20 * 256, timeout=15)
    assert layer.nack is not None and len(layer.nack.missing) < 200
    before = b.received_from(a.id, "video")
    await eventually(lambda: b.received_from(a.id, "video") > before + 30, timeout=15)
    await a.close()
    await b.close()

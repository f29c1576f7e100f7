"""Data channels through the real server with real aiortc participants: relayed with the
sender's id and topic on the reliable and lossy channels, to everyone or to the named ones;
limits answered with `data-error`; bad frames and floods disturb nothing else."""

import asyncio
import re

import aiohttp
import pytest

from sfu.app import ROOMS_KEY
from sfu.client import Participant
from sfu.data_frame import DataFrame, encode
from sfu.rtc import aiortc_glue as glue
from sfu.rtc.datachannels import MAX_CLIENT_CHANNELS
from tests.conftest import eventually, settled, start_server

pytestmark = pytest.mark.timeout(120)


async def data_participants(server, room, count, media=False):
    """``count`` participants of ``room`` with data channels open both ways."""
    people = []
    for i in range(count):
        p = Participant(server.ws_url, room, f"d{i}")
        await p.join()
        people.append(p)
    for p in people:
        if media:
            await p.publish(data=True)
        else:
            await p.publish_data()
    for p in people:
        await p.wait_data_open(timeout=30)
    return people


def from_(sender, **fields):
    def match(received):
        frame = received.frame
        return frame.sender == sender.id and all(getattr(frame, k) == v for k, v in fields.items())

    return match


async def close_all(people):
    for p in people:
        await p.close()


async def metric(server, name):
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as response:
        text = await response.text()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_text_and_binary_reach_everyone_else_on_the_channel_they_were_sent_on(server):
    a, b, c = await data_participants(server, "data-basic", 3)
    try:
        a.send_data("hello", reliable=True, topic="chat")
        a.send_data(b"\x00\x01\xffbinary", reliable=False, topic="cursor")
        a.send_data(b"no topic", reliable=True)
        for receiver in (b, c):
            text = await receiver.wait_data(from_(a, topic="chat"))
            assert text.reliable and text.frame.text and text.frame.as_text() == "hello"
            binary = await receiver.wait_data(from_(a, topic="cursor"))
            assert not binary.reliable and not binary.frame.text
            assert binary.frame.payload == b"\x00\x01\xffbinary"
            plain = await receiver.wait_data(from_(a, topic=None))
            assert plain.frame.payload == b"no topic" and plain.frame.to is None
        await settled(lambda: len(a.data_received))
        assert a.data_received == [], "a sender does not get its own messages back"
        assert await metric(server, "sfu_data_messages_relayed_total") == 3
        assert await metric(server, "sfu_data_deliveries_total") == 6
        # SCTP rides on the DTLS transport: the datagram guard let every datagram of it through.
        room = server.app[ROOMS_KEY].rooms["data-basic"]
        for participant in room.participants.values():
            for peer in (participant.publisher, participant.subscriber):
                assert len(glue.dtls_transports(peer.pc)) == 1
                assert not any(glue.transport_drops(peer.pc).values()), glue.transport_drops(peer.pc)
    finally:
        await close_all([a, b, c])


async def test_a_message_to_one_participant_reaches_only_that_one(server):
    a, b, c = await data_participants(server, "data-private", 3)
    try:
        a.send_data("for b only", topic="dm", to=[b.id])
        a.send_data("for everyone", topic="all")
        got = await b.wait_data(from_(a, topic="dm"))
        assert got.frame.as_text() == "for b only"
        # The reliable channel is ordered: once c has the later message, the earlier one
        # would have come before it.
        await c.wait_data(from_(a, topic="all"))
        assert [r.frame.topic for r in c.data_received] == ["all"]
        # Nobody is told about anybody else's destination list.
        assert got.frame.to is None
    finally:
        await close_all([a, b, c])


async def test_a_message_over_the_size_limit_gets_a_data_error_and_the_next_still_flows():
    server = await start_server(max_data_message_bytes=1024)
    people = []
    try:
        people = a, b = await data_participants(server, "data-big", 2)
        a.send_data(b"x" * 2000, reliable=True, ref="big-one")
        error = await a.wait_type("data-error")
        assert error["code"] == "too-large" and error["channel"] == "reliable" and error["dropped"] == 1
        assert error["ref"] == "big-one" and "2" in error["message"] and "1024" in error["message"]
        a.send_data(b"y" * 900, reliable=True, topic="fits")
        got = await b.wait_data(from_(a, topic="fits"))
        assert got.frame.payload == b"y" * 900
        assert not [r for r in b.data_received if r.frame.payload.startswith(b"xx")]
        assert await metric(server, 'sfu_data_dropped_total{reason="too-large"}') == 1
    finally:
        await close_all(people)
        await server.runner.cleanup()


async def test_bad_frames_and_unknown_destinations_get_clear_errors_and_break_nothing(server):
    a, b = await data_participants(server, "data-bad", 2)
    try:
        a.send_raw_data(b"\x07garbage")  # not version 1
        a.send_raw_data(b"\x01")  # too short
        a.send_raw_data("a text message is no frame")
        a.send_raw_data(b"\x01\x00\x00\x05{oops")  # header not JSON
        a.send_raw_data(b"\x01\x01\x00\x00\xff\xfe")  # text flag, not UTF-8
        a.send_raw_data(b"\x01\x00\xff\xff{}")  # header longer than the frame
        await eventually(
            lambda: sum(m.get("dropped", 0) for m in a.messages if m.get("code") == "bad-message") == 6, timeout=15
        )
        errors = [m for m in a.messages if m["type"] == "data-error"]
        assert all(m["message"] for m in errors)
        a.send_data("to a ghost", topic="ghost", to=["nobody-here", b.id], ref="r1")
        unknown = await a.wait_for(lambda m: m.get("code") == "unknown-participant")
        assert "nobody-here" in unknown["message"] and unknown["ref"] == "r1"
        # The known destination still gets it, and the connection goes on.
        got = await b.wait_data(from_(a, topic="ghost"))
        assert got.frame.as_text() == "to a ghost"
        a.send_data("still here", topic="after")
        await b.wait_data(from_(a, topic="after"))
        assert not [m for m in a.messages if m["type"] in ("error", "socket-closed")]
        assert await metric(server, 'sfu_data_dropped_total{reason="bad-message"}') == 6
    finally:
        await close_all([a, b])


async def test_a_flood_over_the_rate_limit_is_refused_and_disturbs_neither_the_room_nor_the_media():
    # Clients and server share this process's loop: liveness is not what is tested here.
    server = await start_server(data_messages_per_s=20, data_message_burst=20, heartbeat_interval_s=10.0)
    people = []
    try:
        people = flooder, viewer, other = await data_participants(server, "data-flood", 3, media=True)
        await eventually(lambda: viewer.received_from(flooder.id, "video") > 30, timeout=30)
        flood = 3000
        started = asyncio.get_running_loop().time()
        for i in range(flood):
            flooder.send_data(b"f" * 200, reliable=True, topic="flood")  # reliable: all reach the server
            if i % 20 == 0:
                await asyncio.sleep(0)  # the loop (the server's too) must go on
        video_before = viewer.received_from(flooder.id, "video")
        # Other participants' messages still flow during and after the flood.
        other.send_data("other's message", topic="other")
        await viewer.wait_data(from_(other, topic="other"), timeout=15)
        # Every message of the flood reaches the server (reliable channel); every refused one
        # is accounted for in the sender's data-errors.
        stats = server.app[ROOMS_KEY].data_stats
        await eventually(lambda: stats.received >= flood + 1, timeout=60, state=lambda: stats.received)
        dropped = await metric(server, 'sfu_data_dropped_total{reason="rate-limited"}')
        assert dropped == stats.dropped["rate-limited"]

        def reported():
            return sum(m["dropped"] for m in flooder.messages if m.get("code") == "rate-limited")

        await eventually(lambda: dropped > 0 and reported() == dropped, timeout=20, state=lambda: (reported(), dropped))
        elapsed_s = asyncio.get_running_loop().time() - started
        errors = [m for m in flooder.messages if m.get("code") == "rate-limited"]
        assert len(errors) <= 2 + elapsed_s * 1.5, "refusals are summed up, not reported one by one"
        received = await settled(lambda: len([r for r in viewer.data_received if r.frame.topic == "flood"]))
        relayed = await metric(server, "sfu_data_messages_relayed_total") - 1  # "other's message"
        assert received == relayed, "what passed the limit was delivered (reliable, in order)"
        assert relayed <= 20 + 20 * elapsed_s + 1, (relayed, elapsed_s)
        assert relayed + dropped == flood, "every message of the flood was relayed or refused"
        # The flooder's media keeps flowing to the viewer; the flooder still gets the others'.
        await eventually(lambda: viewer.received_from(flooder.id, "video") > video_before + 30, timeout=20)
        other.send_data("after the flood", topic="after")
        await flooder.wait_data(from_(other, topic="after"), timeout=15)
        assert not [m for m in flooder.messages if m["type"] in ("error", "socket-closed")]
        # Media and data share one bundled DTLS transport on both connections.
        for participant in server.app[ROOMS_KEY].rooms["data-flood"].participants.values():
            for peer in (participant.publisher, participant.subscriber):
                assert glue.dtls_transports(peer.pc) == [peer.pc.sctp.transport]
    finally:
        await close_all(people)
        await server.runner.cleanup()


async def test_a_participant_that_joins_later_receives_data_without_any_media(server):
    a = Participant(server.ws_url, "data-late", "a")
    await a.join()
    await a.publish_data()
    b = Participant(server.ws_url, "data-late", "b")
    try:
        await b.join()
        await eventually(lambda: len(b.server_channels) == 2 and a.data_channels[True].readyState == "open", 30)
        await eventually(lambda: all(ch.readyState == "open" for ch in b.server_channels.values()), 30)
        a.send_data(encode(DataFrame(b"raw")), topic="nested")
        got = await b.wait_data(from_(a, topic="nested"))
        assert got.frame.payload == encode(DataFrame(b"raw"))
        assert b.streams == {}
    finally:
        await close_all([a, b])


async def test_channels_over_the_limit_are_closed_and_the_first_ones_still_relay(server):
    a = Participant(server.ws_url, "data-many", "a")
    b = Participant(server.ws_url, "data-many", "b")
    try:
        for p in (a, b):
            await p.join()
        await b.publish_data()
        a.publish_pc = glue.create_peer_connection([])
        a._open_data_channels(a.publish_pc)
        extra = [a.publish_pc.createDataChannel(f"extra-{i}") for i in range(MAX_CLIENT_CHANNELS)]
        await a.renegotiate_publish()
        await a.wait_data_open(30)
        await b.wait_data_open(30)  # b's subscribe connection comes once a's channels open
        # The server keeps the first MAX_CLIENT_CHANNELS (our two and 14 of the extra ones).
        kept, closed = extra[: MAX_CLIENT_CHANNELS - 2], extra[MAX_CLIENT_CHANNELS - 2 :]
        await eventually(lambda: all(c.readyState == "closed" for c in closed), 20)
        assert all(c.readyState == "open" for c in kept)
        publisher = server.app[ROOMS_KEY].rooms["data-many"].participants[a.id].publisher
        assert (len(publisher.data.channels), publisher.data.refused) == (MAX_CLIENT_CHANNELS, 2)
        a.send_data("still relayed", topic="after")
        await b.wait_data(from_(a, topic="after"))
    finally:
        await close_all([a, b])

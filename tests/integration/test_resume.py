"""Sessions that survive a lost socket or a lost peer connection, over a real server, with the
Python participant (sfu/client.py) on both ends: resume, token rules, transport renewal."""

import asyncio
import json
import time

import aiohttp
import pytest

from sfu.app import ROOMS_KEY
from sfu.client import Participant
from sfu.signaling.http import disconnect_participant
from tests.conftest import eventually, start_server

pytestmark = pytest.mark.timeout(120)


def drop_socket(p: Participant) -> None:
    """The TCP connection vanishes: no close frame, no leave."""
    p._ws._conn.transport.abort()


def types(p: Participant, *kinds: str) -> list[dict]:
    return [m for m in p.messages if m.get("type") in kinds]


async def raw_resume(server, room: str, token: str, participant_id: str | None = None) -> dict:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        msg = {"type": "resume", "room": room, "token": token}
        if participant_id is not None:
            msg["id"] = participant_id
        await ws.send_str(json.dumps(msg))
        return json.loads((await ws.receive(timeout=10)).data)


async def publishing_call(server, room: str, reconnect: bool = True):
    pub = Participant(server.ws_url, room, "pub", reconnect=reconnect)
    watcher = Participant(server.ws_url, room, "watcher")
    await pub.join()
    await pub.publish()
    await watcher.join()
    await eventually(lambda: watcher.received_from(pub.id, "video") > 10, timeout=20)
    return pub, watcher


async def test_a_lost_socket_resumes_the_same_participant_and_media_goes_on():
    server = await start_server(heartbeat_interval_s=1.0, resume_grace_s=10.0)
    pub, watcher = await publishing_call(server, "resume")
    try:
        room = server.app[ROOMS_KEY].rooms["resume"]
        producers = {p.id: p for p in room.participants[pub.id].producers()}
        first_token = pub.resume_token
        assert first_token
        old_id = pub.id
        drop_socket(pub)
        await watcher.wait_for(lambda m: m["type"] == "participant-reconnecting" and m["id"] == old_id)
        await eventually(lambda: pub.resumes == 1, timeout=15)
        await watcher.wait_for(lambda m: m["type"] == "participant-resumed" and m["id"] == old_id)
        assert pub.id == old_id
        assert pub.resume_token and pub.resume_token != first_token
        # Same producers (same objects, same track ids), media keeps flowing to the watcher.
        assert {p.id: p for p in room.participants[pub.id].producers()} == producers
        before = watcher.received_from(pub.id, "video")
        await eventually(lambda: watcher.received_from(pub.id, "video") > before + 30, timeout=10)
        assert not types(watcher, "participant-left")
        assert not [m for m in types(watcher, "track-unpublished") if m["participant"] == old_id]
        # The spent token is worth nothing now (a stolen copy replayed after the resume).
        reply = await raw_resume(server, "resume", first_token)
        assert reply["type"] == "error" and reply["code"] == "resume-failed", reply
        assert room.participants[pub.id].session is not None
    finally:
        await pub.close()
        await watcher.close()
        await server.runner.cleanup()


async def test_after_the_grace_the_others_see_it_leave_with_timeout_and_the_token_is_dead():
    server = await start_server(heartbeat_interval_s=1.0, resume_grace_s=1.5)
    pub, watcher = await publishing_call(server, "grace", reconnect=False)
    try:
        token, pid = pub.resume_token, pub.id
        t0 = time.monotonic()
        drop_socket(pub)
        await watcher.wait_for(lambda m: m["type"] == "participant-reconnecting" and m["id"] == pid)
        left = await watcher.wait_for(lambda m: m["type"] == "participant-left" and m["id"] == pid, timeout=10)
        assert left["reason"] == "timeout"
        assert time.monotonic() - t0 >= 1.5
        assert pid not in server.app[ROOMS_KEY].rooms["grace"].participants
        reply = await raw_resume(server, "grace", token)
        assert reply["type"] == "error" and reply["code"] == "resume-failed", reply
    finally:
        await pub.close(leave=False)
        await watcher.close()
        await server.runner.cleanup()


async def test_a_reconnecting_client_rejoins_as_new_after_the_grace_and_publishes_again():
    server = await start_server(heartbeat_interval_s=1.0, resume_grace_s=1.0)
    pub, watcher = await publishing_call(server, "rejoin")
    try:
        old_id = pub.id
        # The socket is lost and the client only comes back after the grace: simulated by
        # letting the grace pass before its first reconnect attempt can resume.
        pub.resume_grace_s = 0.0
        drop_socket(pub)
        await watcher.wait_for(lambda m: m["type"] == "participant-left" and m["id"] == old_id, timeout=10)
        await eventually(lambda: pub.rejoins == 1, timeout=20)
        assert pub.id != old_id
        await watcher.wait_for(lambda m: m["type"] == "participant-joined" and m["participant"]["id"] == pub.id)
        await eventually(lambda: watcher.received_from(pub.id, "video") > 10, timeout=20)
    finally:
        await pub.close()
        await watcher.close()
        await server.runner.cleanup()


async def test_resume_refuses_wrong_room_wrong_participant_and_garbage_and_spends_the_token():
    server = await start_server(heartbeat_interval_s=1.0, resume_grace_s=10.0)
    a = Participant(server.ws_url, "tokens", "a")
    b = Participant(server.ws_url, "tokens", "b")
    try:
        await a.join()
        await b.join()
        for args in (("tokens", "not-a-token"), ("other", a.resume_token), ("tokens", b.resume_token, a.id)):
            reply = await raw_resume(server, *args)
            assert reply["type"] == "error" and reply["code"] == "resume-failed" and reply["request"] == "resume"
        # Each refused try spent the token it used (b's went with the wrong-participant try).
        reply = await raw_resume(server, "tokens", b.resume_token, b.id)
        assert reply["code"] == "resume-failed"
        # A resume is only a socket's first message.
        await a.send({"type": "resume", "room": "tokens", "token": a.resume_token})
        err = await a.wait_for(lambda m: m.get("type") == "error" and m.get("request") == "resume")
        assert err["code"] == "already-joined"
        # Both are still there and the server still answers.
        assert set(server.app[ROOMS_KEY].rooms["tokens"].participants) == {a.id, b.id}
        await a.send({"type": "ping"})
        await a.wait_type("pong")
    finally:
        await a.close()
        await b.close()
        await server.runner.cleanup()


async def test_resume_on_a_new_socket_takes_over_from_an_old_one_still_open():
    server = await start_server(heartbeat_interval_s=1.0, resume_grace_s=10.0)
    a = Participant(server.ws_url, "takeover", "a")
    watcher = Participant(server.ws_url, "takeover", "w")
    try:
        await a.join()
        await watcher.join()
        participant = server.app[ROOMS_KEY].rooms["takeover"].participants[a.id]
        old_session = participant.session
        async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
            await ws.send_str(json.dumps({"type": "resume", "room": "takeover", "token": a.resume_token, "id": a.id}))
            reply = json.loads((await ws.receive(timeout=10)).data)
            assert reply["type"] == "resumed" and reply["id"] == a.id
            closed = await a.wait_type("socket-closed")
            assert closed["code"] == 4002
            assert participant.session is not None and participant.session is not old_session
            await ws.send_str(json.dumps({"type": "chat", "text": "still me"}))
            chat = await watcher.wait_type("chat")
            assert chat["from"] == a.id and chat["name"] == "a"
            assert not types(watcher, "participant-left", "participant-reconnecting")
        # That socket closed normally (code 1000): a deliberate close, the participant leaves.
        left = await watcher.wait_type("participant-left")
        assert left["id"] == a.id and left["reason"] == "disconnected"
    finally:
        await a.close(leave=False)
        await watcher.close()
        await server.runner.cleanup()


async def test_renewed_transports_keep_the_producers_and_the_consumers():
    server = await start_server(heartbeat_interval_s=1.0, resume_grace_s=10.0)
    pub, watcher = await publishing_call(server, "renew")
    try:
        room = server.app[ROOMS_KEY].rooms["renew"]
        publisher = room.participants[pub.id].publisher
        producer = next(p for p in room.participants[pub.id].producers() if p.kind == "video")
        consumer = next(c for c in producer.consumers if c.subscriber_id == watcher.id)
        old_pc = publisher.pc
        # The publisher renews its publish connection (a client that saw it fail).
        await pub.restart_publish()
        assert publisher.pc is not old_pc and publisher.renewals == 1
        before = watcher.received_from(pub.id, "video")
        await eventually(lambda: watcher.received_from(pub.id, "video") > before + 30, timeout=15)
        assert next(p for p in room.participants[pub.id].producers() if p.kind == "video") is producer
        assert producer.consumers == [consumer]
        # The watcher asks for a new subscribe connection: an offer with restart, same consumer.
        watcher_peer = room.participants[watcher.id].subscriber
        old_sub = watcher_peer.pc
        await watcher.send({"type": "renew", "pc": "subscribe"})
        offer = await watcher.wait_for(lambda m: m.get("type") == "offer" and m.get("restart"))
        assert {c["track"] for c in offer["consumers"]} == {p.id for p in room.participants[pub.id].producers()}
        assert watcher_peer.pc is not old_sub
        await eventually(lambda: watcher.renewals == 1)
        before = watcher.received_from(pub.id, "video")
        await eventually(lambda: watcher.received_from(pub.id, "video") > before + 30, timeout=15)
        assert producer.consumers == [consumer] and not consumer.closed
        assert not types(watcher, "participant-left", "track-unpublished")
    finally:
        await pub.close()
        await watcher.close()
        await server.runner.cleanup()


async def test_a_kicked_client_does_not_come_back():
    server = await start_server(heartbeat_interval_s=1.0, resume_grace_s=10.0)
    bot = Participant(server.ws_url, "kick", "bot", reconnect=True)
    watcher = Participant(server.ws_url, "kick", "watcher")
    try:
        await bot.join()
        await watcher.join()
        room = server.app[ROOMS_KEY].rooms["kick"]
        await disconnect_participant(room.participants[bot.id], "kicked", "kicked", "an administrator removed you")
        left = await watcher.wait_type("participant-left")
        assert left["id"] == bot.id and left["reason"] == "kicked"
        closed = await bot.wait_type("socket-closed")
        assert closed["code"] == 1008
        await asyncio.sleep(3)  # several reconnect attempts' worth
        assert bot.resumes == 0 and bot.rejoins == 0
        assert set(room.participants) == {watcher.id}
        assert not types(watcher, "participant-joined")
    finally:
        await bot.close()
        await watcher.close()
        await server.runner.cleanup()

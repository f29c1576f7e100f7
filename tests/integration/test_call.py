"""Real aiortc clients through the real server: media flows, rooms are isolated, state stays right."""

import asyncio
import json
import os
import signal
import sys
import time

import aiohttp
import pytest

from sfu.app import ROOMS_KEY
from sfu.client import Participant
from tests.conftest import eventually, settled, start_server


async def joined_publishing(server, room, name, **kw):
    p = Participant(server.ws_url, room, name)
    await p.join()
    await p.publish(**kw)
    return p


async def test_three_clients_receive_each_other_and_another_room_receives_nothing(server):
    clients = [await joined_publishing(server, "call", f"c{i}") for i in range(3)]
    loner = await joined_publishing(server, "elsewhere", "loner")
    try:

        def everyone_has_media():
            for me in clients:
                for other in clients:
                    if other is me:
                        continue
                    if me.received_from(other.id, "audio") < 50 or me.received_from(other.id, "video") < 50:
                        return False
            return True

        await eventually(everyone_has_media, timeout=30)
        for me in clients:
            video = [s for s in me.streams.values() if s.kind == "video"]
            assert len(video) == 2
            assert all(s.keyframes >= 1 for s in video), "every forwarded video starts with a keyframe"
            assert {s.participant for s in me.streams.values()} == {c.id for c in clients} - {me.id}
        await asyncio.sleep(1)
        assert loner.streams == {}
        assert loner.subscribe_pc is None
        assert not [m for m in loner.messages if m["type"] in ("participant-joined", "track-published")]
    finally:
        for c in clients + [loner]:
            await c.close()


async def test_forwarded_sequence_numbers_have_no_gaps_on_loopback(server):
    a = await joined_publishing(server, "seq", "a")
    b = await joined_publishing(server, "seq", "b", video=True, audio=True)
    try:
        await eventually(lambda: b.received_from(a.id, "video") > 200, timeout=20)
        for s in b.streams.values():
            if s.participant == a.id:
                seqs = sorted(s.seqs)
                # no wrap in this short window on a random start in the lower half
                span = seqs[-1] - seqs[0] + 1
                assert len(seqs) >= 0.99 * span, (s.kind, len(seqs), span)
    finally:
        await a.close()
        await b.close()


async def test_participants_are_told_about_joins_leaves_and_tracks(server):
    a = await joined_publishing(server, "events", "alice")
    b = Participant(server.ws_url, "events", "bob")
    joined = await b.join()
    try:
        assert joined["participants"][0]["name"] == "alice"
        assert {t["kind"] for t in joined["participants"][0]["tracks"]} == {"audio", "video"}
        await a.wait_for(lambda m: m["type"] == "participant-joined" and m["participant"]["id"] == b.id)
        await b.publish(audio=True, video=False)
        published = await a.wait_for(lambda m: m["type"] == "track-published" and m["participant"] == b.id)
        assert published["track"]["kind"] == "audio" and published["track"]["source"] == "microphone"
        await b.close()
        left = await a.wait_for(lambda m: m["type"] == "participant-left")
        assert left == {"type": "participant-left", "id": b.id, "reason": "left"}
    finally:
        await a.close()
        await b.close()


async def test_leave_and_rejoin_reuses_subscriber_m_sections(server):
    watcher = await joined_publishing(server, "churn", "watcher")
    try:
        for round_ in range(3):
            guest = await joined_publishing(server, "churn", f"guest{round_}")
            await eventually(lambda g=guest: watcher.received_from(g.id, "video") > 20, timeout=15)
            await guest.close()
            await watcher.wait_for(lambda m, g=guest: m["type"] == "participant-left" and m["id"] == g.id)
        sdp = watcher.subscribe_pc.remoteDescription.sdp
        assert sdp.count("m=video") == 1 and sdp.count("m=audio") == 1, "m-sections are reused, not piled up"
        rooms = server.app[ROOMS_KEY].rooms
        assert list(rooms["churn"].participants) == [watcher.id]
    finally:
        await watcher.close()


async def test_mute_is_broadcast_and_stops_forwarding(server):
    a = await joined_publishing(server, "mute", "a")
    b = await joined_publishing(server, "mute", "b")
    try:
        await eventually(lambda: b.received_from(a.id, "audio") > 20, timeout=15)
        audio_track = next(t for t in a.publisher_track_ids() if t.endswith("-0"))
        await a.send({"type": "mute", "track": audio_track, "muted": True})
        msg = await b.wait_for(lambda m: m["type"] == "mute")
        assert msg == {"type": "mute", "participant": a.id, "track": audio_track, "muted": True}
        # What was already on its way arrives; then nothing more.
        before = await settled(lambda: b.received_from(a.id, "audio"))
        await asyncio.sleep(1.0)
        assert b.received_from(a.id, "audio") == before
        await a.send({"type": "mute", "track": audio_track, "muted": False})
        await eventually(lambda: b.received_from(a.id, "audio") > before + 20, timeout=15)
        await a.send({"type": "mute", "track": "someone-else-0", "muted": True})
        err = await a.wait_type("error")
        assert err["code"] == "unknown-track"
    finally:
        await a.close()
        await b.close()


async def test_chat_is_relayed_to_the_room_only(server):
    a, b = Participant(server.ws_url, "chat", "a"), Participant(server.ws_url, "chat", "b")
    other = Participant(server.ws_url, "other", "c")
    for p in (a, b, other):
        await p.join()
    try:
        await a.send({"type": "chat", "text": "hello"})
        got = await b.wait_type("chat")
        assert (got["from"], got["name"], got["text"]) == (a.id, "a", "hello")
        await a.wait_type("chat")  # the sender sees its own message too
        await asyncio.sleep(0.3)
        assert not [m for m in other.messages if m["type"] == "chat"]
    finally:
        for p in (a, b, other):
            await p.close()


async def test_room_capacity_answers_room_full():
    srv = await start_server(room_capacity=2)
    clients = [Participant(srv.ws_url, "small", f"c{i}") for i in range(3)]
    try:
        await clients[0].join()
        await clients[1].join()
        await clients[2].connect()
        await clients[2].send({"type": "join", "room": "small", "name": "c2"})
        err = await clients[2].wait_type("error")
        assert err["code"] == "room-full" and err["request"] == "join"
        # another room still works from the same socket
        await clients[2].send({"type": "join", "room": "big", "name": "c2"})
        assert (await clients[2].wait_type("joined"))["room"] == "big"
    finally:
        for c in clients:
            await c.close()
        await srv.runner.cleanup()


async def test_rooms_are_removed_when_empty(server):
    async with aiohttp.ClientSession() as http:
        a = Participant(server.ws_url, "ephemeral", "a")
        await a.join()
        health = await (await http.get(server.url + "/healthz")).json()
        assert health == {"status": "ok", "rooms": 1, "participants": 1}
        await a.close()
        await eventually(lambda: not server.app[ROOMS_KEY].rooms)
        health = await (await http.get(server.url + "/healthz")).json()
        assert health["rooms"] == 0


@pytest.mark.timeout(90)
async def test_vanished_client_is_reconnecting_within_heartbeat_timeout_and_leaves_after_the_default_grace(server):
    # The default resume_grace_s (15 s): the others see the participant reconnecting once its
    # pong is late, its tracks stay for the grace, and only then it leaves with reason timeout.
    assert server.config.resume_grace_s == 15.0
    watcher = await joined_publishing(server, "liveness", "watcher")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sfu.client",
        "--url",
        server.ws_url,
        "--room",
        "liveness",
        "--name",
        "ghost",
        "--publish",
        "--ice-host",
        "127.0.0.1",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        ghost_id = first["id"]
        await asyncio.wait_for(proc.stdout.readline(), 30)  # published
        await eventually(lambda: watcher.received_from(ghost_id, "video") > 10, timeout=15)
        # The network goes away: the process freezes without closing anything.
        os.kill(proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        await watcher.wait_for(lambda m: m["type"] == "participant-reconnecting" and m["id"] == ghost_id, timeout=10)
        lost_after = time.monotonic() - t0
        assert lost_after < 10
        assert not [m for m in watcher.messages if m["type"] in ("participant-left", "track-unpublished")]
        ghost = server.app[ROOMS_KEY].rooms["liveness"].participants[ghost_id]
        assert ghost.reconnecting and ghost.producers()
        left = await watcher.wait_for(lambda m: m["type"] == "participant-left" and m["id"] == ghost_id, timeout=30)
        elapsed = time.monotonic() - t0
        assert left["reason"] == "timeout"
        assert lost_after + 15 - 1 <= elapsed < lost_after + 15 + 5, (lost_after, elapsed)
        # the watcher's subscribe connection drops the ghost's m-sections
        await watcher.wait_for(lambda m: m["type"] == "offer" and m["consumers"] == [], timeout=5)
    finally:
        proc.kill()
        await proc.wait()
        await watcher.close()


async def test_unpublishing_a_track_renegotiates_everyone(server):
    a = await joined_publishing(server, "unpublish", "a")
    b = await joined_publishing(server, "unpublish", "b")
    try:
        await eventually(lambda: b.received_from(a.id, "video") > 20, timeout=15)
        video_track = next(t for t in a.publisher_track_ids() if t.endswith("-1"))
        await a.unpublish("video")
        gone = await b.wait_for(lambda m: m["type"] == "track-unpublished")
        assert gone == {"type": "track-unpublished", "participant": a.id, "track": video_track}
        offer = await b.wait_for(
            lambda m: m["type"] == "offer" and all(c["track"] != video_track for c in m["consumers"])
        )
        assert [c["kind"] for c in offer["consumers"] if c["participant"] == a.id] == ["audio"]
        participant = server.app[ROOMS_KEY].rooms["unpublish"].participants[a.id]
        assert [p.kind for p in participant.producers()] == ["audio"]
        # audio keeps flowing through the renegotiation
        before = b.received_from(a.id, "audio")
        await eventually(lambda: b.received_from(a.id, "audio") > before + 30, timeout=15)
    finally:
        await a.close()
        await b.close()

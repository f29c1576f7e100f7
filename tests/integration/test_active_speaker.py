"""Active speaker from real RFC 6464 audio levels, and pinning, through the real server."""

import asyncio
import time

import aiohttp

from sfu import auth
from sfu.app import ROOMS_KEY
from sfu.client import Participant
from tests.conftest import eventually, start_server

SECRET = "speaker-secret-" + "s" * 40


def speaker_messages(p: Participant) -> list[object]:
    return [m["participant"] for m in p.messages if m.get("type") == "active-speaker"]


async def test_the_loud_participant_is_announced_and_the_announcement_follows_who_talks():
    srv = await start_server(heartbeat_interval_s=1.0, auth_secret=SECRET)
    tok = lambda who: auth.mint(SECRET, who, "talk", {"publish", "subscribe"}, 600)  # noqa: E731
    a, b, c = (Participant(srv.ws_url, "talk", n, token=tok(n)) for n in ("a", "b", "c"))
    try:
        for p in (a, b, c):
            await p.join()
        await a.publish_rtp(audio=True, video=False)
        await b.publish_rtp(audio=True, video=False)
        room = srv.app[ROOMS_KEY].rooms["talk"]
        # Both publish audio whose level says silence: nobody is announced.
        await eventually(lambda: c.received_from(a.id, "audio") > 50 and c.received_from(b.id, "audio") > 50, 15)
        assert speaker_messages(c) == [] and room.active_speaker is None

        t0 = time.monotonic()
        a.set_audio_level(-20)
        for p in (a, b, c):
            await p.wait_for(lambda m: m.get("type") == "active-speaker" and m["participant"] == a.id, 10)
        first_s = time.monotonic() - t0

        t1 = time.monotonic()
        a.set_audio_level(-127)
        b.set_audio_level(-25)
        for p in (a, b, c):
            await p.wait_for(lambda m: m.get("type") == "active-speaker" and m["participant"] == b.id, 10)
        switch_s = time.monotonic() - t1
        print(f"first speaker after {first_s:.2f}s, switch after {switch_s:.2f}s")
        assert speaker_messages(c) == [a.id, b.id], "one message per change, no flapping"

        # The subscriber's allocator knows, and the admin room view shows it.
        assert room.participants[c.id].subscriber.active_speaker == b.id
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": "Bearer " + auth.mint(SECRET, "ops", "talk", {"admin"}, 600)}
            async with http.get(srv.url + "/admin/rooms/talk", headers=headers) as resp:
                view = await resp.json()
        assert view["active_speaker"] == b.id
        assert view["speaker_scores"][b.id] > view["speaker_scores"][a.id]

        # Muting the microphone silences the level: b stays the last speaker, a cannot take over
        # while muted even if its packets claim to be loud.
        await b.send({"type": "mute", "track": b.publisher_track_ids()[0], "muted": True})
        await a.send({"type": "mute", "track": a.publisher_track_ids()[0], "muted": True})
        a.set_audio_level(-10)
        await eventually(lambda: room.speakers.describe().get(b.id, 1) == 0, 10)
        assert room.active_speaker == b.id and speaker_messages(c) == [a.id, b.id]

        # A newcomer learns who speaks right after joining.
        d = Participant(srv.ws_url, "talk", "d", token=tok("d"))
        await d.join()
        assert (await d.wait_type("active-speaker", 10))["participant"] == b.id
        await d.close()
    finally:
        for p in (a, b, c):
            await p.close()
        await srv.runner.cleanup()


async def test_a_pinned_track_is_marked_and_served_first(server):
    pub, sub = Participant(server.ws_url, "pin", "pub"), Participant(server.ws_url, "pin", "sub")
    try:
        await pub.join()
        await sub.join()
        await pub.publish_rtp(audio=True, video=True)
        video = next(t for t in pub.publisher_track_ids() if t.endswith("-1"))
        await eventually(lambda: sub.received_from(pub.id, "video") > 20, 15)
        subscriber = server.app[ROOMS_KEY].rooms["pin"].participants[sub.id].subscriber

        def priority() -> str:
            return next(c for c in subscriber.describe()["consumers"] if c["track"] == video)["priority"]

        assert priority() == "normal"
        await sub.send({"type": "subscription", "track": video, "max_height": 720, "paused": False, "pinned": True})
        await eventually(lambda: priority() == "pinned", 10)
        await sub.send({"type": "subscription", "track": video, "max_height": 720, "pinned": "yes"})
        error = await sub.wait_for(lambda m: m.get("type") == "error", 5)
        assert error["code"] == "bad-message" and "pinned" in error["message"]
        assert priority() == "pinned", "a bad message changes nothing"
        await sub.send({"type": "subscription", "track": video, "max_height": 720})
        await eventually(lambda: priority() == "normal", 10)
    finally:
        await pub.close()
        await sub.close()


async def test_under_a_tight_downlink_the_speaker_and_then_the_pinned_video_keep_the_top_layer(server):
    """Two simulcast publishers, one subscriber whose REMB fits one top layer and one low one."""
    p1, p2, sub = (Participant(server.ws_url, "prio", n) for n in ("p1", "p2", "sub"))
    try:
        for p in (p1, p2, sub):
            await p.join()
        for p in (p1, p2):
            await p.publish_rtp(audio=True, video=True, simulcast=True, trailer=False)
        room = server.app[ROOMS_KEY].rooms["prio"]
        subscriber = room.participants[sub.id].subscriber
        await eventually(lambda: len([c for c in subscriber.consumers() if c.producer.kind == "video"]) == 2, 15)
        videos = {c.producer.participant_id: c for c in subscriber.consumers() if c.producer.kind == "video"}
        c1, c2 = videos[p1.id], videos[p2.id]
        await eventually(lambda: all(c.producer.layers[2].bitrate_bps > 0 for c in (c1, c2)), 15)
        budgets: list[tuple[int, int, int, int]] = []

        def budget_now() -> int:
            """A REMB that fits audio, one top layer and one lowest layer even with the
            allocator's 15 % headroom for stepping up, but not two top layers: from the layer
            bitrates the server measures now (they move with the load on the machine, so a
            budget computed once, early, may no longer separate the two cases later)."""
            top = max(c.producer.layers[2].bitrate_bps for c in (c1, c2))
            low = max(c.producer.layers[0].bitrate_bps for c in (c1, c2))
            audio = sum(c.producer.layers[0].bitrate_bps for c in subscriber.consumers() if c.producer.kind == "audio")
            enough, too_little = (top + low + audio) / 0.85, 2 * top + audio
            assert enough < too_little, (top, low, audio)
            budget = int((enough + too_little) / 2)
            budgets.append((top, low, audio, budget))
            return budget

        async def remb_until(predicate, timeout):
            loop_end = time.monotonic() + timeout
            while not predicate():
                assert time.monotonic() < loop_end, ([c.describe() for c in (c1, c2)], budgets[-3:])
                sub.send_remb(budget_now())
                await asyncio.sleep(0.2)

        # p1 talks: its video is the one raised. Then p2 takes over, and so does its video.
        p1.set_audio_level(-15)
        await remb_until(lambda: subscriber.active_speaker == p1.id, 10)
        await remb_until(
            lambda: c1.bandwidth_layer == 2 and c2.bandwidth_layer is not None and c2.bandwidth_layer < 2, 20
        )
        p1.set_audio_level(-127)
        p2.set_audio_level(-15)
        await remb_until(lambda: subscriber.active_speaker == p2.id, 10)
        await remb_until(
            lambda: c2.bandwidth_layer == 2 and c1.bandwidth_layer is not None and c1.bandwidth_layer < 2, 20
        )
        assert (
            next(c for c in subscriber.describe()["consumers"] if c["track"] == c2.producer.id)["priority"]
            == "active-speaker"
        )
        await remb_until(lambda: c2.current == 2, 10)

        # The subscriber pins p1: now p1's video gets the top layer, the speaker's steps down.
        t0 = time.monotonic()
        await sub.send({"type": "subscription", "track": c1.producer.id, "max_height": 720, "pinned": True})
        await remb_until(
            lambda: c1.bandwidth_layer == 2 and c2.bandwidth_layer is not None and c2.bandwidth_layer < 2, 20
        )
        print(f"pinned video on the top layer {time.monotonic() - t0:.2f}s after the pin")
        await remb_until(lambda: c1.current == 2 and c2.current < 2, 10)
        assert (
            next(c for c in subscriber.describe()["consumers"] if c["track"] == c1.producer.id)["priority"] == "pinned"
        )
    finally:
        for p in (p1, p2, sub):
            await p.close()

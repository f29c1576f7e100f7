"""Active speaker from real RFC 6464 audio levels, and pinning, through the real server."""

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
            await p.wait_for(lambda m: m.get("type") == "active-speaker" and m["participant"] == a.id, 5)
        first_s = time.monotonic() - t0

        t1 = time.monotonic()
        a.set_audio_level(-127)
        b.set_audio_level(-25)
        for p in (a, b, c):
            await p.wait_for(lambda m: m.get("type") == "active-speaker" and m["participant"] == b.id, 6)
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
        await eventually(lambda: room.speakers.describe().get(b.id, 1) == 0, 5)
        assert room.active_speaker == b.id and speaker_messages(c) == [a.id, b.id]

        # A newcomer learns who speaks right after joining.
        d = Participant(srv.ws_url, "talk", "d", token=tok("d"))
        await d.join()
        assert (await d.wait_type("active-speaker", 5))["participant"] == b.id
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
        await eventually(lambda: priority() == "pinned", 5)
        await sub.send({"type": "subscription", "track": video, "max_height": 720, "pinned": "yes"})
        error = await sub.wait_for(lambda m: m.get("type") == "error", 5)
        assert error["code"] == "bad-message" and "pinned" in error["message"]
        assert priority() == "pinned", "a bad message changes nothing"
        await sub.send({"type": "subscription", "track": video, "max_height": 720})
        await eventually(lambda: priority() == "normal", 5)
    finally:
        await pub.close()
        await sub.close()

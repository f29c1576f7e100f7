"""WHEP playback in Chromium with a published WHEP client (npm ``whip-whep``, vendored in
tests/e2e/whip_whep/): the player decodes the room's video and audio, is no participant of the
room, can be pinned to one participant, and ends its session with DELETE. And the same
package's WHIP client publishing a browser's camera as three simulcast encodings."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.async_api import Browser, Page, Route

from sfu.app import MEDIA_SESSIONS_KEY, ROOMS_KEY
from tests.conftest import RunningServer, eventually
from tests.e2e.netns import HOST_IP
from tests.e2e.test_browser_call import open_participant
from tests.e2e.test_whip_ingest import WHIP_DIR, assert_decodes, start_in_namespace, stop

pytestmark = pytest.mark.timeout(120)

WHEP_DIR = Path(__file__).resolve().parent / "whip_whep"


async def open_player(
    browser: Browser, server: RunningServer, path: str, token: str | None = None, html: str = "player.html"
) -> Page:
    """The player (or publisher) page, served from the server's origin (as a site would host it)."""
    page = await (await browser.new_context()).new_page()
    page.on("console", lambda m: print(f"[{html}] {m.type}: {m.text}") if m.type == "error" else None)

    async def serve(route: Route) -> None:
        name = route.request.url.split("/e2e-whep/", 1)[1].split("?", 1)[0]
        kind = "text/html" if name.endswith(".html") else "text/javascript"
        await route.fulfill(body=(WHEP_DIR / name).read_bytes(), content_type=kind)

    await page.route(f"{server.url}/e2e-whep/*", serve)
    query = f"url={quote(server.url + path, safe='')}" + (f"&token={quote(token)}" if token else "")
    await page.goto(f"{server.url}/e2e-whep/{html}?{query}")
    return page


async def played(page: Page) -> dict:
    return await page.evaluate("window.playerStats()")


async def wait_playing(page: Page, more_than: dict | None = None) -> dict:
    """Until the player has decoded video frames and audio samples (more than ``more_than``)."""
    base = more_than or {"frames": 30, "samples": 0}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        stats = await played(page)
        if stats["frames"] > base["frames"] + 30 * (more_than is not None) and stats["samples"] > base["samples"]:
            return stats
        error = await page.evaluate("window.player && window.player.error")
        assert error is None, error
        assert loop.time() < deadline, f"player: {stats}"
        await asyncio.sleep(0.2)


async def test_whep_player_decodes_the_room_and_is_no_participant(browser: Browser, e2e_server):
    alice = await open_participant(browser, e2e_server.url, "show", "alice")
    alice_id = await alice.evaluate("window.sfuSession.id")
    room = e2e_server.app[ROOMS_KEY].rooms["show"]
    await eventually(lambda: len(room.participants[alice_id].producers()) == 2, 15)

    player = await open_player(browser, e2e_server, "/whep/show")
    stats = await wait_playing(player)
    print(f"WHEP player decoded {stats}")
    assert stats["height"] > 0
    (viewer,) = room.viewers.values()
    assert viewer.subscriber is not None and viewer.subscriber.playing("video").participant_id == alice_id
    # Hidden: the room's participants and alice's page know nothing of it.
    assert list(room.participants) == [alice_id]
    assert await alice.evaluate("window.sfuSession.participants.size") == 0
    # It keeps playing.
    await wait_playing(player, stats)

    # The client's stop(): the connection closes and the session is DELETEd.
    await player.evaluate("window.player.client.stop()")
    sessions = e2e_server.app[MEDIA_SESSIONS_KEY]
    await eventually(lambda: not room.viewers and not len(sessions), 10)
    assert viewer.closed
    await player.context.close()
    await alice.context.close()


async def test_whep_player_pinned_to_one_participant_plays_only_them(browser: Browser, e2e_server):
    alice = await open_participant(browser, e2e_server.url, "pinned", "alice")
    bob = await open_participant(browser, e2e_server.url, "pinned", "bob")
    bob_id = await bob.evaluate("window.sfuSession.id")
    room = e2e_server.app[ROOMS_KEY].rooms["pinned"]
    await eventually(lambda: all(len(p.producers()) == 2 for p in room.participants.values()), 15)

    player = await open_player(browser, e2e_server, "/whep/pinned/bob")  # by name
    await wait_playing(player)
    (viewer,) = room.viewers.values()
    assert viewer.pinned_source == bob_id
    assert {viewer.subscriber.playing(k).participant_id for k in ("audio", "video")} == {bob_id}

    # Bob leaves: the pinned player plays nothing, and is still in the room.
    await bob.context.close()
    await eventually(lambda: viewer.subscriber.playing("video") is None, 15)
    assert viewer in room.viewers.values()
    await player.context.close()
    await alice.context.close()


async def test_a_browser_whip_publisher_with_simulcast_reaches_participants_and_whep_players(browser, e2e_server):
    room_name = "simulcast-whip"
    viewer = await open_participant(browser, e2e_server.url, room_name, "viewer")
    publisher = await open_player(browser, e2e_server, f"/whip/{room_name}?name=browser-whip", html="publisher.html")
    room = e2e_server.app[ROOMS_KEY].rooms[room_name]

    def whip_participant():
        return next(
            (p for p in room.participants.values() if p.name == "browser-whip" and len(p.producers()) == 2), None
        )

    participant = await eventually(whip_participant, 20)
    video = next(p for p in participant.producers() if p.kind == "video")
    assert [layer.rid for layer in video.layers] == ["q", "h", "f"]  # accepted as from the browser client
    await eventually(lambda: sum(layer.stats.packets > 0 for layer in video.layers) >= 2, 20)
    assert await publisher.evaluate("window.publisher.error") is None

    # A participant's page decodes it ...
    await viewer.wait_for_function(
        f"window.sfuSession.participants.get('{participant.id}')?.tracks.size === 2", timeout=15000
    )
    media = await assert_decodes(viewer, participant.id)
    print(f"participant decoded the browser WHIP publisher: {media}")
    # ... and so does a WHEP player.
    player = await open_player(browser, e2e_server, f"/whep/{room_name}")
    print(f"WHEP player decoded {await wait_playing(player)}")
    for page in (player, publisher, viewer):
        await page.context.close()


async def test_a_gstreamer_webrtcbin_player_decodes_the_room_over_whep(browser: Browser, lab):
    """GStreamer's WebRTC stack as the WHEP player (tests/e2e/whip/gst_whep_play.py), from a
    network namespace (libnice gathers no loopback candidate)."""
    server, _ns = lab
    alice = await open_participant(browser, server.url, "gst-whep", "alice")
    alice_id = await alice.evaluate("window.sfuSession.id")
    room = server.app[ROOMS_KEY].rooms["gst-whep"]
    await eventually(lambda: len(room.participants[alice_id].producers()) == 2, 15)
    url = f"http://{HOST_IP}:{server.config.port}/whep/gst-whep"
    player = await start_in_namespace(
        "/usr/bin/python3", str(WHIP_DIR / "gst_whep_play.py"), url, env={"PYTHONUNBUFFERED": "1"}
    )
    lines: list[str] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 40
        while True:
            assert loop.time() < deadline, lines[-5:]
            line = (await asyncio.wait_for(player.stdout.readline(), 10)).decode().strip()
            assert line or player.returncode is None, lines
            lines.append(line)
            if line.startswith("decoded:"):
                _, _, video, _, audio = line.split()
                if int(video) > 30 and int(audio) > 10:
                    break
        print(f"GStreamer WHEP player: {line}")
        (viewer,) = room.viewers.values()
        assert viewer.subscriber.playing("video").participant_id == alice_id
    finally:
        output = await stop(player)
    assert "deleted: 200" in output, output
    await eventually(lambda: not room.viewers, 10)
    await alice.context.close()

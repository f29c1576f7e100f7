"""Active speaker and pinning in the browser client: one Chromium and one Python participant."""

import asyncio
import time

from playwright.async_api import Browser

from sfu.app import ROOMS_KEY
from sfu.client import Participant
from sfu.speaker import AUDIO_LEVEL_URI
from tests.conftest import eventually


async def test_browser_highlights_the_active_speaker_and_pins_a_tile(browser: Browser, e2e_server):
    base = e2e_server.url
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    page = await context.new_page()
    page.on("console", lambda m: print(f"[chromium] {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    await page.goto(f"{base}/?room=spk&name=chrome&autojoin=1")
    await page.wait_for_function("document.body.dataset.state === 'joined'", timeout=15000)
    chrome_id = await page.evaluate("window.sfuSession.id")
    bot = Participant(e2e_server.ws_url, "spk", "bot")
    try:
        await bot.join()
        await bot.publish_rtp(audio=True, video=True, trailer=False)
        room = e2e_server.app[ROOMS_KEY].rooms["spk"]
        chrome = room.participants[chrome_id]
        await eventually(lambda: chrome.publisher is not None and chrome.publisher.audio_levels, timeout=30)

        # Chromium offers the RFC 6464 extension; what does its fake microphone (a beep) say?
        publisher = chrome.publisher
        assert AUDIO_LEVEL_URI in publisher._ext_ids
        [meter] = publisher.audio_levels.values()
        levels, scores = [], []
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            levels.append(meter.level_dbov)
            scores.append(meter.score)
            await asyncio.sleep(0.3)
        print(f"chromium fake microphone: interval levels {levels} dBov, scores {[round(x, 2) for x in scores]}")
        assert max(levels) > -127, "the browser's audio levels reach the server"
        # Its beep is loud and steady enough to count as speech: the browser is the speaker and
        # highlights its own tile.
        await page.wait_for_selector("#local-tile[data-speaking]", timeout=15000)
        assert room.active_speaker == chrome_id

        # The bot talks: the browser is told and highlights its tile.
        tile = f'[data-participant="{bot.id}"]'
        t0 = time.monotonic()
        bot.set_audio_level(-15)
        await page.wait_for_selector(f"{tile}[data-speaking]", timeout=15000)
        print(f"bot highlighted as active speaker {time.monotonic() - t0:.2f}s after it started talking")
        assert await page.evaluate("window.sfuSession.activeSpeaker") == bot.id
        assert await page.locator(".tile[data-speaking]").count() == 1

        # Pin the bot's tile: it is shown first and large, and the server learns pinned with a
        # bigger cap.
        video_track = f"{bot.id}-1"
        subscriber = chrome.subscriber
        await page.wait_for_function(
            f"[...window.sfuSession.consumers.values()].some((c) => c.track === '{video_track}')"
        )
        small = await page.locator(tile).bounding_box()
        await page.click(f"{tile} .pin")
        await page.wait_for_selector(f"{tile}[data-pinned]", timeout=10000)
        await eventually(lambda: video_track in subscriber.pinned, timeout=10)
        consumer = next(c for c in subscriber.consumers() if c.producer.id == video_track)
        assert consumer.max_height is not None and consumer.max_height >= 720
        sent = await page.evaluate(f"window.sfuSession._subscriptions.get('{video_track}')")
        assert sent["pinned"] is True
        big = await page.locator(tile).bounding_box()
        assert big["width"] > small["width"] * 1.3, (small, big)
        first = await page.evaluate(
            "[...document.querySelectorAll('#grid .tile')].sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top || a.getBoundingClientRect().left - b.getBoundingClientRect().left)[0].dataset.participant"
        )
        assert first == bot.id, "the pinned tile comes first"
        assert next(c for c in subscriber.describe()["consumers"] if c["track"] == video_track)["priority"] == "pinned"

        # Unpin.
        await page.click(f"{tile} .pin")
        await eventually(lambda: video_track not in subscriber.pinned, timeout=10)
        assert await page.locator(f"{tile}[data-pinned]").count() == 0
    finally:
        await bot.close()
        await context.close()

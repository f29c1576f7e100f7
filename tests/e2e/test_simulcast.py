"""Simulcast with real browsers: one Chromium publishes three layers, two viewers get what fits."""

import asyncio
import time

from playwright.async_api import Browser, Page

from sfu.app import ROOMS_KEY
from sfu.forwarding import KEYFRAME_REQUEST_INTERVAL_S
from tests.conftest import eventually, settled

# A switch is made on a keyframe the server asks for (about 0.5 s on an idle machine); the
# bound leaves room for a busy one.
SWITCH_BOUND_S = 8.0

VIDEO_STATS_JS = """async (track) => {
  const s = window.sfuSession;
  if (!s || !s.subscribePc) return null;
  const c = [...s.consumers.values()].find((c) => c.track === track);
  if (!c) return null;
  let out = null;
  (await s.subscribePc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.mid === c.mid)
      out = {height: r.frameHeight || 0, frames: r.framesDecoded || 0, bytes: r.bytesReceived || 0,
             plis: r.pliCount || 0, keyframes: r.keyFramesDecoded || 0};
  });
  return out;
}"""


async def open_page(browser: Browser, url: str, viewport: dict[str, int]) -> Page:
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    await page.goto(url)
    await page.wait_for_function("document.body.dataset.state === 'joined'", timeout=15000)
    return page


async def video(page: Page, track: str) -> dict:
    return await page.evaluate(VIDEO_STATS_JS, track) or {"height": 0, "frames": 0, "bytes": 0, "plis": 0}


async def wait_height(page: Page, track: str, predicate, timeout: float) -> tuple[dict, float]:
    t0 = time.monotonic()
    while True:
        stats = await video(page, track)
        if predicate(stats["height"]):
            return stats, time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"frameHeight stayed {stats['height']}"
        await asyncio.sleep(0.1)


async def test_viewers_get_the_layer_that_fits_their_tile_and_nothing_when_hidden(browser: Browser, e2e_server):
    base = e2e_server.url
    publisher = await open_page(browser, f"{base}/?room=sc&name=pub&autojoin=1", {"width": 640, "height": 480})
    pub_id = await publisher.evaluate("window.sfuSession.id")
    rooms = e2e_server.app[ROOMS_KEY]
    producer = await eventually(
        lambda: next((p for p in rooms.rooms["sc"].participants[pub_id].producers() if p.kind == "video"), None)
    )
    assert [layer.rid for layer in producer.layers] == ["q", "h", "f"]

    # A watches in a small window, B in a large one; both only receive.
    # (each viewer shows two tiles: the publisher and the other viewer)
    small, large = {"width": 400, "height": 300}, {"width": 1920, "height": 1080}
    a = await open_page(browser, f"{base}/?room=sc&name=a&autojoin=1&publish=0", small)
    b = await open_page(browser, f"{base}/?room=sc&name=b&autojoin=1&publish=0", large)

    # Chrome ramps its send rate up before it keeps the upper layers on.
    t0 = time.monotonic()
    await eventually(lambda: all(layer.height > 0 for layer in producer.layers), timeout=30)
    heights = [layer.height for layer in producer.layers]
    assert heights[0] * 4 == heights[2] and heights[1] * 2 == heights[2], heights
    stats_b, t_top = await wait_height(b, producer.id, lambda h: h == heights[2], timeout=60)
    stats_a, _ = await wait_height(a, producer.id, lambda h: h == heights[0], timeout=20)
    print(f"layers {heights}; B got the top layer after {time.monotonic() - t0:.1f}s; A receives {stats_a['height']}p")

    # A's window grows: its tile is larger, so it gets the top layer soon.
    requests_before = producer.keyframe_requests_sent
    await a.set_viewport_size(large)
    up, t_up = await wait_height(a, producer.id, lambda h: h == heights[2], timeout=SWITCH_BOUND_S)
    assert up["plis"] - stats_a["plis"] <= 2, "no decoding trouble (the subscriber would send PLIs)"
    # Keyframe requests for the switch are spaced out (the longer a switch takes, the more of them).
    assert producer.keyframe_requests_sent - requests_before <= 6 + t_up / KEYFRAME_REQUEST_INTERVAL_S
    # ... and shrinks again.
    await a.set_viewport_size(small)
    down, t_down = await wait_height(a, producer.id, lambda h: h == heights[0], timeout=SWITCH_BOUND_S)
    print(f"A switched up in {t_up:.2f}s and down in {t_down:.2f}s")
    assert down["plis"] - stats_a["plis"] <= 3

    # A's tile disappears from view: no more bytes for it. B is unaffected.
    a_id = await a.evaluate("window.sfuSession.id")
    consumer_a = next(c for c in producer.consumers if c.subscriber_id == a_id)
    await a.evaluate(f"document.querySelector('[data-participant=\"{pub_id}\"]').style.display = 'none'")
    await eventually(lambda: consumer_a.paused, timeout=10)
    # What was on its way arrives; then nothing more.
    sent = await settled(lambda: consumer_a.out.packets_sent)
    bytes_a = await settled(lambda: _bytes(a, producer.id))
    b_frames = (await video(b, producer.id))["frames"]
    await asyncio.sleep(1.5)
    assert consumer_a.out.packets_sent == sent
    assert (await video(a, producer.id))["bytes"] == bytes_a
    # B keeps decoding (polled: a busy machine decodes fewer frames in a given time).
    deadline = time.monotonic() + 15
    while (b_now := (await video(b, producer.id))["frames"]) <= b_frames + 10:
        assert time.monotonic() < deadline, (b_frames, b_now)
        await asyncio.sleep(0.2)
    assert (await video(b, producer.id))["frames"] > b_frames + 10
    assert consumer_a.out.packets_sent == sent and (await video(a, producer.id))["bytes"] == bytes_a
    # Shown again: it resumes.
    await a.evaluate(f"document.querySelector('[data-participant=\"{pub_id}\"]').style.display = ''")
    await eventually(lambda: consumer_a.out.packets_sent > sent + 20, timeout=15)
    for page in (a, b, publisher):
        await page.context.close()


async def _bytes(page: Page, track: str) -> int:
    return (await video(page, track))["bytes"]


def _now_ms() -> int:
    from sfu.rtc.peer import now_ms

    return now_ms()

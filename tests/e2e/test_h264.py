"""H.264 end to end: a Chromium publisher that offers H.264 first (`?codec=h264`), simulcast,
and two Chromium viewers that decode what the server forwards, one small and one large."""

import asyncio
import time

from playwright.async_api import Browser

from sfu.app import ROOMS_KEY
from tests.conftest import eventually
from tests.e2e.test_simulcast import SWITCH_BOUND_S, open_page, wait_height

CODEC_JS = """async (track) => {
  const s = window.sfuSession;
  const c = s && [...s.consumers.values()].find((c) => c.track === track);
  if (!c || !s.subscribePc) return null;
  const stats = await s.subscribePc.getStats();
  let out = null;
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.mid === c.mid) {
      const codec = stats.get(r.codecId);
      out = {mime: codec ? codec.mimeType : '', frames: r.framesDecoded || 0, decoder: r.decoderImplementation || ''};
    }
  });
  return out;
}"""


async def test_h264_simulcast_is_forwarded_and_decoded(browser: Browser, e2e_server):
    base = e2e_server.url
    publisher = await open_page(
        browser, f"{base}/?room=h264&name=pub&autojoin=1&codec=h264", {"width": 640, "height": 480}
    )
    pub_id = await publisher.evaluate("window.sfuSession.id")
    room = e2e_server.app[ROOMS_KEY].rooms["h264"]
    producer = await eventually(
        lambda: next((p for p in room.participants[pub_id].producers() if p.kind == "video"), None)
    )
    assert producer.codec.name.upper() == "H264", producer.codec
    assert [layer.rid for layer in producer.layers] == ["q", "h", "f"]

    small = await open_page(
        browser, f"{base}/?room=h264&name=small&autojoin=1&publish=0", {"width": 400, "height": 300}
    )
    large = await open_page(
        browser, f"{base}/?room=h264&name=large&autojoin=1&publish=0", {"width": 1920, "height": 1080}
    )
    await eventually(lambda: all(layer.height > 0 or layer.stats.packets > 0 for layer in producer.layers), timeout=30)

    # H.264 keyframes carry no size we parse, so the layers' heights come from the viewers.
    top, _ = await wait_height(large, producer.id, lambda h: h >= 720, timeout=30)
    low, _ = await wait_height(small, producer.id, lambda h: 0 < h <= 180, timeout=15)
    for page in (small, large):
        before = await page.evaluate(CODEC_JS, producer.id)
        assert before["mime"].lower() == "video/h264", before
        await wait_frames(page, producer.id, before["frames"] + 40, timeout=30)
    # A switch on an H.264 keyframe: the small viewer grows and gets the top layer.
    await small.set_viewport_size({"width": 1920, "height": 1080})
    await wait_height(small, producer.id, lambda h: h >= 720, timeout=SWITCH_BOUND_S)
    after = await small.evaluate(CODEC_JS, producer.id)
    print(f"H.264 ({after['mime']}): large {top['height']}p, small {low['height']}p then 720p")


async def wait_frames(page, track: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        stats = await page.evaluate(CODEC_JS, track)
        if stats and stats["frames"] >= n:
            return
        assert time.monotonic() < deadline, f"decoding stalled: {stats}"
        await asyncio.sleep(0.2)

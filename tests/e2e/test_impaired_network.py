"""A Chromium subscriber behind an impaired downlink, in a network namespace of its own.

The namespace (tests/e2e/netns.py) is joined to the host by a veth pair; `tc tbf` on the host
side caps what the server sends to that subscriber. The publisher and a second, unimpaired
subscriber run outside it. (Random loss: tests/e2e/test_packet_loss.py.)
"""

import asyncio
import time

from playwright.async_api import Page, async_playwright

from sfu.app import ROOMS_KEY
from sfu.rtc.peer import now_ms
from tests.conftest import RunningServer, eventually
from tests.e2e.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.netns import HOST_IP, Namespace

INBOUND_JS = """async (track) => {
  const s = window.sfuSession;
  const c = s && [...s.consumers.values()].find((c) => c.track === track);
  if (!c || !s.subscribePc) return null;
  let out = null;
  (await s.subscribePc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.mid === c.mid)
      out = {height: r.frameHeight || 0, frames: r.framesDecoded || 0, received: r.packetsReceived || 0,
             lost: r.packetsLost || 0, nacks: r.nackCount || 0, freezes_s: r.totalFreezesDuration || 0};
  });
  return out;
}"""


async def inbound(page: Page, track: str) -> dict:
    return await page.evaluate(INBOUND_JS, track) or {}


async def call(pw, srv: RunningServer, ns: Namespace, room: str):
    browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    confined = await pw.chromium.launch(executable_path=ns.wrapper.name, args=CHROMIUM_ARGS)
    viewport = {"width": 1920, "height": 1080}
    publisher = await (await browser.new_context()).new_page()
    await publisher.goto(f"{srv.url}/?room={room}&name=pub&autojoin=1")
    await publisher.wait_for_function("document.body.dataset.state === 'joined'", timeout=15000)
    pub_id = await publisher.evaluate("window.sfuSession.id")
    free = await (await browser.new_context(viewport=viewport)).new_page()
    await free.goto(f"{srv.url}/?room={room}&name=free&autojoin=1&publish=0")
    impaired = await (await confined.new_context(viewport=viewport)).new_page()
    await impaired.goto(f"http://{HOST_IP}:{srv.config.port}/?room={room}&name=impaired&autojoin=1&publish=0")
    for page in (free, impaired):
        await page.wait_for_function("document.body.dataset.state === 'joined'", timeout=15000)
    room_obj = srv.app[ROOMS_KEY].rooms[room]
    producer = await eventually(
        lambda: next((p for p in room_obj.participants[pub_id].producers() if p.kind == "video"), None)
    )
    ids = {name: await page.evaluate("window.sfuSession.id") for name, page in (("free", free), ("impaired", impaired))}

    def consumer(name):
        return next((c for c in producer.consumers if c.subscriber_id == ids[name]), None)

    await eventually(lambda: consumer("free") and consumer("impaired"), timeout=15)
    return browser, confined, producer, consumer, free, impaired


async def test_capped_downlink_falls_to_the_lowest_layer_and_climbs_back(lab):
    srv, ns = lab
    async with async_playwright() as pw:
        browser, confined, producer, consumer, free, impaired = await call(pw, srv, ns, "cap")
        top = len(producer.layers) - 1
        await eventually(lambda: consumer("impaired").current == top and consumer("free").current == top, timeout=60)
        # (layer forwarded, the downlink's cap, whether the publisher was sending its top layer)
        free_samples: list[tuple[int, int | None, bool]] = []

        async def watch_free():
            while True:
                c = consumer("free")
                top_sent = producer.layers[top].active(now_ms())
                free_samples.append((c.current, c.bandwidth_layer, top_sent))
                await asyncio.sleep(0.25)

        watcher = asyncio.create_task(watch_free())
        # ~300 kbps downlink.
        ns.shape("tbf", "rate", "300kbit", "burst", "16kbit", "latency", "200ms")
        t0 = time.monotonic()
        # Soon nothing above the lowest layer is sent (at the worst moment of the drop the video
        # may also be paused briefly, until the loss is over); printed, bounded with room for a
        # busy machine.
        await eventually(lambda: consumer("impaired").current == 0 or consumer("impaired").bandwidth_paused, timeout=15)
        t_down = time.monotonic() - t0
        await eventually(
            lambda: consumer("impaired").current == 0 and not consumer("impaired").bandwidth_paused, timeout=20
        )
        await asyncio.sleep(2)  # adaptation settles
        # The loss is measured over at least 10 s and at least 100 packets (a busy machine
        # sends fewer in a given time).
        before = await inbound(impaired, producer.id)
        window_end, deadline = time.monotonic() + 10, time.monotonic() + 40
        while True:
            await asyncio.sleep(0.5)
            after = await inbound(impaired, producer.id)
            now = time.monotonic()
            if (now >= window_end and after["received"] - before["received"] > 100) or now > deadline:
                break
        lost = after["lost"] - before["lost"]
        received = after["received"] - before["received"]
        # packetsLost counts what never arrived on the media SSRC: repairs sent as RTX (what the
        # server does where RTX is negotiated) do not reduce it
        loss = max(0, lost) / max(1, lost + received)
        assert received > 100, "video still flows at the lowest layer"
        assert consumer("impaired").current == 0
        # The cap is lifted.
        ns.unshape()
        t1 = time.monotonic()
        await eventually(lambda: consumer("impaired").current == top, timeout=40)
        t_up = time.monotonic() - t1
        watcher.cancel()
        print(
            f"down to the lowest layer in {t_down:.1f}s, loss after adaptation {100 * loss:.2f}%, "
            f"back to the top layer in {t_up:.1f}s"
        )
        assert loss < 0.02
        assert consumer("impaired").retransmitted > 0, "the browser's NACKs were answered from the cache"
        # The unimpaired subscriber stays on the top layer throughout: its downlink never caps
        # it, and it gets the top layer whenever the publisher sends it (a busy machine's
        # Chromium may pause its top encoding for CPU, which is not the other downlink's doing).
        assert all(cap is None or cap >= top for _, cap, _ in free_samples), free_samples
        # (once the top layer has been sent for 3 s, time enough for the keyframe a switch back waits for)
        settled = [
            layer
            for i, (layer, _, _) in enumerate(free_samples)
            if i >= 12 and all(top_sent for *_, top_sent in free_samples[i - 12 : i + 1])
        ]
        assert len(settled) > len(free_samples) / 2, free_samples
        assert set(settled) == {top}, free_samples
        await browser.close()
        await confined.close()

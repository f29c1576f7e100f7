"""transport-cc with a real Chromium publisher: it gets feedback and its estimate climbs."""

import asyncio
import time

from playwright.async_api import Browser, Page

from sfu.app import ROOMS_KEY
from tests.conftest import start_server

# The publish connection's send-side view: the selected candidate pair's estimate and what
# the video encodings send.
PUBLISH_STATS_JS = """async () => {
  const s = window.sfuSession;
  if (!s || !s.publishPc) return null;
  const out = {available: 0, sent_bytes: 0};
  (await s.publishPc.getStats()).forEach((r) => {
    if (r.type === 'candidate-pair' && r.nominated && r.availableOutgoingBitrate)
      out.available = Math.max(out.available, r.availableOutgoingBitrate);
    if (r.type === 'outbound-rtp' && r.kind === 'video') out.sent_bytes += r.bytesSent || 0;
  });
  return out;
}"""

SDPS_JS = """() => {
  const s = window.sfuSession;
  return {publish: s.publishPc && s.publishPc.remoteDescription ? s.publishPc.remoteDescription.sdp : '',
          subscribe: s.subscribePc && s.subscribePc.remoteDescription ? s.subscribePc.remoteDescription.sdp : ''};
}"""


async def open_page(browser: Browser, url: str) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    page = await context.new_page()
    await page.goto(url)
    await page.wait_for_function("document.body.dataset.state === 'joined'", timeout=15000)
    return page


async def wait_for(page: Page, js: str, predicate, timeout: float):
    deadline = time.monotonic() + timeout
    value = await page.evaluate(js)
    while not predicate(value):
        assert time.monotonic() < deadline, f"not reached within {timeout}s: {value}"
        await asyncio.sleep(0.2)
        value = await page.evaluate(js)
    return value


async def test_chromium_publisher_gets_transport_cc_feedback_and_ramps_up(browser: Browser):
    # No REMB: only the feedback can lift Chrome's estimate (REMB alone would, in Chrome's
    # first 2 s, be taken as the estimate).
    srv = await start_server(heartbeat_interval_s=1.0, publisher_bitrate_bps=0)
    try:
        pub = await open_page(browser, f"{srv.url}/?room=tcc&name=pub&autojoin=1")
        sub = await open_page(browser, f"{srv.url}/?room=tcc&name=sub&autojoin=1&publish=0")
        pub_id = await pub.evaluate("window.sfuSession.id")
        sdps = await wait_for(pub, SDPS_JS, lambda v: "m=video" in v["publish"], 20)
        assert "transport-wide-cc" in sdps["publish"] and "transport-cc" in sdps["publish"]
        sub_sdps = await wait_for(sub, SDPS_JS, lambda v: "m=video" in v["subscribe"], 20)
        assert "transport-wide-cc" in sub_sdps["subscribe"]

        # Chrome starts at 300 kbit/s; with feedback its probes take it far above within
        # seconds (receiver reports alone raise it by 8 % per second: 440 kbit/s after 5 s,
        # 650 kbit/s after 10 s, so the bound leaves room for a busy machine and still tells).
        t0 = time.monotonic()
        stats = await wait_for(pub, PUBLISH_STATS_JS, lambda v: v and v["available"] >= 1_200_000, 10)
        print(f"availableOutgoingBitrate {stats['available']} bps after {time.monotonic() - t0:.1f}s")
        publisher = srv.app[ROOMS_KEY].rooms["tcc"].participants[pub_id].publisher
        assert publisher.feedback.packets_sent > 0
        assert publisher.feedback.late_dropped == 0
    finally:
        await srv.runner.cleanup()


async def test_transport_cc_off_leaves_it_out_of_both_connections(browser: Browser):
    srv = await start_server(heartbeat_interval_s=1.0, transport_cc=False)
    try:
        pub = await open_page(browser, f"{srv.url}/?room=nocc&name=pub&autojoin=1")
        sub = await open_page(browser, f"{srv.url}/?room=nocc&name=sub&autojoin=1&publish=0")
        pub_id = await pub.evaluate("window.sfuSession.id")
        sdps = await wait_for(pub, SDPS_JS, lambda v: "m=video" in v["publish"], 10)
        sub_sdps = await wait_for(sub, SDPS_JS, lambda v: "m=video" in v["subscribe"], 10)
        for sdp in (sdps["publish"], sub_sdps["subscribe"]):
            assert "transport-wide-cc" not in sdp and "transport-cc" not in sdp
        assert "goog-remb" in sdps["publish"]
        # The call still works, and the publisher is told nothing but REMB.
        await wait_for(pub, PUBLISH_STATS_JS, lambda v: v and v["sent_bytes"] > 50_000, 20)
        publisher = srv.app[ROOMS_KEY].rooms["nocc"].participants[pub_id].publisher
        assert publisher.feedback.packets_sent == 0
    finally:
        await srv.runner.cleanup()

"""A call for the reconnect tests and bench/reconnect.py: a Chromium participant ("moving") in a
network namespace of its own (tests/e2e/netns.py) and two outside it ("a", "b"), all publishing
through the browser client; what each page saw, with times taken in the page."""

import asyncio
import time

from playwright.async_api import Page

from sfu.app import ROOMS_KEY
from tests.conftest import RunningServer
from tests.e2e.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.netns import HOST_IP, Namespace

# Frames decoded from each remote participant, and Chrome's freeze total, per participant.
MEDIA_JS = """() => {
  const s = window.sfuSession;
  if (!s || !s.subscribePc) return {};
  return s.subscribePc.getStats().then((report) => {
    const out = {};
    report.forEach((r) => {
      if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
      const c = s.consumers.get(r.mid);
      if (!c) return;
      const e = (out[c.participant] ??= {frames: 0, freezes_s: 0});
      e.frames += r.framesDecoded || 0;
      e.freezes_s += r.totalFreezesDuration || 0;
    });
    return out;
  });
}"""

# Installed once a page has joined: what it saw, for the assertions.
WATCH_JS = """() => {
  const s = window.sfuSession;
  window.__seen = {left: [], reconnecting: [], resumed: [], rejoined: 0, states: [], joinForm: false};
  s.on('participant-left', (e) => window.__seen.left.push([e.id, e.reason]));
  s.on('participant-reconnecting', (e) => window.__seen.reconnecting.push(e.id));
  s.on('participant-resumed', (e) => window.__seen.resumed.push(e.id));
  s.on('rejoined', () => window.__seen.rejoined++);
  s.on('state', (e) => window.__seen.states.push(e.state));
  window.__log = [];
  for (const type of ['state', 'pc-state', 'pc-renew', 'resumed', 'reconnecting', 'rejoined'])
    s.on(type, (e) => window.__log.push([Date.now(), type, e.state || e.pc || e.reason || '']));
  // When each remote participant's video last decoded new frames (wall clock, ms): sampled in
  // the page every 50 ms, so a slow test loop does not blur the times.
  window.__frames = {};
  let last = {};
  setInterval(async () => {
    const pc = s.subscribePc;
    if (!pc) return;
    const now = Date.now();
    const report = await pc.getStats();
    const frames = {};
    report.forEach((r) => {
      if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
      const c = s.consumers.get(r.mid);
      if (c) frames[c.participant] = (frames[c.participant] || 0) + (r.framesDecoded || 0);
    });
    for (const [p, n] of Object.entries(frames)) {
      if (n !== last[p]) (window.__frames[p] ??= []).push(now);
    }
    last = frames;
  }, 50);
  const form = document.getElementById('join-view');
  new MutationObserver(() => { if (!form.hidden) window.__seen.joinForm = true; })
    .observe(form, {attributes: true});
}"""


async def media(page: Page) -> dict:
    return await page.evaluate(MEDIA_JS)


async def seen(page: Page) -> dict:
    return await page.evaluate("window.__seen")


class Call:
    """The namespace's page and the two others, all joined and receiving each other."""

    def __init__(self, srv: RunningServer, ns: Namespace) -> None:
        self.srv, self.ns = srv, ns
        self.pages: dict[str, Page] = {}
        self.ids: dict[str, str] = {}

    async def start(self, pw, room: str) -> None:
        self.outside = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # The namespace's page is served from the host's veth address, not localhost: let it
        # capture (the fake camera and microphone) as a secure context would.
        origin = f"http://{HOST_IP}:{self.srv.config.port}"
        self.inside = await pw.chromium.launch(
            executable_path=self.ns.wrapper.name,
            args=[*CHROMIUM_ARGS, f"--unsafely-treat-insecure-origin-as-secure={origin}"],
        )
        urls = {
            "a": f"{self.srv.url}/?room={room}&name=a&autojoin=1&simulcast=0",
            "b": f"{self.srv.url}/?room={room}&name=b&autojoin=1&simulcast=0",
            "moving": f"http://{HOST_IP}:{self.srv.config.port}/?room={room}&name=moving&autojoin=1&simulcast=0",
        }
        for name, url in urls.items():
            browser = self.inside if name == "moving" else self.outside
            page = await (await browser.new_context()).new_page()
            page.on("console", lambda m, n=name: print(f"[{n}] {m.type}: {m.text}") if m.type == "error" else None)
            await page.goto(url)
            await page.wait_for_function("document.body.dataset.state === 'joined'", timeout=20000)
            await page.evaluate(WATCH_JS)
            self.pages[name] = page
            self.ids[name] = await page.evaluate("window.sfuSession.id")
        await self.all_receiving(timeout=30)

    def server_view(self) -> list:
        return [
            (
                p.id,
                p.name,
                [(x.id, x.kind, len(x.consumers)) for x in p.producers()],
                p.publisher.connection_state if p.publisher else None,
                p.subscriber.connection_state if p.subscriber else None,
            )
            for room in self.srv.app[ROOMS_KEY].rooms.values()
            for p in room.participants.values()
        ]

    def others(self, name: str) -> list[str]:
        return [n for n in self.pages if n != name]

    async def all_receiving(self, timeout: float) -> None:
        async def check():
            for name, page in self.pages.items():
                m = await media(page)
                if not all(m.get(self.ids[o], {}).get("frames", 0) > 0 for o in self.others(name)):
                    return False
            return True

        deadline = time.monotonic() + timeout
        while not await check():
            assert time.monotonic() < deadline, ({n: await media(p) for n, p in self.pages.items()}, self.server_view())
            await asyncio.sleep(0.2)

    async def media_back(self, after_ms: float, timeout: float, stall_ms: float = 0) -> dict[tuple[str, str], float]:
        """Seconds from ``after_ms`` (wall clock) to the first new decoded frame, for every
        pair (viewer, publisher) that involves the moving page, as the pages saw it. With
        ``stall_ms``: the first frame after a stall of that long (frames still in flight at
        ``after_ms`` do not count), or 0 when there was none for 3 s."""
        pairs = [(v, p) for v in self.pages for p in self.others(v) if "moving" in (v, p)]
        deadline = time.monotonic() + timeout
        while True:
            back = {}
            for viewer, publisher in pairs:
                times = await self.pages[viewer].evaluate(f"window.__frames['{self.ids[publisher]}'] || []")
                later = [t for t in times if t > after_ms]
                if not stall_ms:
                    if later:
                        back[viewer, publisher] = round((later[0] - after_ms) / 1000, 3)
                    continue
                earlier = [t for t in times if t <= after_ms][-1:]
                steps = list(zip(earlier + later, later, strict=False))
                # The end of the last stall, once frames have come steadily for a second since.
                ends = [t for prev, t in steps if t - prev > stall_ms]
                if ends and later[-1] - ends[-1] >= 1000:
                    back[viewer, publisher] = round((ends[-1] - after_ms) / 1000, 3)
                elif not ends and later and later[-1] - after_ms > 3000:
                    back[viewer, publisher] = 0.0
            if len(back) == len(pairs):
                return back
            assert time.monotonic() < deadline, f"no new frames within {timeout}s for {set(pairs) - set(back)}; {back}"
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        await self.outside.close()
        await self.inside.close()


async def print_log(call: Call, since_ms: float) -> None:
    """What the moving page went through (times from ``since_ms``), and the server's view."""
    log = await call.pages["moving"].evaluate("window.__log.splice(0)")
    print([(round((t - since_ms) / 1000, 2), kind, what) for t, kind, what in log])
    print(call.server_view())


async def max_gap_s(page: Page, publisher_id: str, from_ms: float, to_ms: float) -> float:
    """The longest time without a new decoded frame of one publisher, within [from, to]."""
    times = await page.evaluate(f"window.__frames['{publisher_id}'] || []")
    inside = [from_ms] + [t for t in times if from_ms < t < to_ms] + [to_ms]
    return max(b - a for a, b in zip(inside, inside[1:], strict=False)) / 1000

"""Three real browsers in one call, through the browser client."""

import asyncio
import time

from playwright.async_api import Browser, Page

from tests.conftest import eventually

# From joining to two decoded remote videos (printed by the test); room for a busy machine.
LATE_JOINER_BOUND_S = 8.0

STATS_JS = """async () => {
  const s = window.sfuSession;
  if (!s || !s.subscribePc) return [];
  const report = await s.subscribePc.getStats();
  const out = [];
  report.forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    const c = s.consumers.get(r.mid);
    out.push({kind: r.kind, mid: r.mid, participant: c ? c.participant : null,
              framesDecoded: r.framesDecoded || 0, packetsReceived: r.packetsReceived || 0,
              frameHeight: r.frameHeight || 0});
  });
  return out;
}"""


async def open_participant(browser: Browser, base_url: str, room: str, name: str) -> Page:
    context = await browser.new_context()
    page = await context.new_page()
    page.on("console", lambda m: print(f"[{name}] {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    await page.goto(f"{base_url}/?room={room}&name={name}&autojoin=1")
    await page.wait_for_function("document.body.dataset.state === 'joined'", timeout=15000)
    return page


async def remote_media(page: Page) -> dict[str, dict[str, int]]:
    """Per remote participant: frames decoded (video) and audio packets received."""
    out: dict[str, dict[str, int]] = {}
    for r in await page.evaluate(STATS_JS):
        if r["participant"] is None:
            continue
        entry = out.setdefault(r["participant"], {"frames": 0, "audio_packets": 0})
        if r["kind"] == "video":
            entry["frames"] += r["framesDecoded"]
        else:
            entry["audio_packets"] += r["packetsReceived"]
    return out


def full_media(media: dict[str, dict[str, int]], others: set[str]) -> bool:
    return set(media) >= others and all(media[o]["frames"] > 0 and media[o]["audio_packets"] > 0 for o in others)


async def test_three_browsers_see_and_hear_each_other_and_see_a_leave(browser, e2e_server):
    base = e2e_server.url
    pages = [await open_participant(browser, base, "e2e", f"user{i}") for i in range(2)]
    ids = [await p.evaluate("window.sfuSession.id") for p in pages]
    await asyncio.sleep(0.5)

    # The third one joins late: it must see both videos quickly (the server asks the publishers
    # for keyframes for it).
    t0 = time.monotonic()
    pages.append(await open_participant(browser, base, "e2e", "user2"))
    t_joined = time.monotonic()
    ids.append(await pages[2].evaluate("window.sfuSession.id"))
    late_media: dict[str, dict[str, int]] = {}

    async def late_joiner_sees_everyone():
        nonlocal late_media
        late_media = await remote_media(pages[2])
        return full_media(late_media, set(ids[:2]))

    deadline = time.monotonic() + 20
    while not await late_joiner_sees_everyone():
        assert time.monotonic() < deadline, f"late joiner media: {late_media}"
        await asyncio.sleep(0.05)
    now = time.monotonic()
    print(
        f"late joiner: two decoded remote videos {now - t0:.2f}s after page load, {now - t_joined:.2f}s after joining"
    )
    assert now - t_joined < LATE_JOINER_BOUND_S

    # Every page decodes two remote videos and receives two remote audio streams, and keeps doing so.
    before = []
    for i, page in enumerate(pages):
        others = set(ids) - {ids[i]}
        media = {}
        deadline = time.monotonic() + 20
        while not full_media(media := await remote_media(page), others):
            assert time.monotonic() < deadline, f"page {i} media: {media}; server: {_subscriber_state(e2e_server)}"
            await asyncio.sleep(0.2)
        before.append(media)
    # (polled: a busy machine decodes fewer frames in a given time)
    for i, page in enumerate(pages):
        others = set(ids) - {ids[i]}
        deadline = time.monotonic() + 20

        def kept_going(after, i=i, others=others):
            return all(
                after[o]["frames"] > before[i][o]["frames"] + 10
                and after[o]["audio_packets"] > before[i][o]["audio_packets"] + 20
                for o in others
            )

        while not kept_going(after := await remote_media(page)):
            assert time.monotonic() < deadline, (i, before[i], after)
            await asyncio.sleep(0.2)
        for other in others:
            assert after[other]["frames"] > before[i][other]["frames"] + 10, (i, other, before[i], after)
            assert after[other]["audio_packets"] > before[i][other]["audio_packets"] + 20

    # Names are shown on the tiles.
    assert "user1" in await pages[0].inner_text(f'[data-participant="{ids[1]}"]')

    # One page closes (the tab is killed): the other two see it leave.
    await pages[2].context.close()
    for page in pages[:2]:
        await page.wait_for_function(
            f"!document.querySelector('[data-participant=\"{ids[2]}\"]')"
            f" && !window.sfuSession.participants.has('{ids[2]}')",
            timeout=10000,
        )
    for page in pages[:2]:
        await page.context.close()
    # The server forgot them all.
    await eventually(lambda: not e2e_server.app[__import__("sfu.app").app.ROOMS_KEY].rooms, timeout=10)


def _subscriber_state(server) -> list:
    from sfu.app import ROOMS_KEY

    return [
        (p.id, p.subscriber.describe() if p.subscriber else None)
        for room in server.app[ROOMS_KEY].rooms.values()
        for p in room.participants.values()
    ]

"""A room spread over two nodes (two node processes sharing a real redis-server, with
``participant_placement = local``): a Chromium publisher connected to node A, two Chromium
viewers connected to node B, each kept on its own node's worker. The viewers decode the
publisher's video and hear its audio over the SRTP media link between the nodes, and all three
highlight the same active speaker."""

import asyncio
import time

import pytest

from tests.cluster_nodes import NodeProcess, placed, registered_nodes
from tests.e2e.test_browser_call import full_media, open_participant, remote_media

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def two_nodes(redis_url, tmp_path):
    nodes = [
        NodeProcess(
            workers=1, redis_url=redis_url, node_id=f"span{i}", log_dir=tmp_path, SFU_PARTICIPANT_PLACEMENT="local"
        )
        for i in range(2)
    ]
    async with registered_nodes(nodes):
        yield nodes


async def test_browser_viewers_on_node_b_decode_a_browser_publisher_on_node_a(browser, two_nodes):
    a, b = two_nodes
    pub = await open_participant(browser, a.url, "spanned", "publisher")
    pages = [pub]
    try:
        pub_id = await pub.evaluate("window.sfuSession.id")
        assert (await placed(a, "spanned", 1))["node"] == "span0"
        pages += [await open_participant(browser, b.url, "spanned", f"viewer{i}") for i in range(2)]
        ids = [await p.evaluate("window.sfuSession.id") for p in pages]
        assert ids[1].split("-")[0] == ids[2].split("-")[0] != pub_id.split("-")[0], f"viewers on node B: {ids}"
        for i, page in enumerate(pages):
            others = set(ids) - {ids[i]}
            media: dict = {}
            deadline = time.monotonic() + 60
            while not full_media(media := await remote_media(page), others):
                assert time.monotonic() < deadline, f"page {i} media: {media}"
                await asyncio.sleep(0.2)
        # One active speaker for the whole room, highlighted on both nodes' pages.
        deadline = time.monotonic() + 30
        while True:
            speakers = [await p.evaluate("window.sfuSession.activeSpeaker") for p in pages]
            if speakers[0] is not None and len(set(speakers)) == 1:
                break
            assert time.monotonic() < deadline, f"speakers: {speakers}"
            await asyncio.sleep(0.3)
        speaker = speakers[0]
        for i, page in enumerate(pages):
            selector = (
                "#local-tile[data-speaking]" if ids[i] == speaker else f'[data-participant="{speaker}"][data-speaking]'
            )
            await page.wait_for_selector(selector, timeout=15000)
        print(f"active speaker {speaker} ({['publisher', 'viewer0', 'viewer1'][ids.index(speaker)]}) on every page")
    finally:
        for page in pages:
            await page.context.close()

"""Three real browsers in one room through two nodes of a cluster (two node processes sharing
a real redis-server): the browser client needs no change, the front relays its signaling to
the room's worker, wherever it is, and the media goes straight to that worker."""

import asyncio
import time

import pytest

from tests.cluster_nodes import NodeProcess, placed, registered_nodes
from tests.e2e.test_browser_call import full_media, open_participant, remote_media

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def two_nodes(redis_url, tmp_path):
    nodes = [NodeProcess(workers=1, redis_url=redis_url, node_id=f"e2e{i}", log_dir=tmp_path) for i in range(2)]
    async with registered_nodes(nodes):
        yield nodes


async def test_three_browsers_on_two_nodes_decode_each_other(browser, two_nodes):
    a, b = two_nodes
    pages = [
        await open_participant(browser, a.url, "spread", "user0"),
        await open_participant(browser, b.url, "spread", "user1"),
        await open_participant(browser, a.url, "spread", "user2"),
    ]
    try:
        ids = [await p.evaluate("window.sfuSession.id") for p in pages]
        assert len({i.split("-")[0] for i in ids}) == 1, f"one room on one worker: {ids}"
        for i, page in enumerate(pages):
            others = set(ids) - {ids[i]}
            media: dict = {}
            deadline = time.monotonic() + 30
            while not full_media(media := await remote_media(page), others):
                assert time.monotonic() < deadline, f"page {i} media: {media}"
                await asyncio.sleep(0.2)
        entry = await placed(b, "spread", 3)  # node B lists the room hosted on node A
        assert entry["node"] == "e2e0"
    finally:
        for page in pages:
            await page.context.close()

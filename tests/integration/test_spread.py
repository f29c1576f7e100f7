"""One room spread over two workers of a node (``python -m sfu --workers 2`` as a real
process): the publisher on the room's home worker, subscribers placed on the other worker (the
internal headers name the room's home, as the front does for ``participant_placement =
local``), its producers relayed over the media link between the two workers."""

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from sfu.client import Participant
from sfu.cluster.internal import SECRET_HEADER
from sfu.cluster.span import HOME_URL_HEADER, HOME_WORKER_HEADER, LINKS_PATH, ROOM_HEADER
from tests.cluster_nodes import CLUSTER_SECRET, NodeProcess, close_all, placed
from tests.conftest import eventually

pytestmark = pytest.mark.timeout(150)


async def workers_of(node: NodeProcess) -> dict[str, str]:
    """worker id -> internal URL."""
    view = await node.node_view()
    return {w["worker"]: w["url"] for w in view["workers"]}


async def home_and_other(node: NodeProcess, room: str) -> tuple[tuple[str, str], tuple[str, str]]:
    entry = await placed(node, room, 1)
    urls = await workers_of(node)
    home = entry["worker"]
    other = next(w for w in urls if w != home)
    return (home, urls[home]), (other, urls[other])


def placed_on(worker_url: str, room: str, name: str, home: tuple[str, str], **kw: Any) -> Participant:
    """A participant connected straight to ``worker_url``, in the room whose home is ``home``."""
    headers = {
        SECRET_HEADER: CLUSTER_SECRET,
        ROOM_HEADER: room,
        HOME_URL_HEADER: home[1],
        HOME_WORKER_HEADER: home[0],
    }
    return Participant(f"{worker_url}/ws", room, name, headers=headers, **kw)


async def links(worker_url: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(worker_url + LINKS_PATH, headers={SECRET_HEADER: CLUSTER_SECRET}) as r,
    ):
        assert r.status == 200
        data: dict[str, Any] = await r.json()
        return data


@pytest.fixture
async def node(tmp_path):
    node = NodeProcess(workers=2, log_dir=tmp_path)
    node.start()
    try:
        await node.wait_ready()
        yield node
    finally:
        node.cleanup()


async def test_subscribers_on_another_worker_get_the_publishers_media_over_one_link(node):
    pub = Participant(node.ws_url, "span", "pub")
    await pub.join()
    await pub.publish_rtp(audio=True, video=True)
    home, other = await home_and_other(node, "span")
    subs = [placed_on(other[1], "span", f"s{i}", home) for i in range(3)]
    try:
        for s in subs:
            joined = await s.join()
            assert [p["id"] for p in joined["participants"]] == [pub.id] + [x.id for x in subs[: subs.index(s)]]
            assert s.id.split("-")[0] != pub.id.split("-")[0], "placed on the other worker"
        await eventually(
            lambda: all(s.received_from(pub.id, "video") > 50 and s.received_from(pub.id, "audio") > 20 for s in subs),
            timeout=30,
        )
        # The publisher, on the home worker, hears of them as of anyone.
        await pub.wait_for(lambda m: m.get("type") == "participant-joined" and m["participant"]["id"] == subs[-1].id)
        sent = (await links(home[1]))["links"]
        assert [link["peer_worker"] for link in sent] == [other[0]]
        assert not sent[0]["encrypted"], "one node: a plain link"
        # Once per packet for the whole worker: three subscribers there, one copy on the link.
        video_track = next(t["id"] for t in subs[0].joined["participants"][0]["tracks"] if t["kind"] == "video")
        video_out = next(r for r in sent[0]["relayed"] if r["track"] == video_track)
        relayed = video_out["packets_by_layer"]["single"]
        received = [s.received_from(pub.id, "video") for s in subs]
        assert relayed >= max(received) - 100 and relayed < 1.5 * min(received) + 100, (relayed, received)
    finally:
        await close_all([*subs, pub])


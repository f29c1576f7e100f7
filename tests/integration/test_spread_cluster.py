"""One room spread over two nodes sharing a real redis-server, with
``participant_placement = local``: each participant stays on the node it connected to, the
room's producers cross between the nodes' workers over an SRTP media link."""

import asyncio

import aiohttp
import pytest

from sfu.client import Participant
from sfu.cluster.internal import SECRET_HEADER
from sfu.cluster.span_wire import LINKS_PATH
from tests.cluster_nodes import CLUSTER_SECRET, NodeProcess, close_all, eventually_async, placed
from tests.conftest import eventually

pytestmark = pytest.mark.timeout(180)


async def links(worker_url: str) -> dict:
    async with (
        aiohttp.ClientSession() as http,
        http.get(worker_url + LINKS_PATH, headers={SECRET_HEADER: CLUSTER_SECRET}) as r,
    ):
        assert r.status == 200
        return await r.json()


@pytest.fixture
async def nodes(redis_url, tmp_path):
    nodes = [
        NodeProcess(
            workers=2, redis_url=redis_url, node_id=f"n{i}", log_dir=tmp_path, SFU_PARTICIPANT_PLACEMENT="local"
        )
        for i in range(2)
    ]
    for node in nodes:
        node.start()
    try:
        await asyncio.gather(*(node.wait_ready() for node in nodes))

        async def sees_both():
            view = await nodes[0].node_view()
            return len(view.get("nodes", [])) == 2

        await eventually_async(sees_both, 20)
        yield nodes
    finally:
        for node in nodes:
            node.cleanup()


async def test_viewers_on_node_b_get_the_media_of_a_publisher_on_node_a_over_an_encrypted_link(nodes):
    a_node, b_node = nodes
    pub = Participant(a_node.ws_url, "webinar", "speaker")
    viewers = [Participant(b_node.ws_url, "webinar", f"v{i}") for i in range(2)]
    try:
        await pub.join()
        await pub.publish_rtp(audio=True, video=True, simulcast=True)
        home = await placed(a_node, "webinar", 1)
        assert home["node"] == "n0"
        for v in viewers:
            joined = await v.join()
            assert pub.id in [p["id"] for p in joined["participants"]]
        assert all(v.id.split("-")[0] != pub.id.split("-")[0] for v in viewers), "placed on node B's worker"
        assert len({v.id.split("-")[0] for v in viewers}) == 1, "one shard on node B, not one per worker"
        await eventually(
            lambda: all(
                v.received_from(pub.id, "video") > 50 and v.received_from(pub.id, "audio") > 20 for v in viewers
            ),
            timeout=40,
        )
        view = await a_node.node_view()
        home_url = next(w["url"] for w in view["workers"] if w["worker"] == home["worker"])
        link = (await links(home_url))["links"][0]
        assert link["peer_node"] == "n1" and link["encrypted"]
        assert link["packets_sent"] > 100 and link["undecryptable"] == 0
        shard_view = await b_node.node_view()
        shard_links = [await links(w["url"]) for w in shard_view["workers"]]
        received = [lk for data in shard_links for lk in data["links"]]
        assert len(received) == 1 and received[0]["encrypted"] and received[0]["undecryptable"] == 0
        assert received[0]["packets_received"] > 100

        # The rest of the room's protocol crosses too: chat, mute, who is there.
        await viewers[0].send({"type": "chat", "text": "hello from node B"})
        msg = await pub.wait_for(lambda m: m.get("type") == "chat", timeout=10)
        assert msg["from"] == viewers[0].id and msg["text"] == "hello from node B"
        await viewers[1].wait_for(lambda m: m.get("type") == "chat" and m["from"] == viewers[0].id, timeout=10)
        audio = next(t for t in viewers[0].joined["participants"][0]["tracks"] if t["kind"] == "audio")
        await pub.send({"type": "mute", "track": audio["id"], "muted": True})
        for v in viewers:
            await v.wait_for(
                lambda m: m.get("type") == "mute" and m.get("track") == audio["id"] and m["muted"], timeout=10
            )
        await viewers[1].close()
        await pub.wait_for(lambda m: m.get("type") == "participant-left" and m.get("id") == viewers[1].id, timeout=10)
    finally:
        await close_all([*viewers, pub])

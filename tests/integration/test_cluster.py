"""Two node processes (``python -m sfu --workers 2 --redis-url ...``) sharing a real
redis-server: a client on one node joins a room hosted by the other, the twenty-clients race
across both nodes, a node SIGKILLed mid-call, Redis stopped and restarted mid-call."""

import asyncio
import time

import pytest

from sfu.client import Participant
from tests.cluster_nodes import (
    NodeProcess,
    TimedParticipant,
    close_all,
    eventually_async,
    joined,
    placed,
)
from tests.conftest import eventually

pytestmark = pytest.mark.timeout(180)


async def start_nodes(redis_url, log_dir, count=2):
    nodes = [NodeProcess(workers=2, redis_url=redis_url, node_id=f"n{i}", log_dir=log_dir) for i in range(count)]
    for node in nodes:
        node.start()
    try:
        await asyncio.gather(*(node.wait_ready() for node in nodes))
        # Each node sees the other in the registry.
        await eventually_async(lambda: _sees_all(nodes), 20)
    except BaseException:
        for node in nodes:
            node.cleanup()
        raise
    return nodes


async def _sees_all(nodes):
    view = await nodes[0].node_view()
    return len(view.get("nodes", [])) == len(nodes) and all(len(n["workers"]) == 2 for n in view["nodes"])


@pytest.fixture
async def nodes(redis_url, tmp_path):
    nodes = await start_nodes(redis_url, tmp_path)
    yield nodes
    for node in nodes:
        node.cleanup()


async def join_retrying(url, room, name, deadline_s, **kw):
    """Join (and publish audio), again and again until it works or ``deadline_s`` passes."""
    last = None
    while time.monotonic() < deadline_s:
        client = Participant(url, room, name)
        try:
            await client.join()
            await client.publish(video=False, **kw)
            return client
        except (RuntimeError, OSError, TimeoutError) as exc:
            last = exc
            await client.close()
            await asyncio.sleep(0.3)
    raise AssertionError(f"no join through {url} before the deadline: {last!r}")


async def test_a_client_on_node_b_joins_a_room_hosted_on_node_a_and_gets_media(nodes):
    a_node, b_node = nodes
    a = await joined(a_node.ws_url, "across", "a")
    try:
        entry = await placed(a_node, "across", 1)
        assert entry["node"] == "n0", "a new room goes to the node that took the join"
        b = await joined(b_node.ws_url, "across", "b")
        try:
            await eventually(
                lambda: a.received_from(b.id, "video") > 50 and b.received_from(a.id, "video") > 50, timeout=30
            )
            # Node B lists the room on node A, with both participants.
            entry = await placed(b_node, "across", 2)
            assert entry["node"] == "n0" and {m["id"] for m in entry["members"]} == {a.id, b.id}
        finally:
            await b.close()
    finally:
        await a.close()


async def test_twenty_clients_joining_one_new_room_through_both_nodes_land_on_one_worker(nodes):
    clients = [Participant(nodes[i % 2].ws_url, "race", f"c{i}") for i in range(20)]
    try:
        await asyncio.gather(*(c.join() for c in clients))
        assert len({c.id.split("-")[0] for c in clients}) == 1, [c.id for c in clients]
        entry = await placed(nodes[1], "race", 20)
        assert {m["id"] for m in entry["members"]} == {c.id for c in clients}
        assert max(len(c.joined["participants"]) for c in clients) == 19
    finally:
        await close_all(clients)


async def test_node_killed_mid_call_its_clients_rejoin_through_the_other_within_ten_seconds(nodes):
    a_node, b_node = nodes
    a1 = await joined(a_node.ws_url, "fragile", "a1", video=False)
    a2 = await joined(a_node.ws_url, "fragile", "a2", video=False)
    clients = [a1, a2]
    try:
        entry = await placed(a_node, "fragile", 2)
        assert entry["node"] == "n0"
        await eventually(lambda: a2.received_from(a1.id, "audio") > 20, timeout=30)
        killed_s = time.monotonic()
        a_node.kill()  # the front alone: its workers die with it
        await a1.wait_type("socket-closed", timeout=10)
        deadline_s = killed_s + 10
        r1 = await join_retrying(b_node.ws_url, "fragile", "r1", deadline_s)
        clients.append(r1)
        r2 = await join_retrying(b_node.ws_url, "fragile", "r2", deadline_s)
        clients.append(r2)
        await eventually(lambda: r2.received_from(r1.id, "audio") > 10, timeout=max(0.5, deadline_s - time.monotonic()))
        assert time.monotonic() - killed_s < 10
        entry = await placed(b_node, "fragile", 2)
        assert entry["node"] == "n1", "placed anew on the surviving node"
        # Its workers died with it: no process of the killed node is left.
        await eventually(lambda: not a_node.group_alive(), timeout=10)
    finally:
        await close_all(clients)


async def test_redis_stopped_mid_call_the_call_goes_on_joins_are_refused_then_work_again(fresh_redis, tmp_path):
    nodes = await start_nodes(fresh_redis.url, tmp_path)
    clients = []
    try:
        a = await joined(nodes[0].ws_url, "resilient", "a", video=False)
        clients.append(a)
        b = await joined(nodes[1].ws_url, "resilient", "b", video=False, cls=TimedParticipant)
        clients.append(b)
        await eventually(lambda: b.received_from(a.id, "audio") > 20, timeout=30)
        fresh_redis.stop()
        stopped_s = time.monotonic()
        # A join that needs a placement is refused cleanly: `unavailable`, then a close (1013).
        for node in nodes:
            late = Participant(node.ws_url, "newcomer", "late")
            clients.append(late)
            await late.connect()
            await late.send({"type": "join", "room": "newcomer", "name": "late"})
            error = await late.wait_type("error", timeout=15)
            assert error["code"] == "unavailable" and error["request"] == "join"
            await late.wait_type("socket-closed", timeout=10)
            assert late._ws.close_code == 1013
        # The running call goes on.
        before = b.received_from(a.id, "audio")
        await asyncio.sleep(2)
        assert b.received_from(a.id, "audio") > before + 30
        gap_s = b.longest_gap_s(a.id, stopped_s, time.monotonic())
        assert gap_s < 1.0, f"media stalled {gap_s:.2f} s while Redis was down"
        health = await nodes[0].get("/healthz")
        assert health["coordinator"] == "unavailable"
        fresh_redis.start()  # empty: the nodes write the registry and the running rooms back
        deadline_s = time.monotonic() + 30
        c = await join_retrying(nodes[1].ws_url, "newcomer", "c", deadline_s)
        clients.append(c)
        # Through the node that does not host the room: it waits for the running rooms to be
        # written back before placing anything, so the room is found where it runs.
        d = await join_retrying(nodes[1].ws_url, "resilient", "d", deadline_s)
        clients.append(d)
        assert d.id.split("-")[0] == a.id.split("-")[0], "the running room was written back, not split"
        await eventually(lambda: d.received_from(a.id, "audio") > 10, timeout=20)
        assert b.received_from(a.id, "audio") > before + 100
    finally:
        await close_all(clients)
        for node in nodes:
            node.cleanup()


async def test_sigterm_on_a_node_drains_it_and_new_rooms_go_to_the_other_node(redis_url, tmp_path):
    nodes = [
        NodeProcess(workers=2, redis_url=redis_url, node_id=f"d{i}", log_dir=tmp_path, SFU_SHUTDOWN_GRACE_S="8")
        for i in range(2)
    ]
    clients = []
    try:
        for node in nodes:
            node.start()
        await asyncio.gather(*(node.wait_ready() for node in nodes))
        await eventually_async(lambda: _sees_all(nodes), 20)
        a_node, b_node = nodes
        # Node B's workers each carry a publisher; one of node A's is idle: by load alone, the
        # next new room would go to node A.
        for room in ("b-load0", "b-load1"):
            clients.append(await joined(b_node.ws_url, room, room, video=False))
            assert (await placed(b_node, room, 1))["node"] == "d1"
        staying = await joined(a_node.ws_url, "on-a", "staying", publish=False)
        clients.append(staying)
        await placed(a_node, "on-a", 1)
        a_node.terminate()
        await staying.wait_type("server-shutdown", timeout=15)

        async def a_draining():
            view = await b_node.node_view()
            return any(n["node"] == "d0" and n["draining"] for n in view["nodes"])

        await eventually_async(a_draining, 10)
        newcomer = await joined(b_node.ws_url, "after-drain", "n", publish=False)
        clients.append(newcomer)
        assert (await placed(b_node, "after-drain", 1))["node"] == "d1", "no new room on a draining node"
        # The drained node's calls end with the grace; it leaves the registry and exits.
        await staying.wait_type("socket-closed", timeout=20)
        await eventually(lambda: not a_node.group_alive(), timeout=30)
        assert a_node.process.returncode == 0

        async def a_gone():
            return [n["node"] for n in (await b_node.node_view())["nodes"]] == ["d1"]

        await eventually_async(a_gone, 10)
    finally:
        await close_all(clients)
        for node in nodes:
            node.cleanup()

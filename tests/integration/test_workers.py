"""One host, several worker processes, no Redis: ``python -m sfu --workers 2`` as a real
process. Calls go through the front's relay, rooms spread over the workers, a burst of joins to
one new room lands on one worker, and a worker killed mid-call is restarted while the other
worker's room goes on."""

import asyncio
import os
import signal
import time

import aiohttp
import pytest

from sfu.client import Participant
from tests.cluster_nodes import NodeProcess, TimedParticipant, close_all, close_code, eventually_async, joined, placed
from tests.conftest import eventually

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
async def node(tmp_path):
    node = NodeProcess(workers=2, log_dir=tmp_path)
    node.start()
    try:
        await node.wait_ready()
        yield node
    finally:
        node.cleanup()


async def test_two_clients_get_each_others_media_through_the_front_and_rooms_spread_over_workers(node):
    a = await joined(node.ws_url, "call", "a")
    b = await joined(node.ws_url, "call", "b")
    others = [await joined(node.ws_url, f"room{i}", f"o{i}", publish=False) for i in range(3)]
    try:
        await eventually(
            lambda: a.received_from(b.id, "video") > 50 and b.received_from(a.id, "audio") > 50, timeout=30
        )
        assert a.id.split("-")[0] == b.id.split("-")[0], "one room, one worker: one id prefix"
        entry = await placed(node, "call", 2)
        assert {m["id"] for m in entry["members"]} == {a.id, b.id}
        assert entry["node"] == node.node_id
        workers = {entry["worker"]} | {(await placed(node, f"room{i}", 1))["worker"] for i in range(3)}
        assert workers == {f"{node.node_id}/0", f"{node.node_id}/1"}, "rooms spread over both workers"
        view = await node.node_view()
        loads = {w["worker"]: w["load"] for w in view["workers"]}
        assert sum(len(load["rooms"]) for load in loads.values()) == 4
        assert all(load["rooms"] for load in loads.values())
    finally:
        await close_all([a, b, *others])


async def test_twenty_clients_joining_one_new_room_at_once_land_in_one_room_on_one_worker(node):
    clients = [Participant(node.ws_url, "burst", f"c{i}") for i in range(20)]
    try:
        await asyncio.gather(*(c.join() for c in clients))
        assert len({c.id.split("-")[0] for c in clients}) == 1, [c.id for c in clients]
        entry = await placed(node, "burst", 20)
        assert {m["id"] for m in entry["members"]} == {c.id for c in clients}
        # Everyone is in the same room: the last to join was told about the nineteen others.
        last = max(clients, key=lambda c: len(c.joined["participants"]))
        assert len(last.joined["participants"]) == 19
        view = await node.node_view()
        hosting = [w for w in view["workers"] if any(r["room"] == "burst" for r in w["load"]["rooms"])]
        assert len(hosting) == 1
    finally:
        await close_all(clients)


async def test_first_messages_without_a_room_and_bad_input_are_answered_by_the_front(node):
    async with aiohttp.ClientSession() as http, http.ws_connect(node.ws_url) as ws:
        await ws.send_str('{"type": "ping"}')
        assert (await ws.receive_json(timeout=10)) == {"type": "pong"}
        await ws.send_str('{"type": "chat", "text": "hi"}')
        msg = await ws.receive_json(timeout=10)
        assert msg["type"] == "error" and msg["code"] == "not-joined"
        await ws.send_str("not json")
        assert (await ws.receive_json(timeout=10))["code"] == "bad-json"
        await ws.send_bytes(b"\x00\x01")
        assert (await ws.receive_json(timeout=10))["code"] == "bad-json"
        await ws.send_str('{"type": "join", "room": "no spaces allowed", "name": "x"}')
        assert (await ws.receive_json(timeout=10))["code"] == "bad-message"
        await ws.send_str('{"type": "ping", "pad": "' + "x" * 70000 + '"}')
        assert (await ws.receive_json(timeout=10))["code"] == "too-large"
        await ws.send_str('{"type": "join", "room": "ok-after-all", "name": "late"}')
        msg = await ws.receive_json(timeout=20)
        assert msg["type"] == "joined" and msg["room"] == "ok-after-all"
    async with aiohttp.ClientSession() as http:
        # A bad token in the URL is refused before the upgrade, as by a single server.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(node.ws_url + "?token=not-a-token")
        assert refused.value.status == 401
        # A frame past 4 x max_message_bytes closes the socket (1009); the front goes on.
        async with http.ws_connect(node.ws_url) as ws:
            await ws.send_str("x" * (4 * 65536 + 10))
            closed = await ws.receive(timeout=10)
            assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1009
        async with http.get(node.url + "/healthz") as r:
            assert r.status == 200


async def test_worker_killed_mid_call_is_restarted_its_clients_rejoin_and_the_other_room_does_not_stall(node):
    a1 = await joined(node.ws_url, "doomed", "a1", video=False)
    a2 = await joined(node.ws_url, "doomed", "a2", video=False)
    doomed = await placed(node, "doomed", 2)
    b1 = await joined(node.ws_url, "steady", "b1", video=False)
    b2 = await joined(node.ws_url, "steady", "b2", video=False, cls=TimedParticipant)
    clients = [a1, a2, b1, b2]
    try:
        steady = await placed(node, "steady", 2)
        assert steady["worker"] != doomed["worker"], "the second room goes to the other, idle worker"
        await eventually(lambda: b2.received_from(b1.id, "audio") > 50, timeout=30)
        pid = await node.worker_pid(doomed["worker"])
        killed_s = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        # Its participants' sockets close with a clear code (1012, service restart) and reason.
        for client in (a1, a2):
            await client.wait_type("socket-closed", timeout=10)
            assert close_code(client) == 1012
        # Rejoin within 10 s of the kill (placed anew), with media.
        r1 = await joined(node.ws_url, "doomed", "r1", video=False)
        r2 = await joined(node.ws_url, "doomed", "r2", video=False)
        clients += [r1, r2]
        await eventually(lambda: r2.received_from(r1.id, "audio") > 10, timeout=10)
        assert time.monotonic() - killed_s < 10

        # The front restarted the worker.
        async def restarted():
            view = await node.node_view()
            w = next(w for w in view["workers"] if w["worker"] == doomed["worker"])
            return w["ready"] and w["restarts"] >= 1 and w["pid"] != pid

        await eventually_async(restarted, 30)
        # The other worker's room had no stall over a second around the kill.
        await asyncio.sleep(2)
        gap_s = b2.longest_gap_s(b1.id, killed_s - 1, time.monotonic())
        assert gap_s < 1.0, f"media stalled {gap_s:.2f} s in the room on the other worker"
    finally:
        await close_all(clients)


async def test_sigterm_drains_the_node_tells_clients_and_exits(node):
    a = await joined(node.ws_url, "drain", "a", publish=False)
    try:
        await placed(node, "drain", 1)
        node.terminate()
        msg = await a.wait_type("server-shutdown", timeout=15)
        assert msg["grace_s"] == 2
        await a.wait_type("socket-closed", timeout=15)
        assert close_code(a) == 1001
        await eventually(lambda: not node.group_alive(), timeout=30)
        assert node.process.returncode == 0
    finally:
        await a.close()


async def test_operations_metrics_labels_admin_forwarding_and_guarded_internal_endpoints(node):
    from tests.cluster_nodes import admin_headers

    a = await joined(node.ws_url, "ops", "a", publish=False)
    b = await joined(node.ws_url, "ops", "b", publish=False)
    try:
        entry = await placed(node, "ops", 2)
        view = await node.node_view()
        worker = next(w for w in view["workers"] if w["worker"] == entry["worker"])
        async with aiohttp.ClientSession() as http:
            # The workers' internal address refuses whoever lacks the deployment's secret.
            for path in ("/internal/load", "/admin/rooms", "/metrics"):
                async with http.get(worker["url"] + path, headers=admin_headers()) as r:
                    assert r.status == 403 and (await r.json())["code"] == "forbidden", path
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(worker["url"] + "/ws")
            assert refused.value.status == 403
            async with http.get(worker["url"] + "/healthz") as r:
                assert r.status == 200
            # /metrics: every worker's series with node and worker labels, and the node's gauges.
            async with http.get(node.url + "/metrics") as r:
                assert r.status == 401, "the front checks the admin token as a single server does"
            async with http.get(node.url + "/metrics", headers=admin_headers()) as r:
                text = await r.text()
            label = f'node="{node.node_id}",worker="{entry["worker"]}"'
            assert f'sfu_room_participants{{node="{node.node_id}",room="ops",worker="{entry["worker"]}"}} 2.0' in text
            assert f'sfu_node_workers{{node="{node.node_id}"}} 2.0' in text
            assert f"sfu_worker_participants{{{label}}} 2.0" in text
            assert "sfu_worker_cpu_percent{" in text and "sfu_worker_tracks{" in text
            # The room's details and a kick, through the front, done by the worker hosting it.
            async with http.get(node.url + "/admin/rooms/ops", headers=admin_headers("ops")) as r:
                details = await r.json()
            assert {p["id"] for p in details["participants"]} == {a.id, b.id}
            async with http.get(node.url + "/admin/rooms/nowhere", headers=admin_headers()) as r:
                assert r.status == 404 and (await r.json())["code"] == "not-found"
            async with http.delete(node.url + f"/admin/rooms/ops/participants/{b.id}", headers=admin_headers()) as r:
                assert r.status == 200 and (await r.json())["kicked"] == b.id
            error = await b.wait_type("error")
            assert error["code"] == "kicked"
            await b.wait_type("socket-closed")
            assert close_code(b) == 1008, "the worker's close code passes through the relay"
            left = await a.wait_for(lambda m: m["type"] == "participant-left")
            assert left["reason"] == "kicked"
    finally:
        await close_all([a, b])


async def test_a_new_room_past_every_workers_limit_gets_no_capacity_and_running_rooms_still_take_joins(tmp_path):
    node = NodeProcess(workers=2, log_dir=tmp_path, SFU_MAX_TRACKS_PER_WORKER="1")
    node.start()
    clients = []
    try:
        await node.wait_ready()
        # One publisher per room: one track in, each worker at its limit of one.
        for room in ("full0", "full1"):
            clients.append(await joined(node.ws_url, room, room, video=False))
            await placed(node, room, 1)

        async def loads_reported():
            view = await node.node_view()
            return all(w["load"] and w["load"]["tracks"] >= 1 for w in view["workers"])

        await eventually_async(loads_reported, 20)
        late = Participant(node.ws_url, "one-too-many", "late")
        clients.append(late)
        await late.connect()
        await late.send({"type": "join", "room": "one-too-many", "name": "late"})
        error = await late.wait_type("error", timeout=15)
        assert error["code"] == "no-capacity" and error["request"] == "join"
        await late.wait_type("socket-closed")
        assert close_code(late) == 1013
        # A room that runs is joined where it is, whatever the limits.
        clients.append(await joined(node.ws_url, "full0", "guest", publish=False))
    finally:
        await close_all(clients)
        node.cleanup()

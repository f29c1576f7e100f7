"""After participants join, publish, watch and leave (politely, closing their socket, or
dropping the connection), nothing of them stays alive in the server: no Participant, Producer,
Consumer, peer, RTCPeerConnection, room or task; the memory diagnostics endpoint says the same
and is guarded like the rest of the admin API."""

import asyncio
import gc

import aiohttp

from sfu import auth
from sfu.app import ROOMS_KEY
from sfu.client import Participant
from sfu.debug import TRACKED, object_counts
from tests.conftest import eventually, start_server

SECRET = "churn-test-secret-0123456789abcdef"


def token(identity, room, grants):
    return auth.mint(SECRET, identity, room, grants, 600)


async def leave(p, how):
    if how == "drop":  # the TCP connection vanishes, no WebSocket close frame
        p._ws._conn.transport.abort()
    await p.close(leave=how == "leave")


async def one_round(server, n, how):
    room = f"churn-{n % 2}"
    pub = Participant(server.ws_url, room, f"pub{n}", token=token(f"pub{n}", room, ["publish", "subscribe"]))
    viewer = Participant(server.ws_url, room, f"view{n}", token=token(f"view{n}", room, ["subscribe"]))
    await pub.join()
    await pub.publish()
    await viewer.join()
    await eventually(lambda: viewer.received_from(pub.id, "video") > 5, timeout=20)
    await leave(pub, how)
    await leave(viewer, "leave" if how != "leave" else "close")


async def metrics(session, url, admin):
    async with session.get(f"{url}/metrics", headers={"Authorization": f"Bearer {admin}"}) as r:
        text = await r.text()
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#") and "{" not in line
    }


async def test_no_participant_peer_or_connection_object_survives_churn():
    server = await start_server(auth_secret=SECRET, heartbeat_interval_s=1.0)
    admin = token("admin", auth.ANY_ROOM, ["admin"])
    try:
        async with aiohttp.ClientSession() as http:
            idle_tasks = (await metrics(http, server.url, admin))["sfu_asyncio_tasks"]
            for n, how in enumerate(("leave", "close", "drop", "leave", "drop", "close")):
                await one_round(server, n, how)
            await eventually(lambda: not server.app[ROOMS_KEY].rooms, timeout=20)

            def nothing_left():
                gc.collect()
                return not any(object_counts().values())

            await eventually(nothing_left, timeout=20, interval=0.5)
            async with http.get(f"{server.url}/admin/debug/memory", headers={"Authorization": f"Bearer {admin}"}) as r:
                assert r.status == 200
                report = await r.json()
            assert set(report["objects"]) == set(TRACKED)
            assert not any(report["objects"].values()), report["objects"]
            m = await metrics(http, server.url, admin)
            assert m["sfu_participants"] == 0 and m["sfu_rooms"] == 0
            assert m["sfu_peer_connections"] == 0
            assert m["sfu_asyncio_tasks"] <= idle_tasks
    finally:
        await server.runner.cleanup()


async def test_gauges_count_open_peer_connections_and_tasks():
    server = await start_server(auth_secret=SECRET, heartbeat_interval_s=1.0)
    admin = token("admin", auth.ANY_ROOM, ["admin"])
    try:
        async with aiohttp.ClientSession() as http:
            pub = Participant(server.ws_url, "g", "pub", token=token("pub", "g", ["publish", "subscribe"]))
            viewer = Participant(server.ws_url, "g", "view", token=token("view", "g", ["subscribe"]))
            await pub.join()
            await pub.publish()
            await viewer.join()
            await eventually(lambda: viewer.received_from(pub.id, "video") > 5, timeout=20)
            m = await metrics(http, server.url, admin)
            assert m["sfu_peer_connections"] == 2  # the publisher's and the viewer's subscribe connection
            assert m["sfu_asyncio_tasks"] > 0
            await pub.close()
            await viewer.close()
            await eventually(lambda: not server.app[ROOMS_KEY].rooms, timeout=20)
            m = await metrics(http, server.url, admin)
            assert m["sfu_peer_connections"] == 0
    finally:
        await server.runner.cleanup()


async def test_memory_diagnostics_need_an_admin_token_for_every_room():
    server = await start_server(auth_secret=SECRET)
    url = f"{server.url}/admin/debug/memory"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as r:
                assert r.status == 401
            one_room = token("a", "r", ["admin"])
            async with http.get(url, headers={"Authorization": f"Bearer {one_room}"}) as r:
                assert r.status == 401
            no_admin = token("b", auth.ANY_ROOM, ["subscribe"])
            async with http.get(url, headers={"Authorization": f"Bearer {no_admin}"}) as r:
                assert r.status == 403
            admin = token("c", auth.ANY_ROOM, ["admin"])
            async with http.get(url + "?top=x", headers={"Authorization": f"Bearer {admin}"}) as r:
                assert r.status == 400 and (await r.json())["code"] == "bad-message"
            async with http.get(url + "?trim=1", headers={"Authorization": f"Bearer {admin}"}) as r:
                assert r.status == 200
                body = await r.json()
            assert body["rss_bytes"] > 0 and "rss_after_trim_bytes" in body and body["tasks"] > 0
    finally:
        await server.runner.cleanup()
        await asyncio.sleep(0)


async def test_memory_diagnostics_report_python_heap_growth_when_tracing(monkeypatch):
    import tracemalloc

    monkeypatch.setenv("SFU_TRACEMALLOC", "1")
    server = await start_server(auth_secret=SECRET)
    admin = {"Authorization": f"Bearer {token('c', auth.ANY_ROOM, ['admin'])}"}
    kept = []
    try:
        assert tracemalloc.is_tracing()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/admin/debug/memory", headers=admin) as r:
                first = (await r.json())["tracemalloc"]
            kept.append([bytearray(1000) for _ in range(2000)])  # about 2 MB that stays
            async with http.get(f"{server.url}/admin/debug/memory?top=5", headers=admin) as r:
                second = (await r.json())["tracemalloc"]
        assert second["traced_bytes"] - first["traced_bytes"] > 1_500_000
        assert 0 < len(second["growth_since_previous"]) <= 5
        top = second["growth_since_previous"][0]
        assert "test_churn_leaves_nothing.py:" in top["where"]  # the line that allocated it
        assert top["size_diff_bytes"] > 1_500_000
    finally:
        tracemalloc.stop()
        await server.runner.cleanup()

"""Operations: Prometheus metrics of a running call, the admin API (kick, close a room),
graceful shutdown of a real server process, TURN credentials, ICE port range and announced
address."""

import asyncio
import base64
import hashlib
import hmac
import os
import re
import signal
import sys
import time

import aiohttp
from aiortc import sdp as aiortc_sdp

from sfu import auth
from sfu.app import ROOMS_KEY
from sfu.client import Participant
from tests.conftest import eventually, free_port, settled, start_server

SECRET = "ops-secret-" + "z" * 40


def admin_headers(room: str = "*") -> dict[str, str]:
    return {"Authorization": "Bearer " + auth.mint(SECRET, "ops", room, {"admin"}, 600)}


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with http.get(url + "/metrics", headers=admin_headers()) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return parse_metrics(await resp.text())


async def test_metrics_reflect_a_running_call_and_never_go_backwards():
    srv = await start_server(auth_secret=SECRET, heartbeat_interval_s=1.0)
    tok = lambda who: auth.mint(SECRET, who, "m", {"publish", "subscribe"}, 600)  # noqa: E731
    a, b = Participant(srv.ws_url, "m", "a", token=tok("a")), Participant(srv.ws_url, "m", "b", token=tok("b"))
    try:
        for p in (a, b):
            await p.join()
            await p.publish()
        await eventually(lambda: a.received_from(b.id, "video") > 60 and b.received_from(a.id, "video") > 60, 15)
        async with aiohttp.ClientSession() as http:
            # Bad input shows up in the error counter.
            async with http.ws_connect(srv.ws_url) as ws:
                await ws.send_str("{oops")
                assert (await ws.receive_json(timeout=5))["code"] == "bad-json"
            first = await scrape(http, srv.url)
            # The counters move on and the rate gauges (measured over the last interval) show
            # the call; on a busy machine that can take a few scrapes.
            deadline = asyncio.get_running_loop().time() + 15
            while True:
                await asyncio.sleep(1.0)
                m = await scrape(http, srv.url)
                if (
                    m["sfu_packets_received_total"] > max(200, first["sfu_packets_received_total"])
                    and m["sfu_bytes_received_total"] > 50_000
                    and m["sfu_bitrate_in_bps"] > 100_000
                    and m["sfu_bitrate_out_bps"] > 100_000
                ) or asyncio.get_running_loop().time() > deadline:
                    break
            print({k: v for k, v in m.items() if not k.startswith(("python_", "process_"))})
            assert m["sfu_rooms"] == 1 and m["sfu_participants"] == 2
            assert m['sfu_room_participants{room="m"}'] == 2
            assert m['sfu_producers{kind="audio"}'] == 2 and m['sfu_producers{kind="video"}'] == 2
            assert m["sfu_consumers"] == 4
            assert m["sfu_packets_received_total"] > 200 and m["sfu_bytes_received_total"] > 50_000
            # Every packet received is forwarded to the one other participant (loopback: no loss).
            assert m["sfu_packets_forwarded_total"] >= 0.9 * m["sfu_packets_received_total"] - 200
            assert m["sfu_packets_received_total"] > first["sfu_packets_received_total"]
            assert m["sfu_keyframe_requests_total"] >= 2  # one per new video consumer at least
            # Loopback loses nothing: loss repair is counted, and idle.
            assert m["sfu_upstream_nacks_total"] == 0 and m["sfu_retransmissions_total"] == 0
            assert m["sfu_bitrate_in_bps"] > 100_000 and m["sfu_bitrate_out_bps"] > 100_000
            assert m['sfu_errors_total{code="bad-json"}'] == 1
            assert m["sfu_joins_total"] == 2
            # b leaves: gauges drop, totals keep what b's streams counted.
            await b.close()
            await eventually(lambda: len(srv.app[ROOMS_KEY].rooms["m"].participants) == 1)
            after = await scrape(http, srv.url)
            assert after["sfu_participants"] == 1 and after["sfu_consumers"] == 0
            for counter in (
                "sfu_packets_received_total",
                "sfu_bytes_received_total",
                "sfu_packets_forwarded_total",
                "sfu_keyframe_requests_total",
            ):
                assert after[counter] >= m[counter], counter
    finally:
        await a.close()
        await b.close()
        await srv.runner.cleanup()


async def test_admin_lists_kicks_and_closes_and_the_others_see_it():
    srv = await start_server(auth_secret=SECRET, heartbeat_interval_s=1.0)
    tok = lambda who, room="k": auth.mint(SECRET, who, room, {"publish", "subscribe"}, 600)  # noqa: E731
    alice = Participant(srv.ws_url, "k", "alice", token=tok("alice"))
    bob = Participant(srv.ws_url, "k", "bob", token=tok("bob"))
    carol = Participant(srv.ws_url, "k", "carol", token=tok("carol"))
    dave = Participant(srv.ws_url, "other", "dave", token=tok("dave", "other"))
    try:
        for p in (alice, bob, carol, dave):
            await p.join()
        await bob.publish()
        await eventually(lambda: alice.received_from(bob.id, "video") > 10, timeout=15)
        async with aiohttp.ClientSession() as http:
            async with http.get(srv.url + "/admin/rooms", headers=admin_headers()) as r:
                rooms = {x["name"]: x["participants"] for x in (await r.json())["rooms"]}
            assert rooms == {"k": 3, "other": 1}
            async with http.get(srv.url + "/admin/rooms/k", headers=admin_headers("k")) as r:
                listed = {p["identity"]: p for p in (await r.json())["participants"]}
            assert set(listed) == {"alice", "bob", "carol"}
            assert {t["kind"] for t in listed["bob"]["tracks"]} == {"audio", "video"}
            # Loss repair counters: upstream per published track, downstream per consumer.
            repair = {t["track"]: t for t in listed["bob"]["publisher"]["tracks"]}
            video = next(t["id"] for t in listed["bob"]["tracks"] if t["kind"] == "video")
            assert repair[video]["rtx_negotiated"] and "nacks_sent" in repair[video]["layers"][0]
            consumers = listed["alice"]["subscriber"]["consumers"]
            assert consumers and all("rtx_sent" in c and "nacks_forwarded" in c for c in consumers)

            # Kick bob: he is told and disconnected, the others see him leave as "kicked".
            url = f"{srv.url}/admin/rooms/k/participants/{bob.id}"
            async with http.delete(url, headers=admin_headers("k")) as r:
                assert r.status == 200 and (await r.json())["kicked"] == bob.id
            err = await bob.wait_type("error")
            assert err["code"] == "kicked"
            await bob.wait_type("socket-closed")
            for p in (alice, carol):
                left = await p.wait_for(lambda m: m["type"] == "participant-left" and m["id"] == bob.id)
                assert left["reason"] == "kicked"
            # Bob's media stops reaching alice (what was on its way arrives, then nothing).
            before = await settled(lambda: alice.received_from(bob.id, "video"))
            await asyncio.sleep(1.0)
            assert alice.received_from(bob.id, "video") == before
            assert bob.id not in srv.app[ROOMS_KEY].rooms["k"].participants
            async with http.delete(url, headers=admin_headers("k")) as r:
                assert r.status == 404

            # Close the room: everyone in it is told, the room next door is untouched.
            async with http.delete(srv.url + "/admin/rooms/k", headers=admin_headers()) as r:
                assert set((await r.json())["participants"]) == {alice.id, carol.id}
            for p in (alice, carol):
                assert (await p.wait_type("error"))["code"] == "room-closed"
                await p.wait_type("socket-closed")
            assert set(srv.app[ROOMS_KEY].rooms) == {"other"}
            await dave.send({"type": "ping"})
            await dave.wait_type("pong")
    finally:
        for p in (alice, bob, carol, dave):
            await p.close()
        await srv.runner.cleanup()


async def wait_healthy(url: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url + "/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            assert time.monotonic() < deadline, f"{url} did not come up"
            await asyncio.sleep(0.1)


async def start_process(grace_s: float) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    env = dict(os.environ, SFU_PORT=str(port), SFU_ICE_HOST_ADDRESSES="127.0.0.1", SFU_SHUTDOWN_GRACE_S=str(grace_s))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sfu", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    url = f"http://127.0.0.1:{port}"
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert b"listening" in line
    await wait_healthy(url)
    return proc, url


async def test_sigterm_tells_participants_keeps_serving_them_through_the_grace_and_closes_with_1001(tmp_path):
    proc, url = await start_process(grace_s=8)
    try:
        stayer = Participant(url + "/ws", "d", "stayer")
        leaver = Participant(url + "/ws", "d", "leaver")
        await stayer.join()
        await leaver.join()
        await stayer.publish()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for p in (stayer, leaver):
            msg = await p.wait_type("server-shutdown", timeout=10)
            assert msg["grace_s"] == 8
        # During the grace the server still handles messages: pings, chat ...
        await asyncio.sleep(max(0.0, 2.5 - (time.monotonic() - t0)))  # past the old heartbeat drop
        await stayer.send({"type": "ping"})
        await stayer.wait_type("pong", timeout=10)
        await leaver.send({"type": "chat", "text": "bye"})
        chat = await stayer.wait_for(lambda m: m["type"] == "chat" and m["text"] == "bye", timeout=10)
        assert chat["from"] == leaver.id
        # ... and a leave: the other sees it as a leave, not a lost connection.
        await leaver.close()
        left = await stayer.wait_for(lambda m: m["type"] == "participant-left", timeout=10)
        assert (left["id"], left["reason"]) == (leaver.id, "left")
        # New connections are no longer accepted.
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/healthz") as r:
                assert r.status == 503
            async with http.get(url + "/ws") as r:
                assert r.status == 503 and (await r.json())["code"] == "shutting-down"
        # The one that stays is closed when the grace period (8 s) is over, with 1001 (going away).
        await stayer.wait_type("socket-closed", timeout=30)
        closed_after_s = time.monotonic() - t0
        assert stayer._ws.close_code == 1001
        assert 7.7 < closed_after_s < 20, closed_after_s
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        print(f"SIGTERM: sockets closed after {closed_after_s:.2f}s, exit {time.monotonic() - t0:.2f}s")
        await stayer.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigterm_exits_as_soon_as_the_last_participant_has_left():
    proc, url = await start_process(grace_s=60)
    try:
        a = Participant(url + "/ws", "e", "a")
        b = Participant(url + "/ws", "e", "b")
        await a.join()
        await b.join()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for p in (a, b):
            await p.wait_type("server-shutdown", timeout=5)
        await a.close()
        await b.wait_for(lambda m: m["type"] == "participant-left" and m["reason"] == "left", timeout=5)
        await b.close()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert time.monotonic() - t0 < 30, "the process waited for the grace although everyone had left"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_joined_carries_fresh_coturn_credentials_per_participant():
    srv = await start_server(
        turn_urls=("turn:127.0.0.1:3478?transport=udp", "turns:turn.example.com:443?transport=tcp"),
        turn_secret="coturn-secret",
        turn_ttl_s=3600,
        ice_servers=({"urls": "stun:stun.example.com:3478"},),
    )
    a, b = Participant(srv.ws_url, "t", "a"), Participant(srv.ws_url, "t", "b")
    try:
        ja, jb = await a.join(), await b.join()
        assert ja["ice_servers"][0] == {"urls": "stun:stun.example.com:3478"}
        turn_a, turn_b = ja["ice_servers"][1], jb["ice_servers"][1]
        assert turn_a["urls"] == ["turn:127.0.0.1:3478?transport=udp", "turns:turn.example.com:443?transport=tcp"]
        assert turn_a["username"] != turn_b["username"]
        for entry in (turn_a, turn_b):
            expiry, _, who = entry["username"].partition(":")
            assert who and abs(int(expiry) - (time.time() + 3600)) < 10
            digest = hmac.new(b"coturn-secret", entry["username"].encode(), hashlib.sha1).digest()
            assert entry["credential"] == base64.b64encode(digest).decode()
    finally:
        await a.close()
        await b.close()
        await srv.runner.cleanup()


def candidates(sdp: str) -> list[tuple[str, int, str]]:
    out = []
    for media in aiortc_sdp.SessionDescription.parse(sdp).media:
        for c in media.ice_candidates:
            out.append((c.ip, c.port, c.type))
    return out


async def test_wildcard_bind_with_announced_address_and_port_range_carries_a_call():
    """As in a container: ICE binds 0.0.0.0 in a UDP port range and advertises the announced
    address (127.0.0.1 here, the one the clients can reach)."""
    lo, hi = 41000, 41049
    srv = await start_server(
        ice_host_addresses=("0.0.0.0",), ice_announced_address="127.0.0.1", ice_port_min=lo, ice_port_max=hi
    )
    a, b = Participant(srv.ws_url, "nat", "a"), Participant(srv.ws_url, "nat", "b")
    try:
        await a.join()
        await a.publish()
        await b.join()
        await eventually(lambda: b.received_from(a.id, "video") > 30 and b.received_from(a.id, "audio") > 30, 15)
        room = srv.app[ROOMS_KEY].rooms["nat"]
        for participant in room.participants.values():
            for peer in (participant.publisher, participant.subscriber):
                if peer is None:
                    continue
                found = candidates(peer.pc.localDescription.sdp)
                assert found, "the server's SDP carries its candidates"
                for ip, port, kind in found:
                    assert (ip, kind) == ("127.0.0.1", "host"), found
                    assert lo <= port <= hi, found
    finally:
        await a.close()
        await b.close()
        await srv.runner.cleanup()


async def test_port_range_exhaustion_is_logged_not_fatal(caplog):
    """Every port of a one-port range is taken: gathering yields no host candidate and says so."""
    import socket

    from sfu.rtc import aiortc_glue

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        taken = s.getsockname()[1]
        srv = await start_server(ice_port_min=taken, ice_port_max=taken)
        try:
            pc = aiortc_glue.create_peer_connection()
            pc.addTransceiver("audio", direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            assert not [c for c in candidates(pc.localDescription.sdp) if c[2] == "host"]
            assert re.search(rf"no free UDP port in {taken}-{taken}", caplog.text)
            await pc.close()
        finally:
            await srv.runner.cleanup()

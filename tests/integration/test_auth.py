"""Access tokens on every path: the join message, ?token= on /ws, the admin API and /metrics.

Tampered, expired, wrongly signed, wrong-room and grant-less tokens are refused; a token for
room A never gets into room B.
"""

import asyncio
import base64
import json
import time

import aiohttp
import jwt
import pytest

from sfu import auth
from sfu.client import Participant
from tests.conftest import eventually, start_server

SECRET = "test-secret-" + "x" * 40
ALL = {"publish", "subscribe"}


def token(room="r", identity="alice", grants=ALL, ttl_s=600, secret=SECRET, **kw):
    return auth.mint(secret, identity, room, grants, ttl_s, **kw)


def tampered(value: str, **changes) -> str:
    """The same token with its payload edited and the original signature kept."""
    header, payload, signature = value.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{raw}.{signature}"


def bad_tokens(room: str, grants=ALL) -> dict[str, str]:
    good = token(room, grants=grants)
    return {
        "tampered room": tampered(token("other", grants=grants), room=room),
        "tampered grants": tampered(token(room, grants={"subscribe"}), grants=sorted(grants | {"admin"})),
        "expired": token(room, grants=grants, ttl_s=-60),
        "other secret": token(room, grants=grants, secret="another-secret-" + "y" * 40),
        "alg none": jwt.encode(
            {"sub": "mallory", "room": room, "grants": sorted(grants), "iss": "sfu", "exp": int(time.time()) + 600},
            None,
            algorithm="none",
        ),
        "garbage": "not.a.token",
        "truncated": good[:-5],
    }


@pytest.fixture
async def secured():
    srv = await start_server(auth_secret=SECRET, heartbeat_interval_s=1.0)
    yield srv
    await srv.runner.cleanup()


async def join_raw(ws_url: str, msg: dict) -> dict:
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        await ws.send_json({"type": "join", "name": "x", **msg})
        return await ws.receive_json(timeout=10)


async def test_join_is_refused_without_a_valid_token_for_that_room(secured):
    url = secured.ws_url
    err = await join_raw(url, {"room": "r"})
    assert (err["type"], err["code"], err["request"]) == ("error", "unauthorized", "join")
    for why, value in bad_tokens("r").items():
        err = await join_raw(url, {"room": "r", "token": value})
        assert err["type"] == "error" and err["code"] == "unauthorized", (why, err)
    # A good token for room A does not open room B; the same token opens room A.
    err = await join_raw(url, {"room": "B", "token": token("A")})
    assert err["code"] == "unauthorized" and "not for room" in err["message"]
    joined = await join_raw(url, {"room": "A", "token": token("A")})
    assert joined["type"] == "joined" and joined["room"] == "A"
    # "*" is every room.
    assert (await join_raw(url, {"room": "B", "token": token("*")}))["type"] == "joined"


async def test_a_refused_join_leaves_the_socket_usable_for_a_good_token(secured):
    async with aiohttp.ClientSession() as http, http.ws_connect(secured.ws_url) as ws:
        await ws.send_json({"type": "join", "room": "r", "name": "x", "token": token("r", ttl_s=-60)})
        assert (await ws.receive_json(timeout=10))["code"] == "unauthorized"
        await ws.send_json({"type": "offer", "pc": "publish", "sdp": "v=0\r\n"})
        assert (await ws.receive_json(timeout=10))["code"] == "not-joined"
        await ws.send_json({"type": "join", "room": "r", "name": "x", "token": token("r")})
        assert (await ws.receive_json(timeout=10))["type"] == "joined"
    assert not secured.app[__import__("sfu.app").app.ROOMS_KEY].rooms.get("other")


async def test_url_token_is_checked_before_the_websocket_upgrade(secured):
    async with aiohttp.ClientSession() as http:
        for why, value in bad_tokens("r").items():
            async with http.get(secured.ws_url, params={"token": value}) as resp:
                assert resp.status == 401, why
                assert (await resp.json())["code"] == "unauthorized"
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(secured.ws_url + "?token=" + value)
            assert info.value.status == 401
        # A good URL token admits the join it names, and only that room.
        async with http.ws_connect(secured.ws_url + "?token=" + token("A")) as ws:
            await ws.send_json({"type": "join", "room": "B", "name": "x"})
            assert (await ws.receive_json(timeout=10))["code"] == "unauthorized"
            await ws.send_json({"type": "join", "room": "A", "name": "x"})
            assert (await ws.receive_json(timeout=10))["type"] == "joined"


async def test_token_name_and_identity_are_what_others_see(secured):
    a = Participant(secured.ws_url, "names", "whatever", token=token("names", identity="u-1", name="Alice"))
    b = Participant(secured.ws_url, "names", "bob", token=token("names", identity="u-2"))
    try:
        await a.join()
        joined = await b.join()
        assert joined["participants"][0]["name"] == "Alice"
        room = secured.app[__import__("sfu.app").app.ROOMS_KEY].rooms["names"]
        assert {p.identity for p in room.participants.values()} == {"u-1", "u-2"}
    finally:
        await a.close()
        await b.close()


async def test_without_publish_an_offer_is_forbidden_and_without_subscribe_nothing_is_offered(secured):
    publisher = Participant(secured.ws_url, "g", "pub", token=token("g", identity="pub", grants={"publish"}))
    viewer = Participant(secured.ws_url, "g", "viewer", token=token("g", identity="viewer", grants={"subscribe"}))
    try:
        await publisher.join()
        await viewer.join()
        # The viewer may not publish ...
        with pytest.raises(RuntimeError, match="publish failed"):
            await viewer.publish()
        err = await viewer.wait_type("error")
        assert (err["code"], err["request"]) == ("forbidden", "offer")
        await viewer.send({"type": "mute", "track": "x", "muted": True})
        await viewer.wait_for(lambda m: m.get("code") == "forbidden" and m.get("request") == "mute")
        # ... but receives; the publisher publishes but is offered nothing to receive.
        await publisher.publish()
        await eventually(lambda: viewer.received_from(publisher.id, "video") > 20, timeout=15)
        await asyncio.sleep(0.5)
        assert not [m for m in publisher.messages if m["type"] == "offer"]
        assert publisher.subscribe_pc is None
        await publisher.send({"type": "subscription", "track": f"{viewer.id}-0", "max_height": 180})
        err = await publisher.wait_for(lambda m: m.get("request") == "subscription")
        assert err["code"] == "forbidden"
        # Nothing was published by the viewer: the room knows one publisher's tracks only.
        room = secured.app[__import__("sfu.app").app.ROOMS_KEY].rooms["g"]
        assert room.participants[viewer.id].publisher is None
    finally:
        await publisher.close()
        await viewer.close()


async def test_admin_api_and_metrics_refuse_bad_tokens_wrong_rooms_and_missing_grants(secured):
    base = secured.url
    a = Participant(secured.ws_url, "A", "a", token=token("A"))
    await a.join()
    admin_a = token("A", identity="ops", grants={"admin"})
    admin_all = token("*", identity="ops", grants={"admin"})
    try:
        async with aiohttp.ClientSession() as http:

            async def status(method, path, value):
                headers = {"Authorization": f"Bearer {value}"} if value is not None else {}
                async with http.request(method, base + path, headers=headers) as resp:
                    body = await resp.text()
                    return resp.status, (json.loads(body)["code"] if resp.status >= 400 else body)

            paths = [
                ("GET", "/admin/rooms"),
                ("GET", "/admin/rooms/A"),
                ("DELETE", f"/admin/rooms/A/participants/{a.id}"),
                ("DELETE", "/admin/rooms/A"),
                ("GET", "/metrics"),
            ]
            for method, path in paths:
                assert await status(method, path, None) == (401, "unauthorized"), path
                for why, value in bad_tokens("*", grants={"admin"}).items():
                    assert await status(method, path, value) == (401, "unauthorized"), (path, why)
                # A valid token without the admin grant.
                assert await status(method, path, token("*", grants={"publish", "subscribe"})) == (
                    403,
                    "forbidden",
                ), path
            # An admin of room B has no say in room A, nor over the whole server.
            admin_b = token("B", identity="ops", grants={"admin"})
            for method, path in paths[1:]:
                assert (await status(method, path, admin_b))[0] == 401, path
            assert (await status("GET", "/admin/rooms", admin_b)) == (200, '{"rooms": []}')
            # The room's own admin sees it; /metrics needs an admin of every room.
            assert (await status("GET", "/admin/rooms/A", admin_a))[0] == 200
            assert (await status("GET", "/metrics", admin_a))[0] == 401
            assert (await status("GET", "/metrics", admin_all))[0] == 200
            assert (await status("GET", "/admin/rooms/nope", admin_all)) == (404, "not-found")
            # After all that, a is still in the room.
            assert a.id in secured.app[__import__("sfu.app").app.ROOMS_KEY].rooms["A"].participants
    finally:
        await a.close()


async def test_tokens_are_refused_by_a_server_without_a_secret(server):
    err = await join_raw(server.ws_url, {"room": "r", "token": token("r")})
    assert err["code"] == "unauthorized"
    headers = {"Authorization": "Bearer " + token("*")}
    async with aiohttp.ClientSession() as http, http.get(server.url + "/admin/rooms", headers=headers) as r:
        assert r.status == 401

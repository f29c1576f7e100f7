"""WHIP ingest and WHEP playback through the real server, with aiortc clients that speak the
HTTP side as RFC 9725 has it; and every status a client gets when it gets something wrong."""

from __future__ import annotations

import asyncio
import collections
import json
import random

import pytest
from aiortc import RTCRtpReceiver

from sfu import auth
from sfu.app import MEDIA_SESSIONS_KEY, ROOMS_KEY, drain
from sfu.client import Participant
from sfu.media.seq import seq_diff
from sfu.rtc import aiortc_glue as glue
from tests.cluster_nodes import SECRET as CLUSTER_TEST_SECRET
from tests.cluster_nodes import NodeProcess, joined
from tests.conftest import eventually, start_server
from tests.whip_clients import play_offer, publish_offer, request, settle_connected, whep_play, whip_publish

pytestmark = pytest.mark.timeout(90)

SECRET = "whip-secret-" + "w" * 40


def token(identity: str, room: str, grants: set[str], name: str | None = None) -> str:
    return auth.mint(SECRET, identity, room, grants, 600, name=name)


async def test_a_whip_publisher_is_a_participant_that_others_receive_and_that_receives_nothing(server):
    bob = Participant(server.ws_url, "studio", "bob")
    await bob.join()
    await bob.publish_rtp(audio=True, video=True)
    whip = await whip_publish(server.url, "studio", query="?name=OBS")
    try:
        assert whip.reply.status == 201, whip.reply.text
        joined = await bob.wait_for(lambda m: m.get("type") == "participant-joined", 10)
        assert joined["participant"]["name"] == "OBS"
        whip_id = joined["participant"]["id"]
        published = [
            (await bob.wait_for(lambda m, k=k: m.get("type") == "track-published" and m["track"]["kind"] == k, 10))
            for k in ("audio", "video")
        ]
        assert {m["participant"] for m in published} == {whip_id}
        await settle_connected(whip.pc)
        await eventually(
            lambda: bob.received_from(whip_id, "video") > 30 and bob.received_from(whip_id, "audio") > 30, 15
        )
        # It never receives: no subscribe connection, though bob publishes.
        room = server.app[ROOMS_KEY].rooms["studio"]
        participant = room.participants[whip_id]
        assert participant.subscriber is None and not participant.can("subscribe")
        assert next(m for m in bob.messages if m.get("type") == "joined")["participants"] == []

        first = await whip.delete()
        assert first.status == 200
        left = await bob.wait_for(lambda m: m.get("type") == "participant-left", 10)
        assert left["id"] == whip_id and left["reason"] == "left"
        second = await whip.delete()
        assert second.status == 404 and second.headers["Content-Type"].startswith("text/plain")
        assert not len(server.app[MEDIA_SESSIONS_KEY])
    finally:
        await whip.close()
        await bob.close()


async def test_a_whep_player_follows_the_active_speaker_on_one_stream_without_renegotiating():
    srv = await start_server(heartbeat_interval_s=1.0)
    a, b = Participant(srv.ws_url, "talk", "a"), Participant(srv.ws_url, "talk", "b")
    player = None
    try:
        for p in (a, b):
            await p.join()
            await p.publish_rtp(audio=True, video=True)
        room = srv.app[ROOMS_KEY].rooms["talk"]
        await eventually(lambda: all(len(p.producers()) == 2 for p in room.participants.values()), 10)
        player = await whep_play(srv.url, "talk")
        assert player.reply.status == 201, player.reply.text
        await settle_connected(player.pc)
        (viewer,) = room.viewers.values()
        subscriber = viewer.subscriber
        # Nobody speaks yet: it plays who has published longest.
        assert subscriber.playing("video").participant_id == a.id
        await eventually(lambda: player.packets["video"] > 30 and player.packets["audio"] > 30, 15)
        negotiations = subscriber.negotiations
        metrics = (await request("GET", srv.url + "/metrics")).text
        assert "sfu_viewers 1.0" in metrics and "sfu_participants 2.0" in metrics

        b.set_audio_level(-20)
        await eventually(lambda: room.active_speaker == b.id, 15, interval=0.01)
        loop = asyncio.get_running_loop()
        t_speaker = loop.time()
        await eventually(lambda: subscriber.playing("video").participant_id == b.id, 5)
        consumer = next(c for c in subscriber.consumers() if c.producer is subscriber.playing("video"))
        await eventually(lambda: consumer.current >= 0 and consumer.out.packets_sent > 0, 10, interval=0.01)
        print(f"switched to the new speaker's video {loop.time() - t_speaker:.3f} s after the speaker changed")
        assert subscriber.playing("audio").participant_id == b.id
        b_video = subscriber.playing("video")
        switched_at = player.packets["video"]
        # The new source was asked for a keyframe, and the player goes on receiving, on the
        # same SSRC, with sequence numbers that go on (one stream, no renegotiation).
        assert b_video.keyframe_requests_sent > 0
        await eventually(lambda: player.packets["video"] > switched_at + 60, 15)
        assert subscriber.negotiations == negotiations == 1
        jumps = [seq_diff(y, x) for x, y in zip(player.video_seqs, player.video_seqs[1:], strict=False)]
        assert max(jumps) < 50, max(jumps)

        b.set_audio_level(-127)
        a.set_audio_level(-20)
        await eventually(lambda: subscriber.playing("video").participant_id == a.id, 15)

        # The speaker leaves: the player moves to whoever is left.
        await a.close()
        await eventually(
            lambda: subscriber.playing("video") is not None and subscriber.playing("video").participant_id == b.id, 10
        )
        # The viewer is no participant: b never heard of it.
        assert not [
            m for m in b.messages if m.get("type") == "participant-joined" and m["participant"]["id"] == viewer.id
        ]
    finally:
        if player is not None:
            await player.close()
        for p in (a, b):
            await p.close()
        await srv.runner.cleanup()


async def test_a_whep_player_gets_the_simulcast_layer_its_bandwidth_carries(server):
    pub = Participant(server.ws_url, "layers", "pub")
    player = None
    try:
        await pub.join()
        await pub.publish_rtp(audio=True, video=True, simulcast=True, trailer=False)
        room = server.app[ROOMS_KEY].rooms["layers"]
        video = await eventually(
            lambda: next((p for p in room.participants[pub.id].producers() if p.kind == "video"), None)
        )
        player = await whep_play(server.url, "layers")
        assert player.reply.status == 201, player.reply.text
        await settle_connected(player.pc)
        (viewer,) = room.viewers.values()
        consumer = await eventually(
            lambda: next((c for c in viewer.subscriber.consumers() if c.producer is video), None)
        )
        await eventually(lambda: all(layer.bitrate_bps > 0 for layer in video.layers), 15)
        await eventually(lambda: consumer.current == 2, 15)

        async def remb_until(predicate, budget, timeout_s=20.0):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while not predicate():
                assert loop.time() < deadline, (consumer.describe(), [layer.bitrate_bps for layer in video.layers])
                player.send_remb(budget())
                await asyncio.sleep(0.2)

        # A downlink that carries the lowest layer and not the middle one: it steps down.
        low = lambda: int((video.layers[0].bitrate_bps + video.layers[1].bitrate_bps) / 2 + 64_000)  # noqa: E731
        await remb_until(lambda: consumer.current == 0, low)
        before = player.packets["video"]
        await eventually(lambda: player.packets["video"] > before + 20, 10)
        # Plenty again: back on the top layer.
        await remb_until(lambda: consumer.current == 2, lambda: 20_000_000)
    finally:
        if player is not None:
            await player.close()
        await pub.close()


async def test_a_whep_offer_without_the_streams_video_codec_is_refused(server):
    pub = Participant(server.ws_url, "codecs", "pub")
    try:
        await pub.join()
        await pub.publish_rtp(audio=True, video=True)  # VP8
        room = server.app[ROOMS_KEY].rooms["codecs"]
        await eventually(lambda: len(room.participants[pub.id].producers()) == 2, 10)
        pc = glue.create_peer_connection([])
        pc.addTransceiver("audio", direction="recvonly")
        video = pc.addTransceiver("video", direction="recvonly")
        video.setCodecPreferences(
            [c for c in RTCRtpReceiver.getCapabilities("video").codecs if c.mimeType.lower() != "video/vp8"]
        )
        await pc.setLocalDescription(await pc.createOffer())
        try:
            reply = await request(
                "POST", f"{server.url}/whep/codecs", pc.localDescription.sdp, {"Content-Type": "application/sdp"}
            )
        finally:
            await pc.close()
        assert reply.status == 400 and reply.text.startswith("bad-sdp: the stream's video is VP8"), reply.text
        assert not room.viewers
    finally:
        await pub.close()


async def test_a_whep_session_that_never_connects_ends_at_its_deadline():
    srv = await start_server(join_timeout_s=1.0)
    bob = Participant(srv.ws_url, "late", "bob")
    try:
        await bob.join()
        pc, offer = await publish_offer()
        await pc.close()  # it offers and goes away: nobody will connect
        reply = await request("POST", f"{srv.url}/whip/late", offer, {"Content-Type": "application/sdp"})
        assert reply.status == 201
        joined = await bob.wait_for(lambda m: m.get("type") == "participant-joined", 10)
        left = await bob.wait_for(lambda m: m.get("type") == "participant-left", 10)
        assert left["id"] == joined["participant"]["id"] and left["reason"] == "disconnected"
        assert not len(srv.app[MEDIA_SESSIONS_KEY])
        gone = await request("DELETE", srv.url + reply.headers["Location"])
        assert gone.status == 404
    finally:
        await bob.close()
        await srv.runner.cleanup()


async def test_every_wrong_request_gets_the_status_the_rfc_names_with_a_plain_text_reason():
    srv = await start_server(auth_secret=SECRET, room_capacity=2, heartbeat_interval_s=1.0)
    base = srv.url
    sdp_type = {"Content-Type": "application/sdp"}
    publish = token("obs", "show", {"publish"})
    play = token("tv", "show", {"subscribe"})
    pcs = []
    whip = None

    async def expect(status: int, method: str, path: str, body: str = "", headers: dict | None = None) -> None:
        reply = await request(method, base + path, body, headers)
        assert reply.status == status, (method, path, reply.status, reply.text)
        if status >= 400:
            assert reply.headers["Content-Type"].startswith("text/plain"), reply.headers
            assert reply.text.strip() and len(reply.text) < 300, reply.text
        if status == 401:
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")

    try:
        pc, offer = await publish_offer()
        pcs.append(pc)
        bearer = lambda t: {**sdp_type, "Authorization": f"Bearer {t}"}  # noqa: E731
        await expect(401, "POST", "/whip/show", offer, sdp_type)  # no token
        await expect(401, "POST", "/whip/show", offer, {**sdp_type, "Authorization": "Basic b2JzOng="})
        await expect(401, "POST", "/whip/show", offer, bearer("not-a-jwt"))  # wrong token
        await expect(
            401, "POST", "/whip/show", offer, bearer(auth.mint("other-key" * 5, "obs", "show", {"publish"}, 600))
        )
        await expect(401, "POST", "/whip/show", offer, bearer(token("obs", "elsewhere", {"publish"})))  # other room
        await expect(403, "POST", "/whip/show", offer, bearer(play))  # no publish grant
        await expect(403, "POST", "/whep/show", offer, bearer(publish))  # no subscribe grant
        await expect(
            415, "POST", "/whip/show", offer, {"Content-Type": "application/json", "Authorization": f"Bearer {publish}"}
        )
        await expect(415, "POST", "/whip/show", offer, {"Authorization": f"Bearer {publish}"})  # no content type
        await expect(400, "POST", "/whip/show", "v=0\r\nthis is not sdp\r\n", bearer(publish))
        await expect(400, "POST", "/whip/show", "", bearer(publish))
        _, recv_offer = await play_offer()
        await expect(400, "POST", "/whip/show", recv_offer, bearer(publish))  # sends nothing
        await expect(413, "POST", "/whip/show", offer + "a=x:" + "y" * 70000 + "\r\n", bearer(publish))
        await expect(404, "POST", "/whep/show", recv_offer, bearer(play))  # no such room (yet)
        await expect(204, "OPTIONS", "/whip/show")
        options = await request("OPTIONS", base + "/whep/show")
        assert options.headers["Accept-Post"] == "application/sdp"
        assert "POST" in options.headers["Access-Control-Allow-Methods"]
        assert "If-Match" in options.headers["Access-Control-Allow-Headers"]
        assert not len(srv.app[ROOMS_KEY].rooms)  # nothing refused made a room or a participant

        whip = await whip_publish(base, "show", publish)
        assert whip.reply.status == 201, whip.reply.text
        resource = whip.reply.headers["Location"]
        etag = whip.reply.headers["ETag"]
        await expect(404, "POST", "/whep/show/nobody", recv_offer, bearer(play))  # no such participant
        fragment = "a=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n{c}"
        ice = whip.pc.localDescription.sdp
        ufrag = next(line[12:] for line in ice.splitlines() if line.startswith("a=ice-ufrag:"))
        pwd = next(line[10:] for line in ice.splitlines() if line.startswith("a=ice-pwd:"))
        candidate = "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
        body = fragment.format(u=ufrag, p=pwd, c=candidate)

        def frag(**extra: str) -> dict[str, str]:
            return {"Content-Type": "application/trickle-ice-sdpfrag", "Authorization": f"Bearer {publish}", **extra}

        await expect(428, "PATCH", resource, body, frag())  # no If-Match
        await expect(412, "PATCH", resource, body, frag(**{"If-Match": '"stale"'}))  # stale ETag
        await expect(400, "PATCH", resource, body, frag(**{"If-Match": "not-a-tag"}))
        await expect(415, "PATCH", resource, body, {**frag(**{"If-Match": etag}), "Content-Type": "application/sdp"})
        await expect(204, "PATCH", resource, body, frag(**{"If-Match": etag}))
        await expect(204, "PATCH", resource, body + "a=end-of-candidates\r\n", frag(**{"If-Match": f'"x", {etag}'}))
        await expect(400, "PATCH", resource, "this is no fragment", frag(**{"If-Match": etag}))
        restart = fragment.format(u="newufrag", p="newpassword" * 3, c=candidate)
        await expect(422, "PATCH", resource, restart, frag(**{"If-Match": "*"}))  # ICE restart: not supported
        await expect(422, "PATCH", resource, restart, frag(**{"If-Match": etag}))
        # The resource and the session's token: without it, with another identity's.
        await expect(
            401, "PATCH", resource, body, {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": etag}
        )
        other = token("someone-else", "show", {"publish"})
        await expect(403, "DELETE", resource, "", {"Authorization": f"Bearer {other}"})
        # A resource of another session: another room's path, the other kind, a made-up id.
        await expect(
            404,
            "DELETE",
            resource.replace("/whip/show/", "/whip/elsewhere/"),
            "",
            {"Authorization": f"Bearer {publish}"},
        )
        await expect(404, "DELETE", resource.replace("/whip/", "/whep/"), "", {"Authorization": f"Bearer {publish}"})
        await expect(404, "PATCH", "/whip/show/sessions/made-up", body, frag(**{"If-Match": etag}))
        options = await request("OPTIONS", base + resource)
        assert options.status == 204 and options.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"

        # Room full (capacity 2): a WHEP viewer takes the second place.
        viewer = await whep_play(base, "show", play)
        assert viewer.reply.status == 201, viewer.reply.text
        pcs.append(viewer.pc)
        # Another session's ETag on this resource: a precondition that fails.
        await expect(412, "PATCH", resource, body, frag(**{"If-Match": viewer.reply.headers["ETag"]}))
        other_pc, other_offer = await publish_offer()
        pcs.append(other_pc)
        await expect(409, "POST", "/whip/show", other_offer, bearer(token("cam2", "show", {"publish"})))
        await expect(409, "POST", "/whep/show", recv_offer, bearer(token("tv2", "show", {"subscribe"})))

        await expect(200, "DELETE", resource, "", {"Authorization": f"Bearer {publish}"})
        await expect(404, "DELETE", resource, "", {"Authorization": f"Bearer {publish}"})  # twice
        await expect(404, "PATCH", resource, body, frag(**{"If-Match": etag}))
        # Nothing refused disturbed the server: it still serves the room.
        assert srv.app[ROOMS_KEY].rooms["show"].viewers
    finally:
        if whip is not None:
            await whip.close()
        for pc in pcs:
            await pc.close()
        await srv.runner.cleanup()


async def test_the_link_headers_carry_the_same_turn_credentials_as_joined():
    srv = await start_server(
        heartbeat_interval_s=1.0,
        ice_servers=({"urls": "stun:stun.example.org:3478"},),
        turn_urls=("turn:127.0.0.1:3478?transport=udp", "turns:turn.example.org:5349"),
        turn_secret="turn-secret",
    )
    bob = Participant(srv.ws_url, "links", "bob")
    whip = None
    try:
        joined = await bob.join()
        whip = await whip_publish(srv.url, "links")
        assert whip.reply.status == 201
        links = whip.reply.headers.getall("Link")
        assert links[0] == '<stun:stun.example.org:3478>; rel="ice-server"'
        turn_entry = joined["ice_servers"][-1]
        room = srv.app[ROOMS_KEY].rooms["links"]
        identity = next(p.identity for p in room.participants.values() if p.id != bob.id)
        # The same scheme and lifetime as joined's (the identity differs: it is the session's).
        assert turn_entry["username"].split(":")[0][:6] in links[1]
        assert links[1].startswith('<turn:127.0.0.1:3478?transport=udp>; rel="ice-server"; username="')
        assert f':{identity}"' in links[1] and 'credential-type="password"' in links[1]
        assert links[2].startswith("<turns:turn.example.org:5349>")
        await asyncio.sleep(0)
    finally:
        if whip is not None:
            await whip.close()
        await bob.close()
        await srv.runner.cleanup()


def _mangle(text: str, rng: random.Random) -> bytes:
    """One random edit of an SDP offer or fragment: a line dropped, doubled, truncated or
    replaced by junk, a byte flipped, the text cut short."""
    lines = text.split("\r\n")
    i = rng.randrange(len(lines))
    match rng.randrange(7):
        case 0:
            del lines[i]
        case 1:
            lines.insert(i, lines[i])
        case 2:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        case 3:
            lines[i] = rng.choice(["a=", "m=audio 0 x", "a=mid:", "a=group:BUNDLE x x", "c=IN", "=", "a=rtpmap:x"])
        case 4:
            lines[i] = lines[i].replace(" ", "  ", 1).replace(":", "", 1)
        case 5:
            data = bytearray("\r\n".join(lines).encode())
            data[rng.randrange(len(data))] = rng.randrange(256)
            return bytes(data)
        case _:
            return "\r\n".join(lines).encode()[: rng.randrange(len(text))]
    return "\r\n".join(lines).encode()


async def test_mangled_offers_and_fragments_get_client_errors_and_the_server_goes_on(server):
    rng = random.Random(15)
    pc, offer = await publish_offer()
    await pc.close()
    sdp = {"Content-Type": "application/sdp"}
    seen: collections.Counter[int] = collections.Counter()
    for _ in range(120):
        reply = await request("POST", f"{server.url}/whip/fuzz", _mangle(offer, rng), sdp)
        seen[reply.status] += 1
        assert reply.status in (201, 400), (reply.status, reply.text)
        if reply.status == 201:
            assert (await request("DELETE", server.url + reply.headers["Location"])).status == 200
    whip = await whip_publish(server.url, "fuzz")
    try:
        assert whip.reply.status == 201
        resource, etag = whip.reply.headers["Location"], whip.reply.headers["ETag"]
        local = whip.pc.localDescription.sdp.splitlines()
        ufrag = next(line for line in local if line.startswith("a=ice-ufrag:"))
        pwd = next(line for line in local if line.startswith("a=ice-pwd:"))
        fragment = f"{ufrag}\r\n{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n" + (
            "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n"
        )
        headers = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": etag}
        for _ in range(120):
            reply = await request("PATCH", server.url + resource, _mangle(fragment, rng), headers)
            seen[reply.status] += 1
            assert reply.status in (204, 400, 422), (reply.status, reply.text)
        print(f"statuses: {dict(seen)}")
        # The server goes on: the session is alive and a new publisher gets in.
        other = await whip_publish(server.url, "fuzz")
        assert other.reply.status == 201
        await other.delete()
        await other.close()
        assert (await whip.delete()).status == 200
    finally:
        await whip.close()


async def test_shutdown_does_not_wait_its_grace_for_whip_and_whep_sessions():
    srv = await start_server(heartbeat_interval_s=1.0, shutdown_grace_s=30.0)
    cleaned = False
    whip = await whip_publish(srv.url, "bye")
    player = await whep_play(srv.url, "bye")
    try:
        assert whip.reply.status == 201 and player.reply.status == 201
        room = srv.app[ROOMS_KEY].rooms["bye"]
        (publisher,) = room.participants.values()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await drain(srv.app)  # nothing to tell them: no socket
        elapsed = loop.time() - t0
        print(f"drained in {elapsed:.2f} s")
        assert elapsed < 15.0  # half the 30 s grace: it did not wait for them
        refused = await whip_publish(srv.url, "bye")
        assert refused.reply.status == 503 and refused.reply.text.startswith("shutting-down")
        await srv.runner.cleanup()
        cleaned = True
        assert publisher.closed and not room.viewers and not len(srv.app[MEDIA_SESSIONS_KEY])
    finally:
        await whip.close()
        await player.close()
        if not cleaned:
            await srv.runner.cleanup()


async def test_a_second_whip_session_of_the_same_token_replaces_the_first():
    srv = await start_server(auth_secret=SECRET, heartbeat_interval_s=1.0)
    bob = Participant(srv.ws_url, "cam", "bob", token=token("bob", "cam", {"subscribe"}))
    obs = token("obs", "cam", {"publish"}, name="Studio cam")
    first = second = None
    try:
        await bob.join()
        first = await whip_publish(srv.url, "cam", obs)
        joined = await bob.wait_for(lambda m: m.get("type") == "participant-joined", 10)
        assert joined["participant"]["name"] == "Studio cam"  # the token's name
        second = await whip_publish(srv.url, "cam", obs)  # OBS reconnecting
        assert first.reply.status == second.reply.status == 201
        left = await bob.wait_for(lambda m: m.get("type") == "participant-left", 10)
        assert left["id"] == joined["participant"]["id"]
        assert (await first.delete()).status == 404
        room = srv.app[ROOMS_KEY].rooms["cam"]
        assert [p.name for p in room.participants.values() if p.id != bob.id] == ["Studio cam"]
        # Another identity does not replace it.
        third = await whip_publish(srv.url, "cam", token("cam2", "cam", {"publish"}))
        assert third.reply.status == 201 and len(room.participants) == 3
        await third.delete()
        await third.close()
    finally:
        for s in (first, second):
            if s is not None:
                await s.close()
        await bob.close()
        await srv.runner.cleanup()


async def test_an_administrator_sees_kicks_and_closes_whip_and_whep_sessions():
    srv = await start_server(auth_secret=SECRET, heartbeat_interval_s=1.0)
    admin = {"Authorization": "Bearer " + token("ops", "show", {"admin"})}
    whip = await whip_publish(srv.url, "show", token("obs", "show", {"publish"}))
    player = await whep_play(srv.url, "show", token("tv", "show", {"subscribe"}))
    try:
        assert whip.reply.status == 201 and player.reply.status == 201
        view = json.loads((await request("GET", srv.url + "/admin/rooms/show", headers=admin)).text)
        (publisher,) = view["participants"]
        assert publisher["identity"] == "obs" and len(view["viewers"]) == 1
        assert view["viewers"][0]["identity"] == "tv" and view["viewers"][0]["pinned"] is None
        kicked = await request("DELETE", f"{srv.url}/admin/rooms/show/participants/{publisher['id']}", headers=admin)
        assert kicked.status == 200
        assert (await whip.delete()).status == 404
        closed = await request("DELETE", srv.url + "/admin/rooms/show", headers=admin)
        assert closed.status == 200
        assert (await player.delete()).status == 404
        assert not srv.app[ROOMS_KEY].rooms
    finally:
        await whip.close()
        await player.close()
        await srv.runner.cleanup()


@pytest.mark.timeout(150)
async def test_whip_and_whep_through_the_front_of_a_node_with_two_workers(tmp_path):
    """``python -m sfu --workers 2``: the front forwards WHIP and WHEP to the room's worker."""
    node = NodeProcess(workers=2, log_dir=tmp_path)
    node.start()
    bob = whip = player = None
    try:
        await node.wait_ready()
        bob = await joined(node.ws_url, "front", "bob", publish=False)
        publish = auth.mint(CLUSTER_TEST_SECRET, "obs", "front", {"publish"}, 600, name="OBS")
        whip = await whip_publish(node.url, "front", publish)
        assert whip.reply.status == 201, whip.reply.text
        assert whip.reply.headers["Location"].startswith("/whip/front/sessions/") and whip.reply.headers["ETag"]
        assert whip.reply.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
        announced = await bob.wait_for(lambda m: m.get("type") == "participant-joined", 15)
        assert announced["participant"]["name"] == "OBS"  # the same worker as bob's room
        await settle_connected(whip.pc)
        await eventually(lambda: bob.received_from(announced["participant"]["id"], "video") > 30, 20)
        player = await whep_play(node.url, "front")
        assert player.reply.status == 201, player.reply.text
        await settle_connected(player.pc)
        await eventually(lambda: player.packets["video"] > 30 and player.packets["audio"] > 30, 20)
        patch = await request(
            "PATCH",
            whip.location,
            "a=end-of-candidates\r\n",
            {**whip.auth(), "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": whip.reply.headers["ETag"]},
        )
        assert patch.status == 204, patch.text
        assert (await request("PATCH", whip.location, "", whip.auth())).status == 415
        assert (await request("OPTIONS", f"{node.url}/whip/front")).headers["Accept-Post"] == "application/sdp"
        assert (await whip.delete()).status == 200
        assert (await whip.delete()).status == 404
        left = await bob.wait_for(lambda m: m.get("type") == "participant-left", 15)
        assert left["id"] == announced["participant"]["id"]
        missing = await whep_play(node.url, "nowhere")
        assert missing.reply.status == 404 and missing.reply.text.startswith("not-found")
    finally:
        for s in (whip, player):
            if s is not None:
                await s.close()
        if bob is not None:
            await bob.close()
        node.cleanup()

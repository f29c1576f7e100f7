"""One room spread over two workers of a node (``python -m sfu --workers 2`` as a real
process): the publisher on the room's home worker, subscribers placed on the other worker (the
internal headers name the room's home, as the front does for ``participant_placement =
local``), its producers relayed over the media link between the two workers."""

import asyncio
import os
import signal
import time
from typing import Any

import aiohttp
import pytest

from sfu.client import Participant
from sfu.cluster.internal import SECRET_HEADER
from sfu.cluster.span_wire import HOME_URL_HEADER, HOME_WORKER_HEADER, LINKS_PATH, ROOM_HEADER
from tests.cluster_nodes import CLUSTER_SECRET, NodeProcess, admin_headers, close_all, placed
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


async def room_detail(worker_url: str, room: str) -> dict[str, Any]:
    headers = {SECRET_HEADER: CLUSTER_SECRET, **admin_headers()}
    async with aiohttp.ClientSession() as http, http.get(f"{worker_url}/admin/rooms/{room}", headers=headers) as r:
        assert r.status == 200
        data: dict[str, Any] = await r.json()
        return data


async def consumer_layer(worker_url: str, room: str, subscriber: Participant, track: str) -> int | None:
    detail = await room_detail(worker_url, room)
    for p in detail["participants"]:
        if p["id"] == subscriber.id and p["subscriber"]:
            for c in p["subscriber"]["consumers"]:
                if c["track"] == track:
                    return int(c["current_layer"])
    return None


def relayed(link_view: dict[str, Any], track: str) -> dict[str, Any]:
    return next(r for r in link_view["links"][0]["relayed"] if r["track"] == track)


def track_of(participant: Participant, owner: Participant, kind: str) -> str:
    """The id of ``owner``'s track of ``kind``, as ``participant`` was told."""
    for m in [participant.joined or {}, *participant.messages]:
        for p in m.get("participants", []):
            if p["id"] == owner.id:
                for t in p["tracks"]:
                    if t["kind"] == kind:
                        return str(t["id"])
        if m.get("type") == "track-published" and m["participant"] == owner.id and m["track"]["kind"] == kind:
            return str(m["track"]["id"])
    raise AssertionError(f"no {kind} track of {owner.id}")


async def node_with(tmp_path, **env):
    node = NodeProcess(workers=2, log_dir=tmp_path, **env)
    node.start()
    await node.wait_ready()
    return node


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

        # Visible to operators: the front's admin API and /metrics.
        listed = await node.get("/admin/links")
        by_worker = {w["worker"]: w for w in listed["workers"]}
        assert [lk["peer_worker"] for lk in by_worker[home[0]]["links"]] == [other[0]]
        assert by_worker[home[0]]["rooms"]["span"]["peers"] == [other[0]]
        async with (
            aiohttp.ClientSession() as http,
            http.get(node.url + "/metrics", headers=admin_headers()) as r,
        ):
            text = await r.text()
        sent_series = [
            line
            for line in text.splitlines()
            if line.startswith("sfu_link_packets_sent_total{") and f',worker="{home[0]}"' in line
        ]
        assert len(sent_series) == 1 and f'peer_worker="{other[0]}"' in sent_series[0]
        assert float(sent_series[0].rsplit(" ", 1)[1]) > 100
        assert any(
            line.startswith("sfu_link_layers_relayed{") and f',worker="{home[0]}"' in line and line.endswith(" 2.0")
            for line in text.splitlines()
        ), "audio and video, one layer each"
        assert any(line.startswith("sfu_link_rtt_ms{") for line in text.splitlines())
    finally:
        await close_all([*subs, pub])


async def test_a_late_joiner_on_the_other_worker_sees_video_within_a_second(node):
    pub = Participant(node.ws_url, "late", "pub")
    await pub.join()
    await pub.publish_rtp(audio=False, video=True)
    home, other = await home_and_other(node, "late")
    early = placed_on(other[1], "late", "early", home)
    late = placed_on(other[1], "late", "late", home)
    try:
        await early.join()
        await eventually(lambda: early.received_from(pub.id, "video") > 30, timeout=30)
        await late.join()
        # From its subscribe connection being up (ICE and DTLS are the same on one worker) to
        # its first video packet, which starts on a keyframe.
        await eventually(
            lambda: late.subscribe_pc is not None and late.subscribe_pc.connectionState == "connected", timeout=30
        )
        connected_s = time.monotonic()
        await eventually(lambda: late.received_from(pub.id, "video") > 0, timeout=10)
        stream = next(s for s in late.streams.values() if s.kind == "video")
        assert stream.first_packet_s is not None
        waited_s = stream.first_packet_s - connected_s
        print(f"late joiner: first video {waited_s * 1000:.0f} ms after its connection was up")
        assert waited_s < 1.0
        await eventually(lambda: stream.keyframes >= 1, timeout=10)
    finally:
        await close_all([early, late, pub])


async def test_simulcast_layers_switch_across_the_link_and_a_layer_nobody_there_needs_is_not_relayed(node):
    pub = Participant(node.ws_url, "sim", "pub")
    await pub.join()
    await pub.publish_rtp(audio=True, video=True, simulcast=True)
    home, other = await home_and_other(node, "sim")
    sub = placed_on(other[1], "sim", "sub", home)
    try:
        await sub.join()
        video = track_of(sub, pub, "video")
        audio = track_of(sub, pub, "audio")
        await eventually(lambda: sub.received_from(pub.id, "video") > 50, timeout=30)

        async def wait_layer(index):
            deadline = time.monotonic() + 20
            while await consumer_layer(other[1], "sim", sub, video) != index:
                assert time.monotonic() < deadline, f"never on layer {index}"
                await asyncio.sleep(0.2)

        await wait_layer(2)
        # Capped at the lowest layer: it switches down, and then only that layer crosses.
        await sub.send({"type": "subscription", "track": video, "max_height": 100, "paused": False})
        await wait_layer(0)
        # The demand across the link follows (polled: a busy machine may take a while).
        deadline = time.monotonic() + 15
        while (before := relayed(await links(home[1]), video))["layers"] != 1:
            assert time.monotonic() < deadline, f"still relaying {before['layers']} layers"
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # packets of the upper layers already on their way have landed
        before = relayed(await links(home[1]), video)
        await asyncio.sleep(2.0)
        after = relayed(await links(home[1]), video)
        grew = {rid: after["packets_by_layer"][rid] - before["packets_by_layer"][rid] for rid in ("q", "h", "f")}
        assert grew["q"] > 20 and grew["h"] == 0 and grew["f"] == 0, grew
        # And back up: the top layer crosses again and the subscriber moves onto it.
        await sub.send({"type": "subscription", "track": video, "max_height": None, "paused": False})
        await wait_layer(2)
        assert relayed(await links(home[1]), video)["layers"] == 3

        # Paused on that worker: nothing of the track crosses (audio still does).
        await sub.send({"type": "subscription", "track": video, "max_height": None, "paused": True})
        await asyncio.sleep(1.0)
        before = relayed(await links(home[1]), video)
        audio_before = relayed(await links(home[1]), audio)
        assert before["layers"] == 0
        await asyncio.sleep(1.5)
        after = relayed(await links(home[1]), video)
        audio_after = relayed(await links(home[1]), audio)
        assert after["packets_by_layer"] == before["packets_by_layer"]
        assert audio_after["packets_by_layer"]["single"] > audio_before["packets_by_layer"]["single"] + 20
    finally:
        await close_all([sub, pub])


async def test_ten_remote_keyframe_requests_reach_the_publisher_at_most_once_per_500_ms(node):
    pub = Participant(node.ws_url, "pli", "pub")
    await pub.join()
    await pub.publish_rtp(audio=False, video=True)
    home, other = await home_and_other(node, "pli")
    subs = [placed_on(other[1], "pli", f"s{i}", home) for i in range(10)]
    try:
        await asyncio.gather(*(s.join() for s in subs))
        await eventually(lambda: all(s.received_from(pub.id, "video") > 20 for s in subs), timeout=60)
        stream = pub.rtp_streams[0]
        start, t0 = stream.keyframe_requests, time.monotonic()
        sent = 0
        while time.monotonic() - t0 < 3.0:
            for s in subs:
                sent += s.send_pli()
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - t0
        got = stream.keyframe_requests - start
        print(f"{sent} keyframe requests from ten subscribers over {elapsed:.1f} s; {got} reached the publisher")
        assert sent > 200
        assert 1 <= got <= elapsed / 0.5 + 1
    finally:
        await close_all([*subs, pub])


async def test_packets_dropped_on_the_link_are_repaired_by_nack(tmp_path):
    node = await node_with(tmp_path, SFU_LINK_DROP_EVERY="15")
    pub = Participant(node.ws_url, "nack", "pub")
    subs: list[Participant] = []
    try:
        await pub.join()
        await pub.publish_rtp(audio=False, video=True)
        home, other = await home_and_other(node, "nack")
        subs = [placed_on(other[1], "nack", f"s{i}", home) for i in range(2)]
        for s in subs:
            await s.join()
        await eventually(lambda: all(s.received_from(pub.id, "video") > 300 for s in subs), timeout=60)
        await asyncio.sleep(1.0)  # the last repairs arrive
        sent = (await links(home[1]))["links"][0]
        assert sent["dropped_for_test"] > 15
        assert sent["nacks_received"] >= sent["dropped_for_test"] // 2
        assert relayed({"links": [sent]}, track_of(subs[0], pub, "video"))["resent"] > 10
        for s in subs:
            stream = next(x for x in s.streams.values() if x.kind == "video")
            seqs = sorted(stream.seqs)
            span = seqs[-1] - seqs[0] + 1
            missing = span - len(seqs)
            print(
                f"{s.name}: {len(seqs)} of {span} packets, {missing} missing; link dropped {sent['dropped_for_test']}"
            )
            assert missing <= 3, "dropped packets were repaired (a few at the very end may be in flight)"
    finally:
        await close_all([*subs, pub])
        node.cleanup()


async def test_a_killed_worker_s_participants_leave_the_room_and_the_rest_goes_on(node):
    pub = Participant(node.ws_url, "fault", "pub")
    await pub.join()
    await pub.publish_rtp(audio=True, video=True)
    home, other = await home_and_other(node, "fault")
    a = placed_on(other[1], "fault", "a", home)
    b = placed_on(other[1], "fault", "b", home)
    try:
        await a.join()
        await b.join()
        await b.publish_rtp(audio=True, video=True)
        await eventually(
            lambda: a.received_from(pub.id, "video") > 30 and a.received_from(b.id, "video") > 30, timeout=30
        )
        await eventually(lambda: pub.received_from(b.id, "video") > 30, timeout=30)
        pid = await node.worker_pid(home[0])
        killed_s = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        for kind in ("audio", "video"):
            track = track_of(a, pub, kind)
            await a.wait_for(
                lambda m, t=track: m.get("type") == "track-unpublished" and m.get("track") == t, timeout=10
            )
        await a.wait_for(lambda m: m.get("type") == "participant-left" and m.get("id") == pub.id, timeout=10)
        gone_s = time.monotonic() - killed_s
        print(f"the home worker's publisher left the shard {gone_s:.2f} s after the kill")
        assert gone_s < 6.0  # node_ttl_s
        # A and B, on the surviving worker, go on.
        before = a.received_from(b.id, "video")
        await eventually(lambda: a.received_from(b.id, "video") > before + 50, timeout=10)
        assert not any(m.get("type") == "participant-left" and m.get("id") == b.id for m in a.messages)
    finally:
        await close_all([a, b, pub])


async def test_one_active_speaker_for_the_whole_room_across_workers(node):
    pub = Participant(node.ws_url, "talk", "home-speaker")
    await pub.join()
    await pub.publish_rtp(audio=True, video=False)
    pub.set_audio_level(-127)
    home, other = await home_and_other(node, "talk")
    far = placed_on(other[1], "talk", "far-speaker", home)
    listener = placed_on(other[1], "talk", "listener", home)
    try:
        await far.join()
        await far.publish_rtp(audio=True, video=False)
        far.set_audio_level(-127)
        await listener.join()
        await eventually(lambda: listener.received_from(pub.id, "audio") > 20, timeout=30)
        far.set_audio_level(-20)  # the shard's participant speaks: the home decides, all hear of it
        for p in (pub, far, listener):
            await p.wait_for(lambda m: m.get("type") == "active-speaker" and m["participant"] == far.id, 15)
        far.set_audio_level(-127)
        pub.set_audio_level(-20)  # then the home's
        for p in (pub, far, listener):
            await p.wait_for(lambda m: m.get("type") == "active-speaker" and m["participant"] == pub.id, 15)
        speakers = [m["participant"] for m in listener.messages if m.get("type") == "active-speaker"]
        assert speakers[-2:] == [far.id, pub.id]
    finally:
        await close_all([far, listener, pub])


async def test_the_span_endpoint_refuses_strangers_and_bad_input_and_the_worker_goes_on(node):
    urls = await workers_of(node)
    worker, url = sorted(urls.items())[0]
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/internal/span/x") as r:
            assert r.status == 403
        async with http.ws_connect(url + "/internal/span/x", headers={SECRET_HEADER: CLUSTER_SECRET}) as ws:
            await ws.send_str("not json")
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4400
        async with http.ws_connect(url + "/internal/span/x", headers={SECRET_HEADER: CLUSTER_SECRET}) as ws:
            await ws.send_json(
                {"type": "hello", "worker": "n/9", "link": {"host": "127.0.0.1", "port": 0, "key": "zz"}}
            )
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4400
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url + "/internal/span/bad%20name", headers={SECRET_HEADER: CLUSTER_SECRET})
        assert refused.value.status == 400
        # A home that cannot be reached: the client's socket is refused, nothing is left behind.
        headers = {
            SECRET_HEADER: CLUSTER_SECRET,
            ROOM_HEADER: "lost",
            HOME_URL_HEADER: "http://127.0.0.1:9",
            HOME_WORKER_HEADER: "gone/0",
        }
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url + "/ws", headers=headers)
        assert refused.value.status == 503
        headers[ROOM_HEADER] = "bad room"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url + "/ws", headers=headers)
        assert refused.value.status == 400
    assert "lost" not in (await links(url))["rooms"]
    # The worker goes on: a call in it works.
    a = Participant(node.ws_url, "after", "a")
    b = Participant(node.ws_url, "after", "b")
    try:
        await a.join()
        await a.publish_rtp(audio=True, video=True)
        await b.join()
        await eventually(lambda: b.received_from(a.id, "video") > 20, timeout=30)
    finally:
        await close_all([a, b])


async def test_a_killed_shard_worker_s_participants_leave_the_home_and_the_home_goes_on(node):
    pub = Participant(node.ws_url, "shardfault", "pub")
    stay = Participant(node.ws_url, "shardfault", "stay")
    await pub.join()
    await pub.publish_rtp(audio=True, video=True)
    home, other = await home_and_other(node, "shardfault")
    far = placed_on(other[1], "shardfault", "far", home)
    try:
        await stay.join()
        await far.join()
        await far.publish_rtp(audio=True, video=True)
        await eventually(lambda: pub.received_from(far.id, "video") > 30, timeout=30)
        tracks = [track_of(pub, far, kind) for kind in ("audio", "video")]
        pid = await node.worker_pid(other[0])
        killed_s = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        for p in (pub, stay):
            for track in tracks:
                await p.wait_for(
                    lambda m, t=track: m.get("type") == "track-unpublished" and m.get("track") == t, timeout=10
                )
            await p.wait_for(lambda m: m.get("type") == "participant-left" and m.get("id") == far.id, timeout=10)
        assert time.monotonic() - killed_s < 6.0  # node_ttl_s
        before = stay.received_from(pub.id, "video")
        await eventually(lambda: stay.received_from(pub.id, "video") > before + 50, timeout=10)
        assert (await links(home[1]))["links"] == [], "the link with the dead worker is gone"
    finally:
        await close_all([far, stay, pub])


async def test_when_the_rooms_worker_is_at_its_limit_new_participants_go_to_another_worker(tmp_path):
    node = await node_with(tmp_path, SFU_MAX_TRACKS_PER_WORKER="6")
    pub = Participant(node.ws_url, "big", "pub")
    first = [Participant(node.ws_url, "big", f"a{i}") for i in range(2)]
    later = [Participant(node.ws_url, "big", f"b{i}") for i in range(2)]
    try:
        await pub.join()
        await pub.publish_rtp(audio=True, video=True)
        for p in first:
            await p.join()
        await eventually(lambda: all(p.received_from(pub.id, "video") > 20 for p in first), timeout=30)
        home = (await placed(node, "big", 3))["worker"]

        async def home_full():
            view = await node.node_view()
            return any(w["worker"] == home and w["load"]["tracks"] >= 6 for w in view["workers"])

        deadline = time.monotonic() + 20
        while not await home_full():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        for p in later:  # through the front, as any client
            joined = await p.join()
            assert {x["id"] for x in joined["participants"]} >= {pub.id, *(f.id for f in first)}
        prefix = pub.id.split("-")[0]
        assert all(p.id.split("-")[0] == prefix for p in first)
        assert all(p.id.split("-")[0] != prefix for p in later), "past the limit: the other worker"
        await eventually(lambda: all(p.received_from(pub.id, "video") > 20 for p in later), timeout=30)
        await pub.wait_for(lambda m: m.get("type") == "participant-joined" and m["participant"]["id"] == later[-1].id)
    finally:
        await close_all([*later, *first, pub])
        node.cleanup()


async def test_an_admin_kick_through_the_front_reaches_a_participant_on_the_other_worker(node):
    pub = Participant(node.ws_url, "kick", "pub")
    await pub.join()
    await pub.publish_rtp(audio=True, video=False)
    home, other = await home_and_other(node, "kick")
    far = placed_on(other[1], "kick", "far", home)
    try:
        await far.join()
        await eventually(lambda: far.received_from(pub.id, "audio") > 10, timeout=30)
        async with (
            aiohttp.ClientSession() as http,
            http.delete(f"{node.url}/admin/rooms/kick/participants/{far.id}", headers=admin_headers()) as r,
        ):
            assert r.status == 200, await r.text()
        error = await far.wait_for(lambda m: m.get("type") == "error", timeout=10)
        assert error["code"] == "kicked"
        await far.wait_type("socket-closed", timeout=10)
        left = await pub.wait_for(lambda m: m.get("type") == "participant-left" and m.get("id") == far.id, timeout=10)
        assert left["reason"] == "kicked"
    finally:
        await close_all([far, pub])

"""Dynacast through the real server: the Python simulcast publisher stops the layers nobody needs."""

import asyncio
import time

import aiohttp

from sfu.app import ROOMS_KEY
from sfu.client import Participant
from sfu.dynacast import HOLD_MS
from sfu.metrics import Totals, participant_totals
from sfu.signaling.http import describe_participant
from tests.conftest import eventually
from tests.integration.test_operations import parse_metrics


def layer_packets(producer):
    return [layer.stats.packets for layer in producer.layers]


async def growing(producer, seconds=1.0, audio=None):
    """Which layers received packets during the next ``seconds``, or longer if the publisher
    was held up: the window lasts until ``audio`` (a producer the publisher never stops), or
    else some video layer, has received at least 30 more packets (at most 15 s)."""
    loop = asyncio.get_running_loop()
    before, bytes_before = layer_packets(producer), sum(layer.stats.bytes for layer in producer.layers)
    clock = audio.layers[0].stats if audio is not None else None
    clock_before = clock.packets if clock is not None else 0
    t0 = loop.time()
    deadline = t0 + 15
    while True:
        await asyncio.sleep(0.1)
        elapsed = loop.time() - t0
        if clock is not None:
            moved = clock.packets - clock_before >= 30
        else:
            moved = any(after - b >= 30 for after, b in zip(layer_packets(producer), before, strict=True))
        if (elapsed >= seconds and moved) or loop.time() > deadline:
            break
    rate = (sum(layer.stats.bytes for layer in producer.layers) - bytes_before) * 8 / elapsed / 1000
    print(f"video from the publisher: {rate:.0f} kbit/s over {elapsed:.1f}s")
    return [after > b for after, b in zip(layer_packets(producer), before, strict=True)]


async def test_upper_layers_stop_while_the_only_viewer_caps_its_height_and_return_when_it_grows(server):
    pub = Participant(server.ws_url, "dyn", "pub")
    viewer = Participant(server.ws_url, "dyn", "viewer")
    try:
        await pub.join()
        await pub.publish_rtp(audio=True, video=True, simulcast=True)
        await viewer.join()
        participant = server.app[ROOMS_KEY].rooms["dyn"].participants[pub.id]
        producer = next(p for p in participant.producers() if p.kind == "video")
        consumer = await eventually(lambda: next(iter(producer.consumers), None), timeout=10)
        await eventually(lambda: [layer.height for layer in producer.layers] == [90, 180, 360], timeout=10)
        await eventually(lambda: consumer.current == 2, timeout=10)

        # The viewer's tile is small: only the lowest layer is needed; after the hold time the
        # publisher is told, and the server stops receiving the upper two.
        t0 = time.monotonic()
        await viewer.send({"type": "subscription", "track": producer.id, "max_height": 100, "paused": False})
        msg = await pub.wait_for(
            lambda m: m.get("type") == "layers" and m["active"] == ["q"], timeout=HOLD_MS / 1000 + 10
        )
        told_s = time.monotonic() - t0
        assert msg == {"type": "layers", "track": producer.id, "active": ["q"], "paused": False}
        assert told_s >= HOLD_MS / 1000 - 0.3, "downgrades wait for the hold time"
        await eventually(lambda: not producer.layers[2].active(_now_ms()), timeout=10)
        assert await growing(producer) == [True, False, False]
        assert consumer.current == 0 and consumer.bandwidth_layer in (None, 0)
        switches = consumer.layer_switches
        assert [m["active"] for m in pub.messages if m.get("type") == "layers"] == [["q"]], "sent only on change"
        detail = next(t for t in participant.describe()["tracks"] if t["kind"] == "video")
        assert "requested_layers" not in detail  # the wire's track object is unchanged
        assert producer.describe(detail=True)["requested_layers"] == ["q"]

        # The viewer grows: the publisher is told at once and the viewer gets the top layer.
        t0 = time.monotonic()
        await viewer.send({"type": "subscription", "track": producer.id, "max_height": None, "paused": False})
        await pub.wait_for(
            lambda m: m.get("type") == "layers" and m["active"] == ["q", "h", "f"], timeout=HOLD_MS / 1000
        )
        told_s = time.monotonic() - t0
        await eventually(lambda: producer.layers[2].active(_now_ms()), timeout=10, interval=0.02)
        arrived_s = time.monotonic() - t0
        await eventually(lambda: consumer.current == 2, timeout=10, interval=0.02)
        top_s = time.monotonic() - t0
        print(
            f"told the publisher after {told_s * 1000:.0f} ms, top layer arriving after {arrived_s * 1000:.0f} ms, "
            f"forwarded after {top_s * 1000:.0f} ms"
        )
        assert told_s < HOLD_MS / 2000, "upgrades do not wait for the hold time"
        assert consumer.layer_switches - switches <= 2, "no fallback churn on the way up"
        assert await growing(producer) == [True, True, True]
        totals = Totals()
        participant_totals(participant, totals)
        assert totals.layer_changes == 2
        async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as resp:
            assert parse_metrics(await resp.text())["sfu_dynacast_layer_changes_total"] == 2
        video = next(t for t in describe_participant(participant)["tracks"] if t["kind"] == "video")  # admin API
        assert video["requested_layers"] == ["q", "h", "f"] and video["layer_heights"] == [90, 180, 360]
    finally:
        for p in (pub, viewer):
            await p.close()


async def test_a_video_nobody_watches_stops_and_restarts_for_a_new_viewer(server):
    pub = Participant(server.ws_url, "dyn2", "pub")
    viewer = Participant(server.ws_url, "dyn2", "viewer")
    try:
        await pub.join()
        await pub.publish_rtp(audio=True, video=True, simulcast=True)
        participant = server.app[ROOMS_KEY].rooms["dyn2"].participants[pub.id]
        producer = next(p for p in participant.producers() if p.kind == "video")
        audio = next(p for p in participant.producers() if p.kind == "audio")
        msg = await pub.wait_for(lambda m: m.get("type") == "layers", timeout=HOLD_MS / 1000 + 10)
        assert msg == {"type": "layers", "track": producer.id, "active": [], "paused": True}
        await eventually(lambda: not any(layer.active(_now_ms()) for layer in producer.layers), timeout=10)
        assert await growing(producer, audio=audio) == [False, False, False]
        audio_before = audio.layers[0].stats.packets
        assert all(not s.active for s in pub.rtp_streams if s.clip.kind == "video")

        # Someone joins: the video comes back at once and reaches the viewer.
        t0 = time.monotonic()
        await viewer.join()
        await pub.wait_for(lambda m: m.get("type") == "layers" and not m["paused"], timeout=10)
        await eventually(lambda: viewer.received_from(pub.id, "video") > 30, timeout=15)
        print(f"video back at the new viewer after {time.monotonic() - t0:.2f}s")
        assert audio.layers[0].stats.packets > audio_before, "audio is never stopped"
    finally:
        for p in (pub, viewer):
            await p.close()


async def test_dynacast_can_be_switched_off():
    from tests.conftest import start_server

    srv = await start_server(heartbeat_interval_s=1.0, dynacast=False)
    pub = Participant(srv.ws_url, "off", "pub")
    try:
        await pub.join()
        await pub.publish_rtp(audio=False, video=True, simulcast=True)
        producer = next(p for p in srv.app[ROOMS_KEY].rooms["off"].participants[pub.id].producers())
        await asyncio.sleep(HOLD_MS / 1000 + 1)
        assert not any(m.get("type") == "layers" for m in pub.messages)
        assert await growing(producer) == [True, True, True]
    finally:
        await pub.close()
        await srv.runner.cleanup()


def _now_ms() -> int:
    from sfu.rtc.peer import now_ms

    return now_ms()

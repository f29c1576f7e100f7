"""Publish offers the server refuses, and what it keeps when it does; limits on tracks,
m-sections, negotiation time and RTCP. Real aiortc clients and real sockets."""

import asyncio
import logging
import re
import socket

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

from sfu.app import ROOMS_KEY
from sfu.client import Participant
from sfu.rtc import aiortc_glue as glue
from tests.conftest import eventually, sendonly_offer, start_server


async def publishing(server, room, name, **kw):
    p = Participant(server.ws_url, room, name)
    await p.join()
    await p.publish(**kw)
    return p


async def reply_after(p: Participant, start: int, predicate) -> dict:
    """The first message from index ``start`` on for which predicate holds (waits for it)."""
    found = await eventually(lambda: next((m for m in p.messages[start:] if predicate(m)), None), 15)
    return found


async def offer_and_reply(p: Participant, sdp: str) -> dict:
    """Send a publish offer; the server's answer or error to it."""
    start = len(p.messages)
    await p.send({"type": "offer", "pc": "publish", "sdp": sdp})
    return await reply_after(
        p, start, lambda m: m["type"] == "answer" or (m["type"] == "error" and m.get("request") == "offer")
    )


async def still_handles_messages(p: Participant) -> None:
    start = len(p.messages)
    await p.send({"type": "ping"})
    await reply_after(p, start, lambda m: m["type"] == "pong")


def unpublished(p: Participant, owner: Participant) -> list:
    return [m for m in p.messages if m["type"] == "track-unpublished" and m["participant"] == owner.id]


async def keeps_receiving(p: Participant, owner: Participant, kinds=("audio", "video")) -> None:
    before = {k: p.received_from(owner.id, k) for k in kinds}
    await eventually(lambda: all(p.received_from(owner.id, k) > before[k] + 20 for k in kinds), 20)


def without_section(sdp: str, kind: str) -> str:
    """The SDP without its (first) m-section of ``kind``."""
    head, *sections = re.split(r"(?=^m=)", sdp, flags=re.M)
    sections = [s for s in sections if not s.startswith(f"m={kind}")]
    return head + "".join(sections)


async def test_a_re_offer_with_a_bundle_group_naming_a_section_twice_is_refused_and_nothing_changes(server, caplog):
    a = await publishing(server, "bundle", "a")
    b = await publishing(server, "bundle", "b")
    try:
        await keeps_receiving(b, a)
        pc = a.publish_pc
        pc.addTransceiver("audio", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        valid = pc.localDescription.sdp
        for group in ("2 0 0", "0 0 1", "1 0 2", "5 0 1", "0 1"):
            caplog.clear()
            broken = re.sub(r"a=group:BUNDLE .*", f"a=group:BUNDLE {group}", valid)
            reply = await offer_and_reply(a, broken)
            assert reply["type"] == "error" and reply["code"] == "bad-sdp", (group, reply)
            await still_handles_messages(a)
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        # The publisher's connection and tracks are as they were: media flows, nothing was
        # unpublished, and the valid re-offer is answered.
        await keeps_receiving(b, a)
        assert not unpublished(b, a)
        assert a.publish_pc.connectionState == "connected"
        reply = await offer_and_reply(a, valid)
        assert reply["type"] == "answer"
        await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        await keeps_receiving(b, a)
        # Leaving still works: the others are told, the room keeps only b.
        await a.close()
        await b.wait_for(lambda m: m["type"] == "participant-left" and m["id"] == a.id)
        assert set(server.app[ROOMS_KEY].rooms["bundle"].participants) == {b.id}
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/healthz") as resp:
            assert (await resp.json())["participants"] == 1
    finally:
        await a.close()
        await b.close()


async def test_a_re_offer_without_its_audio_section_is_refused_without_a_traceback_and_keeps_the_tracks(server, caplog):
    a = await publishing(server, "noaudio", "a")
    b = await publishing(server, "noaudio", "b")
    try:
        await keeps_receiving(b, a)
        pc = a.publish_pc
        await pc.setLocalDescription(await pc.createOffer())
        caplog.clear()
        reply = await offer_and_reply(a, without_section(pc.localDescription.sdp, "audio"))
        assert reply["type"] == "error" and reply["code"] == "bad-sdp", reply
        await still_handles_messages(a)
        await asyncio.sleep(0.5)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert not unpublished(b, a)
        await keeps_receiving(b, a)
        assert len(server.app[ROOMS_KEY].rooms["noaudio"].participants[a.id].producers()) == 2
        # A first offer without its audio m-section (its BUNDLE group still names it).
        c = Participant(server.ws_url, "noaudio", "c")
        await c.join()
        try:
            caplog.clear()
            reply = await offer_and_reply(c, without_section(await sendonly_offer(audio=1, video=1), "audio"))
            assert reply["type"] == "error" and reply["code"] == "bad-sdp", reply
            await still_handles_messages(c)
            await asyncio.sleep(0.5)
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
            reply = await offer_and_reply(c, await sendonly_offer(audio=1, video=1))
            assert reply["type"] == "answer"
        finally:
            await c.close()
    finally:
        await a.close()
        await b.close()


async def test_tracks_per_publisher_and_m_sections_per_offer_are_capped_and_the_room_keeps_working(server):
    b = await publishing(server, "flood", "b")
    offender = Participant(server.ws_url, "flood", "offender")
    await offender.join()
    try:
        limits = server.config
        reply = await offer_and_reply(offender, await sendonly_offer(audio=40))
        assert reply["type"] == "error" and reply["code"] == "too-many-m-sections", reply
        reply = await offer_and_reply(offender, await sendonly_offer(audio=limits.max_tracks_per_publisher + 1))
        assert reply["type"] == "error" and reply["code"] == "too-many-tracks", reply
        reply = await offer_and_reply(offender, await sendonly_offer(audio=1, inactive=limits.max_m_sections_per_sdp))
        assert reply["type"] == "error" and reply["code"] == "too-many-m-sections", reply
        assert not server.app[ROOMS_KEY].rooms["flood"].participants[offender.id].producers()
        await offender.close()
        await b.wait_for(lambda m: m["type"] == "participant-left" and m["id"] == offender.id)
        # A newcomer's tracks still reach b.
        c = await publishing(server, "flood", "c")
        try:
            await eventually(lambda: b.received_from(c.id, "video") > 20 and b.received_from(c.id, "audio") > 20, 20)
            assert b.subscribe_pc.remoteDescription.sdp.count("m=") <= limits.max_m_sections_per_sdp
        finally:
            await c.close()
    finally:
        await offender.close()
        await b.close()


async def test_a_subscribe_offer_never_has_more_m_sections_than_the_limit(caplog):
    caplog.set_level(logging.WARNING, logger="sfu.rtc.subscribe")
    server = await start_server(max_m_sections_per_sdp=3, max_tracks_per_publisher=2)
    watcher = Participant(server.ws_url, "many", "watcher")
    await watcher.join()
    publishers = []
    try:
        for i in range(3):
            publishers.append(await publishing(server, "many", f"p{i}"))
        # Three m-sections: two tracks and the data channels'.
        await eventually(
            lambda: watcher.subscribe_pc is not None and sum(s.packets > 0 for s in watcher.streams.values()) == 2, 20
        )
        assert watcher.subscribe_pc.remoteDescription.sdp.count("m=") == 3
        assert watcher.subscribe_pc.remoteDescription.sdp.count("m=application") == 1
        # The server says so in its log, naming the subscriber.
        await eventually(
            lambda: any("not offered" in r.getMessage() and watcher.id in r.getMessage() for r in caplog.records), 10
        )
        # When a publisher leaves, a track not offered so far takes its place.
        first = publishers.pop(0)
        await first.close()
        waiting = {(p.id, k) for p in publishers for k in ("audio", "video")}

        def every_remaining_track_arrives():
            return all(watcher.received_from(pid, kind) > 10 for pid, kind in waiting)

        offered = lambda: {(s.participant, s.kind) for s in watcher.streams.values()}  # noqa: E731
        await eventually(lambda: len(offered() & waiting) == 2, 20)
        assert watcher.subscribe_pc.remoteDescription.sdp.count("m=") == 3
    finally:
        for p in publishers + [watcher]:
            await p.close()
        await server.runner.cleanup()


async def test_rtcp_over_the_rate_limit_is_dropped_and_counted_and_the_call_goes_on(server):
    a = await publishing(server, "rtcp", "a")
    b = await publishing(server, "rtcp", "b")
    try:
        await keeps_receiving(b, a)
        # b floods the server with REMB on its subscribe connection: large packets (200 SSRCs
        # each), paced so that the server reads them, far over max_rtcp_bps in all.
        transport = glue.dtls_transports(b.subscribe_pc)[0]
        ssrcs = sorted(b._ssrc_mid) * 100
        remb = bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(1_000_000, ssrcs[:200])))
        subscriber = server.app[ROOMS_KEY].rooms["rtcp"].participants[b.id].subscriber
        sent = 0
        for _ in range(100):
            for _ in range(20):
                sent += glue.send_packet(transport, remb, rtcp=True)
            await asyncio.sleep(0.01)
            if glue.transport_drops(subscriber.pc)["rtcp-rate"] > 0:
                break
        assert sent * len(remb) * 8 > server.config.max_rtcp_bps
        await eventually(lambda: glue.transport_drops(subscriber.pc)["rtcp-rate"] > 0)
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as resp:
            text = await resp.text()
        assert re.search(r'^sfu_transport_drops_total\{reason="rtcp-rate"\} [1-9]', text, re.M), text
        await keeps_receiving(b, a)
        assert not [m for m in b.messages if m["type"] in ("participant-left", "socket-closed")]
    finally:
        await a.close()
        await b.close()


async def test_an_offer_that_cannot_be_applied_in_time_ends_the_participant_and_it_leaves():
    # A STUN server that never answers keeps the server's ICE gathering (5 s in aioice)
    # pending beyond the negotiation deadline.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    stun = f"stun:127.0.0.1:{silent.getsockname()[1]}"
    server = await start_server(negotiation_timeout_s=1.0, ice_servers=({"urls": stun},))
    watcher = Participant(server.ws_url, "slow", "watcher")
    a = Participant(server.ws_url, "slow", "a")
    try:
        await watcher.join()
        await a.join()
        a.joined["ice_servers"] = []  # the client itself gathers at once
        pc = a.publish_pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        reply = await offer_and_reply(a, pc.localDescription.sdp)
        assert reply["type"] == "error" and reply["code"] == "negotiation-timeout", reply
        # The session was not left hanging: it answers, and when the socket closes the
        # participant leaves.
        await still_handles_messages(a)
        assert server.app[ROOMS_KEY].rooms["slow"].participants[a.id].publisher is None
        await a._ws.close()
        await watcher.wait_for(lambda m: m["type"] == "participant-left" and m["id"] == a.id, 15)
        assert set(server.app[ROOMS_KEY].rooms["slow"].participants) == {watcher.id}
    finally:
        await a.close()
        await watcher.close()
        await server.runner.cleanup()
        silent.close()

"""transport-cc towards publishers through the real server, with an aiortc publisher that
stamps its RTP with transport-wide sequence numbers and reads the feedback it gets back."""

import asyncio
import struct
from itertools import pairwise

import aiohttp
from aiortc import RTCSessionDescription

from sfu.app import ROOMS_KEY
from sfu.bwe.twcc import RTCP_RTPFB, TWCC_FMT, TWCC_URI, parse_feedback, split_compound
from sfu.client import Participant
from sfu.media.rtp import one_byte_extensions
from sfu.rtc import aiortc_glue as glue
from sfu.rtc.sdp import add_transport_cc
from tests.conftest import eventually, start_server

TW_EXT_ID = 7


async def offer_video(participant: Participant, transport_cc: bool):
    """A sendonly video offer (with transport-cc if asked); returns (pc, answer SDP)."""
    pc = participant.publish_pc = glue.create_peer_connection()
    transceiver = pc.addTransceiver("video", direction="sendonly")
    ssrc, _ = glue.prepare_forwarding_sender(transceiver, "s", "video")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    if transport_cc:
        sdp = add_transport_cc(sdp, TW_EXT_ID)
    participant._answer = asyncio.get_running_loop().create_future()
    await participant.send({"type": "offer", "pc": "publish", "sdp": sdp})
    answer = await asyncio.wait_for(participant._answer, 10)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return pc, ssrc, answer


async def test_publisher_gets_feedback_for_every_transport_sequence_number():
    srv = await start_server()
    pub = Participant(srv.ws_url, "tcc", "pub")
    try:
        await pub.join()
        pc, ssrc, answer = await offer_video(pub, transport_cc=True)
        assert f"a=extmap:{TW_EXT_ID} {TWCC_URI}" in answer
        vp8 = next(line.split()[0][len("a=rtpmap:") :] for line in answer.split("\r\n") if "VP8/90000" in line)
        assert f"a=rtcp-fb:{vp8} transport-cc" in answer

        feedback = []

        async def on_rtcp(data: bytes) -> None:
            for pt, fmt, body, _ in split_compound(data):
                if pt == RTCP_RTPFB and fmt == TWCC_FMT:
                    feedback.append(parse_feedback(body))

        async def on_rtp(data: bytes, arrival_ms: int) -> None:
            pass

        transport = await eventually(
            lambda: next((t for t in glue.dtls_transports(pc) if glue.is_connected(t)), None), timeout=10
        )
        glue.install_tap(pc, on_rtp, on_rtcp)
        # 200 packets, 5 ms apart, transport-wide numbers wrapping through 0; 65534 and 5 "lost".
        seqs = [(65500 + i) & 0xFFFF for i in range(200)]
        # Each send is bracketed by the clock: on loopback the datagram arrives within the call.
        loop = asyncio.get_running_loop()
        sent_between: list[tuple[float, float]] = []
        for i, tw in enumerate(seqs):
            if tw in (65534, 5):
                continue
            ext = one_byte_extensions([(TW_EXT_ID, struct.pack("!H", tw))])
            header = struct.pack("!BBHII", 0x90, int(vp8), 1000 + i, 90 * 5 * i, ssrc)
            before_send = loop.time()
            assert glue.send_packet(transport, header + ext + bytes(100))
            sent_between.append((before_send, loop.time()))
            await asyncio.sleep(0.005)
        await eventually(lambda: any(seq == seqs[-1] for fb in feedback for seq, _ in fb.packets), timeout=15)

        assert len(feedback) >= 5  # every 50 ms, not one report at the end
        assert [fb.fb_count for fb in feedback] == list(range(len(feedback)))
        assert all(fb.media_ssrc == ssrc for fb in feedback)
        arrivals = {}
        for fb in feedback:
            for seq, at in fb.packets:
                if at is not None or seq not in arrivals:
                    arrivals[seq] = at
        assert set(arrivals) == set(seqs)
        assert arrivals[65534] is None and arrivals[5] is None
        assert all(arrivals[s] is not None for s in seqs if s not in (65534, 5))
        # Arrival times follow the sending (about 5 ms apart, or more when the machine is busy):
        # from the first arrival to the last lies between the shortest and the longest time the
        # sends can have been apart (10 ms either side for the feedback's 250 us resolution and
        # the kernel's stamp).
        span_ms = (arrivals[seqs[-1]] - arrivals[seqs[0]]) / 1000
        (first_before, first_after), (last_before, last_after) = sent_between[0], sent_between[-1]
        shortest_ms, longest_ms = (last_before - first_after) * 1000, (last_after - first_before) * 1000
        assert shortest_ms - 10 < span_ms < longest_ms + 10, (span_ms, shortest_ms, longest_ms)
        gaps = [arrivals[b] - arrivals[a] for a, b in pairwise(seqs[1:]) if a not in (65534, 5) and b not in (65534, 5)]
        assert sorted(gaps)[len(gaps) // 2] >= 4000
        # Counted where operators look: the admin view and /metrics.
        publisher = next(iter(srv.app[ROOMS_KEY].rooms["tcc"].participants.values())).publisher
        described = publisher.describe()["transport_cc"]
        assert described["negotiated"] and described["feedback_packets_sent"] >= len(feedback)
        async with aiohttp.ClientSession() as http, http.get(srv.url + "/metrics") as resp:
            metrics = await resp.text()
        sent = next(line for line in metrics.splitlines() if line.startswith("sfu_transport_cc_feedback_total"))
        assert float(sent.split()[1]) >= len(feedback)
    finally:
        await pub.close()
        await srv.runner.cleanup()


async def test_transport_cc_off_leaves_it_out_of_both_sdps():
    srv = await start_server(transport_cc=False)
    pub, sub = Participant(srv.ws_url, "nocc", "pub"), Participant(srv.ws_url, "nocc", "sub")
    try:
        await pub.join()
        await sub.join()
        _, _, answer = await offer_video(pub, transport_cc=True)
        assert "transport-wide-cc" not in answer and "transport-cc" not in answer
        assert "goog-remb" in answer  # publishers still get REMB
        offer = await sub.wait_for(lambda m: m.get("type") == "offer" and m.get("pc") == "subscribe")
        assert "m=video" in offer["sdp"]
        assert "transport-wide-cc" not in offer["sdp"] and "transport-cc" not in offer["sdp"]
    finally:
        await pub.close()
        await sub.close()
        await srv.runner.cleanup()


async def test_transport_cc_on_is_offered_to_subscribers():
    srv = await start_server()
    pub, sub = Participant(srv.ws_url, "cc", "pub"), Participant(srv.ws_url, "cc", "sub")
    try:
        await pub.join()
        await sub.join()
        await offer_video(pub, transport_cc=False)
        offer = await sub.wait_for(lambda m: m.get("type") == "offer" and m.get("pc") == "subscribe")
        assert "transport-wide-cc" in offer["sdp"] and "transport-cc" in offer["sdp"]
    finally:
        await pub.close()
        await sub.close()
        await srv.runner.cleanup()

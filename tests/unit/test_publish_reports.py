"""Receiver reports to a publisher: the LSR/DLSR of each layer, however long ago its last SR came."""

import struct
import time

from aiortc import RTCPeerConnection
from aiortc.rtp import RtcpPacket, RtcpRrPacket, RtcpSenderInfo, RtcpSrPacket

from sfu.rtc.publish import PublishPeer

HOUR_S = 3600.0


async def published_video(clock):
    client = RTCPeerConnection()
    client.addTransceiver("video", direction="sendonly")
    await client.setLocalDescription(await client.createOffer())
    peer = PublishPeer("p1", [], lambda: None, 0, now_s=lambda: clock[0])
    _, added, _ = await peer.handle_offer(client.localDescription.sdp, {})
    producer = next(p for p in added if p.kind == "video")
    return client, peer, producer


def report_block(peer, ssrc):
    """Build the RTCP reports as they go on the wire, parse them back, return our block."""
    data = b"".join(bytes(p) for p in peer.rtcp_reports())
    rr = next(p for p in RtcpPacket.parse(data) if isinstance(p, RtcpRrPacket))
    return next(r for r in rr.reports if r.ssrc == ssrc)


async def test_a_sender_report_older_than_the_dlsr_field_can_say_is_reported_as_none(monkeypatch):
    clock = [1000.0]
    wall = time.time()
    # The wall clock moves with the fake one (an implementation that reads it sees the same hours).
    monkeypatch.setattr(time, "time", lambda: wall + clock[0])
    client, peer, producer = await published_video(clock)
    try:
        layer = producer.layers[0]
        assert layer.ssrc is not None, "bound from the offer's a=ssrc"
        rtp = struct.pack("!BBHII", 0x80, producer.payload_type, 1, 0, layer.ssrc) + b"\x10\x00\x00\x00"
        await peer._on_rtp(rtp, 0)
        ntp = 0x1234_5678_9ABC_DEF0
        sr = RtcpSrPacket(ssrc=layer.ssrc, sender_info=RtcpSenderInfo(ntp, 0, 0, 0))
        await peer._on_rtcp(bytes(sr))

        clock[0] += 2.0
        block = report_block(peer, layer.ssrc)
        assert block.lsr == (ntp >> 16) & 0xFFFFFFFF
        assert block.dlsr == 2 * 65536

        clock[0] += 19 * HOUR_S  # no SR since: past the 32-bit DLSR's 18.2 h
        block = report_block(peer, layer.ssrc)
        assert (block.lsr, block.dlsr) == (0, 0)

        await peer._on_rtcp(bytes(sr))  # a fresh SR counts again
        clock[0] += 0.5
        assert report_block(peer, layer.ssrc).dlsr == 65536 // 2
    finally:
        await peer.close()
        await client.close()

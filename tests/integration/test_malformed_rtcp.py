"""Malformed RTCP from a subscriber, through its real SRTP session: dropped and counted, and
the subscriber's own call goes on (a parse error never leaves the receive path)."""

import struct

from sfu.app import ROOMS_KEY
from sfu.client import Participant
from sfu.media.rtcp import RtcpRemb
from sfu.rtc import aiortc_glue
from tests.conftest import eventually


async def test_a_remb_announcing_more_ssrcs_than_it_carries_is_dropped_and_counted(server):
    a, b = Participant(server.ws_url, "remb", "a"), Participant(server.ws_url, "remb", "b")
    await a.join()
    await a.publish()
    await b.join()
    await eventually(lambda: b.received_from(a.id, "video") > 20, timeout=15)
    room = server.app[ROOMS_KEY].rooms["remb"]
    subscriber = room.participants[b.id].subscriber
    consumer = next(c for c in subscriber.consumers() if c.producer.kind == "video")
    transport = aiortc_glue.dtls_transports(b.subscribe_pc)[0]
    before_malformed = subscriber.malformed_packets

    # REMB with 9 SSRCs announced and one carried; a PLI and a NACK too short for their SSRCs.
    bad_remb = struct.pack("!BBHII", 0x8F, 206, 5, 1, 0) + b"REMB" + bytes((9, 0x0C, 0x00, 0x01))
    bad_remb += struct.pack("!I", consumer.out.ssrc)
    bad = [
        bad_remb,
        bytes((0x81, 206, 0, 1)) + b"\x00\x00\x00\x01",
        bytes((0x81, 205, 0, 1)) + b"\x00\x00\x00\x01",
    ]
    for _ in range(20):
        for packet in bad:
            assert aiortc_glue.send_packet(transport, packet, rtcp=True)
    await eventually(lambda: subscriber.malformed_packets >= before_malformed + 20 * len(bad), timeout=5)
    assert b.id in room.participants
    assert subscriber.describe()["malformed_packets"] >= 20 * len(bad)

    # The same connection still carries media, and a well-formed REMB still counts.
    before = b.received_from(a.id, "video")
    await eventually(lambda: b.received_from(a.id, "video") > before + 30, timeout=5)
    good = RtcpRemb(sender_ssrc=1, bitrate_bps=123_456, ssrcs=[consumer.out.ssrc])
    assert aiortc_glue.send_packet(transport, bytes(good), rtcp=True)
    await eventually(lambda: consumer.remb_bps == good.bitrate_bps, timeout=5)
    await a.close()
    await b.close()

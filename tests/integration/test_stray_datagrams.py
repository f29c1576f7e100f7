"""Datagrams from strangers on the server's ICE ports: dropped and counted, the call goes on.

The server's candidate ports are read from the SDP it sends (publish answers, subscribe
offers); a plain UDP socket then sends every kind of datagram a stranger can (RFC 7983's
first-byte classes: STUN, ZRTP, DTLS, TURN channel, RTP/RTCP, and bytes outside every class;
empty and one-byte datagrams; random junk), and SRTP that fails authentication arrives from the
selected pair itself. Nobody is removed and media keeps flowing both ways.
"""

import asyncio
import random
import socket
import struct

import aiohttp

from sfu.app import ROOMS_KEY
from sfu.client import Participant
from sfu.rtc import aiortc_glue as glue
from tests.conftest import eventually


def server_ports(sdp: str) -> set[int]:
    """UDP ports of the host candidates in an SDP written by the server."""
    ports = set()
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            if fields[2].lower() == "udp":
                ports.add(int(fields[5]))
    return ports


def stray_datagrams(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = [b"", b"\x00", b"\x16", b"\x80", b"\xc8", b"\xff"]
    # One datagram per first byte, each short and long: every RFC 7983 class and the gaps.
    for first in range(256):
        out.append(bytes([first]) + rng.randbytes(rng.choice((1, 11, 12, 40, 200))))
    # STUN-shaped: a binding request header with attributes whose lengths lie.
    tid = rng.randbytes(12)
    for attr_type, value in ((0x0024, b"\x01"), (0x8029, b"\x00\x01"), (0x0020, b"\x00"), (0x0009, b"")):
        body = struct.pack("!HH", attr_type, len(value)) + value + b"\x00" * (-len(value) % 4)
        out.append(struct.pack("!HHI12s", 0x0001, len(body), 0x2112A442, tid) + body)
    # DTLS-shaped records (handshake, alert, application data) of junk.
    for content_type in (20, 21, 22, 23):
        out.append(bytes([content_type, 0xFE, 0xFD]) + rng.randbytes(10) + rng.randbytes(rng.randrange(60)))
    # RTP/RTCP-shaped junk (version 2, valid-looking headers, random payloads and no valid tag).
    for pt in (96, 111, 200, 201, 205, 206):
        out.append(bytes([0x80, pt]) + rng.randbytes(rng.randrange(10, 300)))
    out += [rng.randbytes(rng.randrange(1, 1500)) for _ in range(100)]
    return out


def selected_pair(pc):
    connection = glue.dtls_transports(pc)[0].transport._connection
    return connection._nominated[1]


async def publishing(server, room, name):
    p = Participant(server.ws_url, room, name)
    await p.join()
    await p.publish()
    return p


def metric(text: str, name: str, **labels: str) -> float:
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            total += float(line.split()[-1])
    return total


async def scrape(server) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as resp:
        return await resp.text()


async def test_stray_datagrams_on_every_ice_port_are_dropped_and_the_call_keeps_flowing(server):
    a = await publishing(server, "stray", "a")
    b = await publishing(server, "stray", "b")
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await eventually(lambda: a.received_from(b.id, "video") > 30 and b.received_from(a.id, "video") > 30, 20)
        await eventually(lambda: a.subscribe_pc is not None and b.subscribe_pc is not None)
        ports = set()
        for p in (a, b):
            ports |= server_ports(p.publish_pc.remoteDescription.sdp)
            ports |= server_ports(p.subscribe_pc.remoteDescription.sdp)
        assert len(ports) >= 4, ports

        datagrams = stray_datagrams(seed=7)
        for _round in range(3):
            for port in sorted(ports):
                for data in datagrams:
                    stranger.sendto(data, ("127.0.0.1", port))
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        room = server.app[ROOMS_KEY].rooms["stray"]
        assert set(room.participants) == {a.id, b.id}
        for p in (a, b):
            assert p.publish_pc.connectionState == "connected"
            assert p.subscribe_pc.connectionState == "connected"

        # The same, from the selected pair itself (a stranger can spoof a source address):
        # empty datagrams, and SRTP/SRTCP that fails authentication.
        for p in (a, b):
            for pc in (p.publish_pc, p.subscribe_pc):
                pair = selected_pair(pc)
                for data in [b"", b"\x00", b"\x80"] + [bytes([0x80, pt]) + bytes(40) for pt in (96, 200, 201)]:
                    pair.protocol.transport.sendto(data, pair.remote_addr)

        before = (a.received_from(b.id, "video"), b.received_from(a.id, "video"))
        await eventually(
            lambda: a.received_from(b.id, "video") > before[0] + 60 and b.received_from(a.id, "video") > before[1] + 60,
            20,
        )
        assert set(room.participants) == {a.id, b.id}
        for p in (a, b):
            assert not [m for m in p.messages if m["type"] in ("participant-left", "socket-closed")]
            assert p.publish_pc.connectionState == "connected"
            assert p.subscribe_pc.connectionState == "connected"

        text = await scrape(server)
        assert metric(text, "sfu_transport_drops_total", reason="empty") >= 2 * len(ports)
        assert metric(text, "sfu_transport_drops_total", reason="unknown-address") > 0
        assert metric(text, "sfu_transport_drops_total", reason="srtp-auth") >= 2
        assert metric(text, "sfu_transport_drops_total", reason="srtcp-auth") >= 2
        # Per connection too (the admin room view): each of both participants' server-side
        # connections dropped some.
        for p in (a, b):
            participant = room.participants[p.id]
            for peer in (participant.publisher, participant.subscriber):
                drops = peer.describe()["transport_drops"]
                assert drops["empty"] >= 1 and drops["srtp-auth"] + drops["srtcp-auth"] >= 1, drops
    finally:
        stranger.close()
        await a.close()
        await b.close()

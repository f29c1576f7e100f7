"""WHIP and WHEP clients on aiortc, for the integration tests: HTTP exactly as RFC 9725 and
the WHEP draft have it (POST an offer, read Location/ETag/Link, PATCH, DELETE); media as
sfu.client has it (pre-encoded clips out, RTP counted by the tap in)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiortc import RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from sfu.client import PreEncodedTrack, load_clip
from sfu.media.rtcp import RtcpRemb
from sfu.media.rtp import MalformedPacket, parse_rtp
from sfu.rtc import aiortc_glue as glue


@dataclass
class Reply:
    status: int
    headers: Any
    text: str


async def request(method: str, url: str, body: str | bytes = "", headers: dict[str, str] | None = None) -> Reply:
    async with aiohttp.ClientSession() as http, http.request(method, url, data=body, headers=headers or {}) as response:
        return Reply(response.status, response.headers, await response.text())


async def publish_offer(audio: bool = True, video: bool = True) -> tuple[Any, str]:
    """An aiortc connection that sends the pre-encoded clips, and its offer."""
    pc = glue.create_peer_connection([])
    if audio:
        pc.addTransceiver(PreEncodedTrack(load_clip("audio")), direction="sendonly")
    if video:
        pc.addTransceiver(PreEncodedTrack(load_clip("video")), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def play_offer() -> tuple[Any, str]:
    pc = glue.create_peer_connection([])
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


@dataclass
class Session:
    """One WHIP or WHEP session of a test client."""

    base: str
    pc: Any
    reply: Reply
    token: str | None = None
    packets: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    ssrcs: dict[int, str] = field(default_factory=dict)  # ssrc -> kind
    first_ssrc: dict[str, set[int]] = field(default_factory=lambda: {"audio": set(), "video": set()})
    last_packet_s: float = 0.0
    video_seqs: list[int] = field(default_factory=list)

    @property
    def location(self) -> str:
        return self.base + self.reply.headers["Location"]

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def send_remb(self, bitrate_bps: int) -> bool:
        """Tell the server the player's downlink carries ``bitrate_bps`` (RTCP REMB)."""
        transports = glue.dtls_transports(self.pc)
        if not transports or not self.ssrcs:
            return False
        packet = RtcpRemb(sender_ssrc=1, bitrate_bps=bitrate_bps, ssrcs=sorted(self.ssrcs))
        return glue.send_packet(transports[0], bytes(packet), rtcp=True)

    async def delete(self) -> Reply:
        return await request("DELETE", self.location, headers=self.auth())

    async def close(self) -> None:
        await self.pc.close()


async def whip_publish(base: str, room: str, token: str | None = None, query: str = "", **kinds: bool) -> Session:
    pc, offer = await publish_offer(**kinds)
    headers = {"Content-Type": "application/sdp", **({"Authorization": f"Bearer {token}"} if token else {})}
    reply = await request("POST", f"{base}/whip/{room}{query}", offer, headers)
    session = Session(base, pc, reply, token)
    if reply.status == 201:
        await pc.setRemoteDescription(RTCSessionDescription(reply.text, "answer"))
    else:
        await pc.close()
    return session


async def whep_play(base: str, path: str, token: str | None = None) -> Session:
    pc, offer = await play_offer()
    headers = {"Content-Type": "application/sdp", **({"Authorization": f"Bearer {token}"} if token else {})}
    reply = await request("POST", f"{base}/whep/{path}", offer, headers)
    session = Session(base, pc, reply, token)
    if reply.status != 201:
        await pc.close()
        return session
    description = aiortc_sdp.SessionDescription.parse(reply.text)
    for media in description.media:
        for s in media.ssrc:
            session.ssrcs[s.ssrc] = media.kind
    await pc.setRemoteDescription(RTCSessionDescription(reply.text, "answer"))
    glue.detach_receivers(pc)

    async def on_rtp(data: bytes, arrival_ms: int) -> None:
        try:
            view = parse_rtp(data)
        except MalformedPacket:
            return
        kind = session.ssrcs.get(view.ssrc)
        if kind is not None:
            session.packets[kind] += 1
            session.last_packet_s = time.monotonic()
            if kind == "video":
                session.video_seqs.append(view.seq)

    async def on_rtcp(data: bytes) -> None:
        return None

    glue.install_tap(pc, on_rtp, on_rtcp)
    return session


async def settle_connected(pc: Any, timeout_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pc.connectionState != "connected":
        if loop.time() > deadline:
            raise AssertionError(f"connection state {pc.connectionState}")
        await asyncio.sleep(0.05)

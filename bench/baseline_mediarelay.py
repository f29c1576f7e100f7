"""A deliberately naive baseline server for the forwarding benchmark.

Built the way aiortc's examples build a "relay" server: the publisher's tracks are received
and DECODED by aiortc, aiortc.contrib.media.MediaRelay fans the decoded frames out, and every
subscriber gets ``pc.addTrack(relay.subscribe(track))``, so every subscriber's RTCRtpSender
RE-ENCODES (VP8 with libvpx, Opus with libopus) on its own.

It speaks the subset of the SFU's signaling (docs/protocol.md) that the benchmark uses:
join -> joined; publish offer -> answer; a server-offered subscribe connection with the
``consumers`` list -> answer; ping -> pong; leave. One room, one publisher, N subscribers,
no renegotiation (a subscriber gets one offer, when both it and the publisher's tracks exist).

    python bench/baseline_mediarelay.py --host 127.0.0.1 --port 8090 --ice-host 127.0.0.1
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from aiortc import MediaStreamTrack, RTCRtpSender, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

sys.path.insert(0, os.environ.get("SFU_ROOT", str(Path(__file__).resolve().parent.parent)))
from sfu.rtc import aiortc_glue

logger = logging.getLogger("baseline")
_ids = itertools.count(1)


class Client:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.id = f"p{next(_ids)}"
        self.name = ""
        self.publish_pc: Any = None
        self.subscribe_pc: Any = None
        self.tracks: list[tuple[str, MediaStreamTrack]] = []  # (mid, decoded remote track)

    async def send(self, msg: dict[str, Any]) -> None:
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(msg))

    def describe(self) -> dict[str, Any]:
        tracks = [
            {
                "id": f"{self.id}-{mid}",
                "kind": t.kind,
                "muted": False,
                "source": "microphone" if t.kind == "audio" else "camera",
            }
            for mid, t in self.tracks
        ]
        return {"id": self.id, "name": self.name, "tracks": tracks}

    async def close(self) -> None:
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                await pc.close()


class Server:
    def __init__(self) -> None:
        self.clients: dict[str, Client] = {}
        self.relay = MediaRelay()
        self.publisher: Client | None = None

    async def offer_to(self, sub: Client) -> None:
        """Give a subscriber one connection carrying the publisher's tracks, re-encoded."""
        pub = self.publisher
        if pub is None or sub is pub or sub.subscribe_pc is not None or not pub.tracks:
            return
        pc = aiortc_glue.create_peer_connection([])
        sub.subscribe_pc = pc
        consumers = []
        for mid, track in pub.tracks:
            transceiver = pc.addTransceiver(self.relay.subscribe(track), direction="sendonly")
            want = "video/vp8" if track.kind == "video" else "audio/opus"
            codecs = RTCRtpSender.getCapabilities(track.kind).codecs
            transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() in (want, f"{track.kind}/rtx")])
            consumers.append((transceiver, mid, track))
        await pc.setLocalDescription(await pc.createOffer())
        described = [
            {
                "mid": t.mid,
                "participant": pub.id,
                "track": f"{pub.id}-{mid}",
                "kind": track.kind,
                "source": "microphone" if track.kind == "audio" else "camera",
            }
            for t, mid, track in consumers
        ]
        await sub.send({"type": "offer", "pc": "subscribe", "sdp": pc.localDescription.sdp, "consumers": described})

    async def handle(self, client: Client, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "ping":
            await client.send({"type": "pong"})
        elif kind == "join":
            client.name = str(msg.get("name", ""))
            others = [c.describe() for c in self.clients.values()]
            self.clients[client.id] = client
            await client.send(
                {
                    "type": "joined",
                    "protocol": 1,
                    "id": client.id,
                    "room": msg.get("room", ""),
                    "participants": others,
                    "ice_servers": [],
                    "heartbeat_interval_s": 2.0,
                    "max_message_bytes": 65536,
                }
            )
            await self.offer_to(client)
        elif kind == "offer" and msg.get("pc") == "publish":
            pc = aiortc_glue.create_peer_connection([])
            client.publish_pc = pc

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                mid = next(t.mid for t in pc.getTransceivers() if t.receiver.track is track)
                client.tracks.append((mid, track))

            await pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            await client.send({"type": "answer", "pc": "publish", "sdp": pc.localDescription.sdp})
            self.publisher = client
            for other in list(self.clients.values()):
                await self.offer_to(other)
        elif kind == "answer" and msg.get("pc") == "subscribe" and client.subscribe_pc is not None:
            await client.subscribe_pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "answer"))
        elif kind == "leave":
            await client.ws.close()
        # candidates: every SDP here already carries all candidates; other types are ignored

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=2.0)
        await ws.prepare(request)
        client = Client(ws)
        try:
            async for raw in ws:
                if raw.type != WSMsgType.TEXT:
                    break
                try:
                    await self.handle(client, json.loads(raw.data))
                except Exception:
                    logger.exception("handling a message failed")
                    await client.send({"type": "error", "code": "internal", "message": "internal error"})
        finally:
            self.clients.pop(client.id, None)
            if self.publisher is client:
                self.publisher = None
            await client.close()
        return ws


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> int:
    parser = argparse.ArgumentParser(description="naive MediaRelay baseline (decode + re-encode per subscriber)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--ice-host", action="append", dest="ice_hosts")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    aiortc_glue.set_host_addresses(args.ice_hosts)
    try:  # same event loop as the SFU, so the comparison is about the media path
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    server = Server()
    app = web.Application()
    app.router.add_get("/ws", server.websocket)
    app.router.add_get("/healthz", healthz)

    async def on_shutdown(app: web.Application) -> None:
        for c in list(server.clients.values()):
            await c.close()

    app.on_shutdown.append(on_shutdown)
    print(f"baseline (MediaRelay) listening on http://{args.host}:{args.port}/", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())

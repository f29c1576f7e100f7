"""The WebSocket loop: one per client socket, messages handled one at a time, in order."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from ..config import Config
from ..errors import SignalingError
from ..room import Participant, RoomManager
from ..tasks import spawn
from . import messages

logger = logging.getLogger(__name__)

# Frames up to this multiple of max_message_bytes get a "too-large" error reply; larger
# frames are refused by the WebSocket reader itself (close code 1009).
HARD_LIMIT_FACTOR = 4


class Session:
    """The server side of one client socket."""

    def __init__(self, ws: web.WebSocketResponse, rooms: RoomManager, config: Config) -> None:
        self.ws = ws
        self.rooms = rooms
        self.config = config
        self.participant: Participant | None = None
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.leave_reason = "disconnected"

    def post(self, msg: dict[str, Any]) -> None:
        self.outbox.put_nowait(msg)

    async def write_loop(self) -> None:
        while True:
            msg = await self.outbox.get()
            if msg is None or self.ws.closed:
                return
            try:
                await self.ws.send_str(json.dumps(msg, separators=(",", ":")))
            except (ConnectionError, RuntimeError):
                return

    async def handle_text(self, data: str) -> None:
        request: str | None = None
        try:
            if len(data.encode("utf-8", "surrogatepass")) > self.config.max_message_bytes:
                raise SignalingError(
                    "too-large", f"message exceeds max_message_bytes ({self.config.max_message_bytes})"
                )
            msg = messages.parse(data)
            request = msg["type"]
            await self.dispatch(msg)
        except SignalingError as exc:
            self.post(exc.to_wire(request))
        except Exception:
            logger.exception("internal error handling %s", request)
            self.post(SignalingError("internal", "internal server error").to_wire(request))

    async def dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "ping":
            self.post({"type": "pong"})
            return
        if kind == "join":
            await self.join(msg["room"], msg["name"])
            return
        participant = self.participant
        if participant is None:
            raise SignalingError("not-joined", f"'{kind}' before 'join'")
        if kind == "offer":
            await participant.handle_publish_offer(msg["sdp"], msg["sources"])
        elif kind == "answer":
            if participant.subscriber is None:
                raise SignalingError("wrong-state", "no subscribe offer is outstanding")
            await participant.subscriber.handle_answer(msg["sdp"])
        elif kind == "candidate":
            peer = participant.publisher if msg["pc"] == "publish" else participant.subscriber
            if peer is None:
                raise SignalingError("wrong-state", f"no {msg['pc']} connection yet")
            await peer.add_candidate(msg.get("candidate"))
        elif kind == "mute":
            producer = participant.set_muted(msg["track"], msg["muted"])
            participant.room.broadcast_mute(participant, producer)
        elif kind == "subscription":
            if not participant.room.has_track(msg["track"], exclude=participant):
                raise SignalingError("unknown-track", f"no other participant publishes {msg['track']!r}")
            participant.ensure_subscriber().set_preferences(msg["track"], msg["max_height"], msg["paused"])
        elif kind == "chat":
            participant.room.chat(participant, msg["text"])
        elif kind == "leave":
            self.leave_reason = "left"
            await self.ws.close()

    async def join(self, room_name: str, name: str) -> None:
        if self.participant is not None:
            raise SignalingError("already-joined", "this socket has already joined a room")
        room = self.rooms.get_or_create(room_name)
        try:
            participant = Participant(room, name, self.post, self.config)
            room.join(
                participant,
                {
                    "ice_servers": list(self.config.ice_servers),
                    "heartbeat_interval_s": self.config.heartbeat_interval_s,
                    "max_message_bytes": self.config.max_message_bytes,
                },
            )
        finally:
            if not room.participants:
                self.rooms.discard_if_empty(room)
        self.participant = participant
        participant.on_transport_failed = self._transport_failed

    def _transport_failed(self, participant: Participant) -> None:
        logger.info("participant %s: peer connection failed", participant.id)
        self.leave_reason = "disconnected"
        spawn(self.ws.close(), name=f"close-{participant.id}")

    async def finish(self) -> None:
        participant, self.participant = self.participant, None
        if participant is not None:
            await participant.room.leave(participant, self.leave_reason)
        self.outbox.put_nowait(None)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    from ..app import CONFIG_KEY, ROOMS_KEY

    config = request.app[CONFIG_KEY]
    ws = web.WebSocketResponse(
        heartbeat=config.heartbeat_interval_s,
        max_msg_size=config.max_message_bytes * HARD_LIMIT_FACTOR,
    )
    await ws.prepare(request)
    session = Session(ws, request.app[ROOMS_KEY], config)
    writer = spawn(session.write_loop(), name="ws-writer")
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await session.handle_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                session.post(SignalingError("bad-json", "binary frames are not supported").to_wire())
            elif msg.type == WSMsgType.ERROR:
                break
        exc = ws.exception()
        if exc is not None and session.leave_reason != "left":
            if isinstance(exc, asyncio.TimeoutError):
                session.leave_reason = "timeout"
            elif ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
                session.leave_reason = "disconnected"
    finally:
        await session.finish()
        await writer
        if not ws.closed:
            await ws.close()
    return ws

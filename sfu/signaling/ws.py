"""The WebSocket loop: one per client socket, messages handled one at a time, in order."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from .. import auth, turn
from ..config import Config
from ..errors import SignalingError
from ..metrics import ServerStats
from ..room import Participant, RoomManager
from ..tasks import spawn
from . import messages

logger = logging.getLogger(__name__)

# Frames up to this multiple of max_message_bytes get a "too-large" error reply; larger
# frames are refused by the WebSocket reader itself (close code 1009).
HARD_LIMIT_FACTOR = 4


class _Close:
    """Outbox item: close the socket (after everything queued before it was sent)."""

    def __init__(self, code: int) -> None:
        self.code = code


class Session:
    """The server side of one client socket."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        rooms: RoomManager,
        config: Config,
        stats: ServerStats | None = None,
        claims: auth.Claims | None = None,
    ) -> None:
        self.ws = ws
        self.rooms = rooms
        self.config = config
        self.stats = stats or ServerStats()
        # Claims of a token given as ?token= on /ws (a token in `join` takes precedence).
        self.url_claims = claims
        self.participant: Participant | None = None
        self.outbox: asyncio.Queue[dict[str, Any] | _Close | None] = asyncio.Queue()
        self.leave_reason = "disconnected"

    def post(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == "error":
            self.stats.count_error(str(msg.get("code")))
        self.outbox.put_nowait(msg)

    async def write_loop(self) -> None:
        while True:
            msg = await self.outbox.get()
            if msg is None or self.ws.closed:
                return
            if isinstance(msg, _Close):
                await self.ws.close(code=msg.code)
                return
            try:
                await self.ws.send_str(json.dumps(msg, separators=(",", ":")))
            except (ConnectionError, RuntimeError):
                return

    async def disconnect(self, leave_reason: str, code: str | None, message: str, close_code: int) -> None:
        """Remove the participant now (the others see ``participant-left`` with
        ``leave_reason``), tell the client why with an error ``code`` (None: no message),
        then close the socket with ``close_code``."""
        self.leave_reason = leave_reason
        participant, self.participant = self.participant, None
        if participant is not None:
            await participant.room.leave(participant, leave_reason)
        if code is not None:
            self.post(SignalingError(code, message).to_wire())
        self.outbox.put_nowait(_Close(close_code))

    def notify_shutdown(self, grace_s: float) -> None:
        self.post(
            SignalingError(
                "shutting-down", f"the server is shutting down; this connection closes in {grace_s:g} s"
            ).to_wire()
            | {"grace_s": grace_s}
        )

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
            await self.join(msg["room"], msg["name"], msg.get("token"))
            return
        participant = self.participant
        if participant is None or participant.closed:
            raise SignalingError("not-joined", f"'{kind}' before 'join'")
        if kind in ("offer", "mute") and not participant.can("publish"):
            raise SignalingError("forbidden", f"your token does not grant publish ('{kind}')")
        if kind == "subscription" and not participant.can("subscribe"):
            raise SignalingError("forbidden", "your token does not grant subscribe")
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
            participant.ensure_subscriber().set_preferences(
                msg["track"], msg["max_height"], msg["paused"], pinned=msg["pinned"]
            )
        elif kind == "chat":
            participant.room.chat(participant, msg["text"])
        elif kind == "leave":
            self.leave_reason = "left"
            await self.ws.close()

    def authorize(self, room_name: str, token: str | None) -> auth.Claims:
        """The claims this join is made with, or SignalingError unauthorized."""
        if token is not None:
            if not self.config.auth_enabled:
                raise SignalingError("unauthorized", "this server does not use tokens (no auth_secret)")
            claims = auth.verify(self.config.auth_secret, token)
        elif self.url_claims is not None:
            claims = self.url_claims
        elif self.config.open_rooms:
            return auth.open_claims()
        else:
            raise SignalingError("unauthorized", "this server needs an access token ('token' in join)")
        if not claims.covers(room_name):
            raise SignalingError("unauthorized", f"the token is not for room {room_name!r}")
        return claims

    async def join(self, room_name: str, name: str, token: str | None = None) -> None:
        if self.participant is not None:
            raise SignalingError("already-joined", "this socket has already joined a room")
        try:
            claims = self.authorize(room_name, token)
        except SignalingError:
            self.stats.auth_failures += 1
            raise
        room = self.rooms.get_or_create(room_name)
        try:
            participant = Participant(room, claims.name or name, self.post, self.config)
            participant.identity = claims.identity or participant.id
            participant.grants = claims.grants
            room.join(
                participant,
                {
                    "ice_servers": turn.ice_servers_for(self.config, participant.identity),
                    "heartbeat_interval_s": self.config.heartbeat_interval_s,
                    "max_message_bytes": self.config.max_message_bytes,
                },
            )
        finally:
            if not room.participants:
                self.rooms.discard_if_empty(room)
        self.participant = participant
        self.stats.joins += 1
        participant.on_transport_failed = self._transport_failed
        participant.session = self

    def _transport_failed(self, participant: Participant) -> None:
        logger.info("participant %s: peer connection failed", participant.id)
        self.leave_reason = "disconnected"
        spawn(self.ws.close(), name=f"close-{participant.id}")

    async def finish(self) -> None:
        participant, self.participant = self.participant, None
        if participant is not None:
            await participant.room.leave(participant, self.leave_reason)
        self.outbox.put_nowait(None)


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"type": "error", "code": code, "message": message}, status=status)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    from ..app import CONFIG_KEY, ROOMS_KEY, SESSIONS_KEY, STATS_KEY

    config = request.app[CONFIG_KEY]
    stats = request.app[STATS_KEY]
    claims = None
    token = request.query.get("token")
    if token is not None:
        # A bad token in the URL is refused before the upgrade: no socket at all.
        try:
            if not config.auth_enabled:
                raise SignalingError("unauthorized", "this server does not use tokens (no auth_secret)")
            claims = auth.verify(config.auth_secret, token)
        except SignalingError as exc:
            stats.auth_failures += 1
            stats.count_error(exc.code)
            return error_response(401, exc.code, exc.message)
    if request.app[ROOMS_KEY].draining:
        stats.count_error("shutting-down")
        return error_response(503, "shutting-down", "the server is shutting down")
    ws = web.WebSocketResponse(
        heartbeat=config.heartbeat_interval_s,
        max_msg_size=config.max_message_bytes * HARD_LIMIT_FACTOR,
    )
    await ws.prepare(request)
    session = Session(ws, request.app[ROOMS_KEY], config, stats, claims)
    sessions = request.app[SESSIONS_KEY]
    sessions.add(session)
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
        sessions.discard(session)
        await session.finish()
        await writer
        if not ws.closed:
            await ws.close()
    return ws

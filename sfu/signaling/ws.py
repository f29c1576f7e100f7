"""The WebSocket loop: one per client socket.

Three tasks per socket. The reader only reads: it answers WebSocket pings, notes pongs (the
only proof of liveness), applies the message rate limit and queues text frames. The handler
handles the queued messages one at a time, in order. The writer sends what the session
posted; what waits for a client that does not read is bounded (``max_queued_bytes``), past it
the client is dropped. Besides: a heartbeat (a ping every ``heartbeat_interval_s``, a pong due
before the next ping) and the deadline to send ``join``.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from .. import auth, turn
from ..config import Config
from ..errors import BadRequest, Conflict, NotAuthorised, ServerError, SignalingError
from ..room import Participant, RoomManager
from ..state import CONFIG_KEY, CONNECTIONS_KEY, ROOMS_KEY, STATS_KEY
from ..stats import ServerStats
from ..tasks import spawn
from . import limits
from .http import refuse
from .messages import (
    Candidate,
    Chat,
    ClientMessage,
    Join,
    Leave,
    Mute,
    Ping,
    PublishOffer,
    Renew,
    Resume,
    SubscribeAnswer,
    Subscription,
    parse,
)
from .server_messages import Error, JoinInfo, Pong, ServerMessage, ServerShutdown

logger = logging.getLogger(__name__)

# Frames up to this multiple of max_message_bytes get a "too-large" error reply; larger
# frames are refused by the WebSocket reader itself (close code 1009).
HARD_LIMIT_FACTOR = 4
# How long a close handshake may take before the connection is cut.
CLOSE_TIMEOUT_S = 3.0
# A client dropped for not reading gets this long to take its close frame.
ABORT_AFTER_S = 1.0


class _Close:
    """Outbox item: close the socket (after everything queued before it was sent)."""

    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code


class _Pong:
    """Outbox item: answer a WebSocket ping."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


_Outgoing = str | _Pong | _Close | None


class Session:
    """The server side of one client socket."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        rooms: RoomManager,
        config: Config,
        stats: ServerStats | None = None,
        claims: auth.Claims | None = None,
        transport: asyncio.BaseTransport | None = None,
    ) -> None:
        self.ws = ws
        self.rooms = rooms
        self.config = config
        self.stats = stats or ServerStats()
        self.transport = transport
        # Claims of a token given as ?token= on /ws (a token in `join` takes precedence).
        self.url_claims = claims
        self.participant: Participant | None = None
        self.leave_reason = "disconnected"
        self._outbox: deque[_Outgoing] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue(maxsize=max(1, config.message_burst))
        loop = asyncio.get_running_loop()
        self._bucket = limits.TokenBucket.full(config.messages_per_s, config.message_burst, loop.time())
        self._pong = asyncio.Event()
        self._dropped = False
        self._over_rate = False
        self._ever_joined = False
        self.closed_deliberately = False  # the client sent a close frame with code 1000 or 1001

    @property
    def joined(self) -> bool:
        return self.participant is not None

    # -- sending ----------------------------------------------------------------------------

    def post(self, msg: ServerMessage) -> None:
        if isinstance(msg, Error):
            self.stats.count_error(msg.error.code)
        self._enqueue(msg.encode())

    def _enqueue(self, item: _Outgoing) -> None:
        if self._dropped:
            return
        if isinstance(item, str):
            self._queued_bytes += len(item)
            waiting = self._queued_bytes
            if self.transport is not None:
                waiting += self.transport.get_write_buffer_size()  # type: ignore[attr-defined]
            # (one message alone is never too much: only what piles up behind it)
            if waiting > self.config.max_queued_bytes and waiting > len(item):
                self._drop_slow_reader()
                return
        self._outbox.append(item)
        self._wake.set()

    def _drop_slow_reader(self) -> None:
        """The client does not read what we send: stop buffering, close, cut the connection."""
        logger.info("dropping a client that does not read (%d bytes waiting)", self._queued_bytes)
        self.stats.count_limit("send-queue")
        self._dropped = True
        self._outbox.clear()
        self._queued_bytes = 0
        self._outbox.append(None)
        self._wake.set()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            frame = struct.pack("!BBH", 0x88, 2, limits.CLOSE_SEND_QUEUE_FULL)
            transport.write(frame)  # type: ignore[attr-defined]
            transport.close()
            asyncio.get_running_loop().call_later(ABORT_AFTER_S, transport.abort)  # type: ignore[attr-defined]

    async def write_loop(self) -> None:
        while True:
            while not self._outbox:
                self._wake.clear()
                await self._wake.wait()
            item = self._outbox.popleft()
            if item is None or self.ws.closed:
                return
            try:
                if isinstance(item, _Close):
                    await self.ws.close(code=item.code)
                    return
                if isinstance(item, _Pong):
                    await self.ws.pong(item.data)
                    continue
                await self.ws.send_str(item)
                self._queued_bytes -= len(item)
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
            self.post(Error(SignalingError(code, message)))
        self._enqueue(_Close(close_code))

    def notify_shutdown(self, grace_s: float) -> None:
        self.post(ServerShutdown(grace_s))

    # -- reading ----------------------------------------------------------------------------

    async def read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            msg = await self.ws.receive()
            if msg.type == WSMsgType.CLOSE:
                # A close frame: 1000 (normal) or 1001 (going away) is the client's decision to
                # go, any other code (or none, a connection that just broke) a lost socket.
                self.closed_deliberately = msg.data in (1000, 1001)
                break
            if msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED):
                break
            if msg.type == WSMsgType.PONG:
                self._pong.set()
                continue
            if not self._bucket.take(loop.time()):
                # Dropped and counted; told once per burst over the rate, so that the
                # replies to a flood are bounded by the rate too.
                self.stats.count_limit("rate")
                if not self._over_rate:
                    self._over_rate = True
                    self.post(Error(BadRequest("rate-limited", "too many messages; slow down")))
                continue
            self._over_rate = False
            if msg.type == WSMsgType.PING:
                self._enqueue(_Pong(msg.data))
            elif msg.type == WSMsgType.TEXT:
                self._receive_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                self.post(Error(BadRequest("bad-json", "binary frames are not supported")))
            elif msg.type == WSMsgType.ERROR:
                break

    def _receive_text(self, data: str) -> None:
        limit = self.config.max_message_bytes
        if len(data) > limit or (len(data) * 4 > limit and len(data.encode("utf-8", "surrogatepass")) > limit):
            self.post(Error(BadRequest("too-large", f"message exceeds max_message_bytes ({limit})")))
            return
        try:
            self._inbox.put_nowait(data)
        except asyncio.QueueFull:
            self.stats.count_limit("rate")
            self.post(Error(BadRequest("rate-limited", "too many messages waiting; slow down")))

    def stop_handling(self) -> None:
        try:
            self._inbox.put_nowait(None)
        except asyncio.QueueFull:  # the queued messages go first, then the loop ends
            self._inbox = _closed_after(self._inbox)

    async def handle_loop(self) -> None:
        while True:
            data = await self._inbox.get()
            if data is None:
                return
            await self.handle_text(data)

    async def handle_text(self, data: str) -> None:
        request: str | None = None
        try:
            msg = parse(data)
            request = msg.TYPE
            await self.dispatch(msg)
        except SignalingError as exc:
            self.post(Error(exc, request or exc.request))
        except Exception:
            logger.exception("internal error handling %s", request)
            self.post(Error(ServerError("internal", "internal server error"), request))

    async def dispatch(self, msg: ClientMessage) -> None:
        match msg:
            case Ping():
                self.post(Pong())
                return
            case Join(room=room, name=name, token=token):
                await self.join(room, name, token)
                return
            case Resume(room=room, token=token, participant_id=participant_id):
                await self.resume(room, token, participant_id)
                return
        participant = self.participant
        if participant is None or participant.closed:
            raise BadRequest("not-joined", f"'{msg.TYPE}' before 'join'")
        match msg:
            case PublishOffer(sdp=sdp, sources=sources, restart=restart):
                self._need(participant, "publish", msg.TYPE)
                await participant.handle_publish_offer(sdp, dict(sources), restart)
            case Renew():
                await participant.renew_subscriber()
            case SubscribeAnswer(sdp=sdp):
                if participant.subscriber is None:
                    raise BadRequest("wrong-state", "no subscribe offer is outstanding")
                await participant.subscriber.handle_answer(sdp)
            case Candidate(pc=pc, candidate=candidate):
                peer = participant.publisher if pc == "publish" else participant.subscriber
                if peer is None:
                    raise BadRequest("wrong-state", f"no {pc} connection yet")
                await peer.add_candidate(None if candidate is None else candidate.to_wire())
            case Mute(track=track, muted=muted):
                self._need(participant, "publish", msg.TYPE)
                producer = participant.set_muted(track, muted)
                participant.room.broadcast_mute(participant, producer)
            case Subscription(track=track, max_height=max_height, paused=paused, pinned=pinned):
                if not participant.can("subscribe"):
                    raise NotAuthorised("forbidden", "your token does not grant subscribe")
                if not participant.room.has_track(track, exclude=participant):
                    raise BadRequest("unknown-track", f"no other participant publishes {track!r}")
                participant.ensure_subscriber().set_preferences(track, max_height, paused, pinned=pinned)
            case Chat(text=text):
                participant.room.chat(participant, text)
            case Leave():
                self.leave_reason = "left"
                await self.ws.close()

    @staticmethod
    def _need(participant: Participant, grant: str, kind: str) -> None:
        if not participant.can(grant):
            raise NotAuthorised("forbidden", f"your token does not grant {grant} ('{kind}')")

    def authorize(self, room_name: str, token: str | None) -> auth.Claims:
        """The claims this join is made with, or NotAuthorised unauthorized."""
        if token is not None:
            if not self.config.auth_enabled:
                raise NotAuthorised("unauthorized", "this server does not use tokens (no auth_secret)")
            claims = auth.verify(self.config.auth_secret, token)
        elif self.url_claims is not None:
            claims = self.url_claims
        elif self.config.open_rooms:
            return auth.open_claims()
        else:
            raise NotAuthorised("unauthorized", "this server needs an access token ('token' in join)")
        if not claims.covers(room_name):
            raise NotAuthorised("unauthorized", f"the token is not for room {room_name!r}")
        return claims

    async def join(self, room_name: str, name: str, token: str | None = None) -> None:
        if self.participant is not None:
            raise BadRequest("already-joined", "this socket has already joined a room")
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
            room.join(participant, self._join_info(participant))
        finally:
            if not room.participants:
                self.rooms.discard_if_empty(room)
        self.participant = participant
        self._ever_joined = True
        self.stats.joins += 1
        participant.session = self

    def _join_info(self, participant: Participant) -> JoinInfo:
        return JoinInfo(
            tuple(turn.ice_servers_for(self.config, participant.identity)),
            self.config.heartbeat_interval_s,
            self.config.max_message_bytes,
            self.config.resume_grace_s,
        )

    async def resume(self, room_name: str, token: str, participant_id: str | None) -> None:
        """Take back a participant whose socket was lost (``resume``, the first message of
        this socket); the token is spent whatever happens."""
        if self._ever_joined:
            raise BadRequest("already-joined", "resume must be the first message of a socket")
        participant = self.rooms.find_resumable(room_name, token, participant_id)
        self.participant = participant
        self._ever_joined = True
        self.stats.resumes += 1
        participant.room.resume(participant, self.post, self, self._join_info(participant))

    def release(self) -> None:
        """Another socket resumed our participant: let go of it and close this socket."""
        self.participant = None
        self.leave_reason = "left"
        self._enqueue(_Close(limits.CLOSE_RESUMED_ELSEWHERE))

    # -- liveness and deadlines ---------------------------------------------------------------

    async def heartbeat(self) -> None:
        """A ping every heartbeat_interval_s; no pong before the next ping is due: the client
        is gone. Only pongs count: a client that sends but does not answer is dropped all the
        same. (A whole interval, not less: on a busy machine our own loop may take a while to
        read a pong that arrived in time.)"""
        interval_s = self.config.heartbeat_interval_s
        while not self.ws.closed:
            await asyncio.sleep(interval_s)
            self._pong.clear()
            try:
                await asyncio.wait_for(self.ws.ping(), interval_s)
                await asyncio.wait_for(self._pong.wait(), interval_s)
            except (ConnectionError, RuntimeError):
                return
            except TimeoutError:
                if self.ws.closed:
                    return
                logger.info("no pong within %.1f s: closing", interval_s)
                self.stats.count_limit("heartbeat")
                if self.leave_reason != "left":
                    self.leave_reason = "timeout"
                if self.transport is not None:
                    self.transport.abort()  # type: ignore[attr-defined]
                return

    async def join_deadline(self) -> None:
        await asyncio.sleep(self.config.join_timeout_s)
        if not self._ever_joined and not self.ws.closed:
            self.stats.count_limit("join-timeout")
            self.post(Error(Conflict("join-timeout", f"no join within {self.config.join_timeout_s:g} s")))
            self._enqueue(_Close(limits.CLOSE_JOIN_TIMEOUT))

    async def finish(self) -> None:
        participant, self.participant = self.participant, None
        if participant is not None:
            # A socket lost without a `leave` (closed, or no pong): the participant is kept for
            # resume_grace_s, for a `resume` on a new socket; else it leaves now.
            lost = (
                self.leave_reason in ("disconnected", "timeout")
                and not self.closed_deliberately
                and not self._dropped  # dropped by us for not reading: no second chance
                and not self.rooms.draining
            )
            if not (lost and participant.room.suspend(participant)):
                await participant.room.leave(participant, self.leave_reason)
        self._outbox.append(None)
        self._wake.set()


def _closed_after(inbox: asyncio.Queue[str | None]) -> asyncio.Queue[str | None]:
    """A queue with ``inbox``'s messages and then the end."""
    out: asyncio.Queue[str | None] = asyncio.Queue()
    while not inbox.empty():
        out.put_nowait(inbox.get_nowait())
    out.put_nowait(None)
    return out


def _admission(request: web.Request) -> SignalingError | None:
    """Why this upgrade is refused before it happens, or None."""
    app = request.app
    config, stats, connections = app[CONFIG_KEY], app[STATS_KEY], app[CONNECTIONS_KEY]
    if app[ROOMS_KEY].draining:
        return Conflict("shutting-down", "the server is shutting down")
    if len(connections) >= config.max_connections:
        stats.count_limit("connections")
        return Conflict("too-many-connections", f"the server has {config.max_connections} connections open")
    if connections.on_address(request.remote or "") >= config.max_connections_per_address:
        stats.count_limit("connections-per-address")
        return Conflict(
            "too-many-connections", f"{config.max_connections_per_address} connections from your address are open"
        )
    return None


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    config, stats, connections = app[CONFIG_KEY], app[STATS_KEY], app[CONNECTIONS_KEY]
    claims = None
    token = request.query.get("token")
    if token is not None:
        # A bad token in the URL is refused before the upgrade: no socket at all.
        try:
            if not config.auth_enabled:
                raise NotAuthorised("unauthorized", "this server does not use tokens (no auth_secret)")
            claims = auth.verify(config.auth_secret, token)
        except SignalingError as exc:
            stats.auth_failures += 1
            return refuse(request, exc)
    refusal = _admission(request)
    if refusal is not None:
        return refuse(request, refusal)
    ws = web.WebSocketResponse(
        heartbeat=None,
        autoping=False,
        timeout=CLOSE_TIMEOUT_S,
        # One more byte than the largest frame answered with too-large: aiohttp refuses
        # frames of max_msg_size and more.
        max_msg_size=config.max_message_bytes * HARD_LIMIT_FACTOR + 1,
    )
    await ws.prepare(request)
    session = Session(ws, app[ROOMS_KEY], config, stats, claims, request.transport)
    address = request.remote or ""
    connections.add(session, address)
    tasks: list[asyncio.Task[Any]] = [
        spawn(session.write_loop(), name="ws-writer"),
        spawn(session.handle_loop(), name="ws-handler"),
        spawn(session.heartbeat(), name="ws-heartbeat"),
        spawn(session.join_deadline(), name="ws-join-deadline"),
    ]
    writer, handler = tasks[0], tasks[1]
    try:
        await session.read_loop()
        if ws.exception() is not None and session.leave_reason not in ("left", "timeout"):
            session.leave_reason = "disconnected"
    finally:
        connections.discard(session)
        for task in tasks[2:]:
            task.cancel()
        session.stop_handling()
        try:
            # What was read before the socket closed (a `leave`, say) is still handled.
            await asyncio.wait_for(asyncio.shield(handler), CLOSE_TIMEOUT_S)
        except TimeoutError:
            handler.cancel()
        await session.finish()
        await writer
        if not ws.closed:
            await ws.close()
    return ws

"""The front process's signaling relay: a client's WebSocket, piped to the worker that hosts
its room (on this node or another).

The front reads the client's first message that names a room (``join``; any message with a
``room``), asks the coordinator where the room lives (``place_room``: its placement, or a new
one), opens a WebSocket to that worker's internal ``/ws`` with the deployment's secret and the
client's address, replays the message and then pipes frames both ways, pings and pongs
included (so the worker's liveness check still measures the client). Close codes and reasons
pass through; either side closing closes the other. Before that first message the front answers
like the server would (``pong``; ``not-joined``; parse errors).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import WSMsgType, web

from .. import auth
from ..config import Config
from ..errors import BadRequest, Conflict, NotAuthorised, SignalingError
from ..signaling.limits import CLOSE_JOIN_TIMEOUT, CLOSE_SERVICE_RESTART, CLOSE_TRY_AGAIN_LATER, TokenBucket
from ..signaling.messages import ROOM_RE, Ping, parse
from ..signaling.server_messages import Error, Pong, ServerMessage
from ..stats import ServerStats
from ..tasks import spawn
from .coordinator import Coordinator, CoordinatorUnavailable, NoCapacity, Placement
from .internal import CLIENT_ADDRESS_HEADER, SECRET_HEADER
from .span_wire import spanning_headers

logger = logging.getLogger(__name__)

HARD_LIMIT_FACTOR = 4  # as the worker's reader: frames over 4 x max_message_bytes close the socket
CLOSE_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 5.0
# A placement whose worker cannot be reached (it just died) is released and the room placed
# again, this many times.
PLACE_ATTEMPTS = 3
# Close codes a peer may not send (RFC 6455 7.4.1): replaced by 1000 when passed on.
_RESERVED_CLOSE = frozenset({1005, 1006, 1015})
WORKER_LOST_REASON = "the server process hosting the room stopped: join again"


@dataclass
class RelayStats:
    """What the front counts about its relays."""

    open: int = 0
    per_address: Counter[str] = field(default_factory=Counter)
    relayed: int = 0
    worker_lost: int = 0
    placement_failures: Counter[str] = field(default_factory=Counter)


@dataclass
class RelayContext:
    config: Config
    node_id: str
    secret: str
    coordinator: Coordinator
    session: aiohttp.ClientSession
    stats: ServerStats
    relays: RelayStats
    is_draining: Callable[[], bool]
    # A placement's worker could not be reached: forget the placement (the front releases it).
    on_unreachable: Callable[[Placement], Awaitable[None]]
    # The room's worker if it runs on this node (from the workers' last load reports), else None.
    local_placement: Callable[[str], Placement | None]
    # True for one node_ttl_s after the coordinator came back: rooms are only looked up, not
    # placed, until every node has written its running rooms back.
    placement_held: Callable[[], bool]
    # The worker a new participant of a room placed at this placement joins, when not the
    # room's home (its worker is at its limit, or participant_placement = "local" keeps the
    # participant on this node): the room then spans both (sfu/cluster/span.py). None: the home.
    participant_worker: Callable[[str, Placement], Awaitable[Placement | None]] | None = None


def _admission(ctx: RelayContext, address: str) -> SignalingError | None:
    config = ctx.config
    if ctx.is_draining():
        return Conflict("shutting-down", "the server is shutting down")
    if ctx.relays.open >= config.max_connections:
        ctx.stats.count_limit("connections")
        return Conflict("too-many-connections", f"the server has {config.max_connections} connections open")
    if ctx.relays.per_address[address] >= config.max_connections_per_address:
        ctx.stats.count_limit("connections-per-address")
        return Conflict(
            "too-many-connections", f"{config.max_connections_per_address} connections from your address are open"
        )
    return None


def _refuse(ctx: RelayContext, exc: SignalingError) -> web.Response:
    ctx.stats.count_error(exc.code)
    return web.json_response(Error(exc).to_wire(), status=exc.status)


def room_of(text: str) -> str | None:
    """The room a client message names, if it is a JSON object with a valid ``room``."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    room = data.get("room") if isinstance(data, dict) else None
    return room if isinstance(room, str) and ROOM_RE.fullmatch(room) else None


class _Client:
    """The client side of one relay, before its room is known."""

    def __init__(self, ws: web.WebSocketResponse, ctx: RelayContext) -> None:
        self.ws = ws
        self.ctx = ctx
        loop = asyncio.get_running_loop()
        self.bucket = TokenBucket.full(ctx.config.messages_per_s, ctx.config.message_burst, loop.time())

    async def post(self, msg: ServerMessage) -> None:
        if isinstance(msg, Error):
            self.ctx.stats.count_error(msg.error.code)
        await self.ws.send_str(msg.encode())

    async def first_room_message(self) -> tuple[str, str] | None:
        """Read until a message names a room: (the text, the room). None: the socket closed
        or the join deadline passed (the socket is then closed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ctx.config.join_timeout_s
        over_rate = False
        while True:
            try:
                msg = await self.ws.receive(timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                self.ctx.stats.count_limit("join-timeout")
                error = Conflict("join-timeout", f"no join within {self.ctx.config.join_timeout_s:g} s")
                await self.post(Error(error))
                await self.ws.close(code=CLOSE_JOIN_TIMEOUT)
                return None
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return None
            if not self.bucket.take(loop.time()):
                self.ctx.stats.count_limit("rate")
                if not over_rate:  # told once per burst over the rate, as by the server
                    over_rate = True
                    await self.post(Error(BadRequest("rate-limited", "too many messages; slow down")))
                continue
            over_rate = False
            if msg.type == WSMsgType.PING:
                await self.ws.pong(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await self.post(Error(BadRequest("bad-json", "binary frames are not supported")))
            elif msg.type == WSMsgType.TEXT:
                text = msg.data
                room = room_of(text)
                if room is not None:
                    return text, room
                await self._answer_without_room(text)

    async def _answer_without_room(self, text: str) -> None:
        """As the server answers a message before ``join``."""
        limit = self.ctx.config.max_message_bytes
        if len(text.encode("utf-8", "surrogatepass")) > limit:
            await self.post(Error(BadRequest("too-large", f"message exceeds max_message_bytes ({limit})")))
            return
        try:
            parsed = parse(text)
        except SignalingError as exc:
            await self.post(Error(exc, exc.request))
            return
        if isinstance(parsed, Ping):
            await self.post(Pong())
        else:
            await self.post(Error(BadRequest("not-joined", f"'{parsed.TYPE}' before 'join'"), parsed.TYPE))


async def _place(ctx: RelayContext, room: str) -> Placement:
    if ctx.placement_held():
        placement = await ctx.coordinator.placement(room)
        if placement is None:
            raise CoordinatorUnavailable("the shared state came back: the running rooms are being written back")
        return placement
    return await ctx.coordinator.place_room(room, prefer_node=ctx.node_id)


async def _connect(
    ctx: RelayContext, room: str, request: web.Request
) -> tuple[aiohttp.ClientWebSocketResponse, Placement]:
    """A WebSocket to the worker of the room's placement; a placement whose worker cannot be
    reached is dropped and the room placed again. Raises SignalingError (unavailable,
    no-capacity)."""
    headers = {SECRET_HEADER: ctx.secret, CLIENT_ADDRESS_HEADER: request.remote or ""}
    last_error = ""
    # A room that runs on one of this node's workers is joined there without asking the
    # coordinator: it needs no placement (and so works while Redis is unreachable).
    local = ctx.local_placement(room)
    for attempt in range(PLACE_ATTEMPTS):
        try:
            placement = local if local is not None and attempt == 0 else await _place(ctx, room)
        except CoordinatorUnavailable as exc:
            ctx.relays.placement_failures["unavailable"] += 1
            raise Conflict("unavailable", "the cluster cannot place the room now; try again in a moment") from exc
        except NoCapacity as exc:
            ctx.relays.placement_failures["no-capacity"] += 1
            raise Conflict("no-capacity", "every server is at capacity; try again later") from exc
        target, span_headers = placement, {}
        elsewhere = await ctx.participant_worker(room, placement) if ctx.participant_worker else None
        if elsewhere is not None and elsewhere.worker_id != placement.worker_id:
            target, span_headers = elsewhere, spanning_headers(room, placement)
        url = f"{target.url}/ws"
        if request.query_string:
            url += "?" + request.query_string
        try:
            upstream = await ctx.session.ws_connect(
                url,
                headers={**headers, **span_headers},
                autoping=False,
                autoclose=False,
                max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S),
            )
            return upstream, placement
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 503:  # the worker is shutting down or full of sockets
                last_error = f"worker {placement.worker_id} refused: {exc.status}"
            else:
                last_error = f"worker {placement.worker_id}: HTTP {exc.status}"
                break
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            last_error = f"worker {placement.worker_id} unreachable: {exc!r}"
        logger.info("room %s: %s; placing it again", room, last_error)
        await ctx.on_unreachable(placement)
    ctx.relays.placement_failures["unreachable"] += 1
    logger.warning("room %s: no worker reached (%s)", room, last_error)
    raise Conflict("unavailable", "the server hosting the room cannot be reached; try again in a moment")


def _close_args(code: int | None, reason: str) -> tuple[int, bytes]:
    if code is None or code in _RESERVED_CLOSE or not (1000 <= code < 5000):
        return 1000, reason.encode()[:120]
    return code, reason.encode()[:120]


async def _pipe_client_to_worker(ws: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    while True:
        msg = await ws.receive()
        if msg.type == WSMsgType.TEXT:
            await upstream.send_str(msg.data)
        elif msg.type == WSMsgType.PING:
            await upstream.ping(msg.data)
        elif msg.type == WSMsgType.PONG:
            await upstream.pong(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await upstream.send_bytes(msg.data)
        elif msg.type == WSMsgType.CLOSE:  # the client closes: so does the worker, same code
            code, reason = _close_args(msg.data, msg.extra or "")
            await upstream.close(code=code, message=reason)
            await ws.close(code=code)
            return
        elif msg.type == WSMsgType.CLOSING:  # we are closing it (the worker's side ended)
            return
        else:  # CLOSED, ERROR: the client's connection is gone
            await upstream.close()
            return


async def _pipe_worker_to_client(
    ws: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse, relays: RelayStats
) -> None:
    while True:
        msg = await upstream.receive()
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.PING:
            await ws.ping(msg.data)
        elif msg.type == WSMsgType.PONG:
            await ws.pong(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
        elif msg.type == WSMsgType.CLOSE:  # the worker closes (kick, drain...): code and reason passed on
            code, reason = _close_args(msg.data, msg.extra or "")
            await upstream.close()
            await ws.close(code=code, message=reason)
            return
        elif msg.type == WSMsgType.CLOSING:  # we are closing it (the client's side ended)
            return
        else:  # the connection broke without a close frame: the worker's process is gone
            relays.worker_lost += 1
            await ws.close(code=CLOSE_SERVICE_RESTART, message=WORKER_LOST_REASON.encode())
            return


async def _guarded(pipe: Awaitable[None]) -> None:
    try:
        await pipe
    except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
        logger.debug("relay pipe ended: %r", exc)


async def relay_handler(request: web.Request, ctx: RelayContext) -> web.StreamResponse:
    config = ctx.config
    token = request.query.get("token")
    if token is not None:  # a bad token in the URL is refused before the upgrade, as by a worker
        try:
            if not config.auth_enabled:
                raise NotAuthorised("unauthorized", "this server does not use tokens (no auth_secret)")
            auth.verify(config.auth_secret, token)
        except SignalingError as exc:
            ctx.stats.auth_failures += 1
            return _refuse(ctx, exc)
    address = request.remote or ""
    refusal = _admission(ctx, address)
    if refusal is not None:
        return _refuse(ctx, refusal)
    ws = web.WebSocketResponse(
        heartbeat=None,
        autoping=False,
        autoclose=False,
        timeout=CLOSE_TIMEOUT_S,
        max_msg_size=config.max_message_bytes * HARD_LIMIT_FACTOR + 1,
    )
    await ws.prepare(request)
    ctx.relays.open += 1
    ctx.relays.per_address[address] += 1
    try:
        await _relay(ws, request, ctx)
    except (ConnectionError, RuntimeError) as exc:
        logger.debug("relay ended: %r", exc)
    finally:
        ctx.relays.open -= 1
        ctx.relays.per_address[address] -= 1
        if ctx.relays.per_address[address] <= 0:
            del ctx.relays.per_address[address]
        if not ws.closed:
            await ws.close()
    return ws


async def _relay(ws: web.WebSocketResponse, request: web.Request, ctx: RelayContext) -> None:
    client = _Client(ws, ctx)
    first = await client.first_room_message()
    if first is None:
        return
    text, room = first
    try:
        upstream, _placement = await _connect(ctx, room, request)
    except SignalingError as exc:
        request_type = None
        try:
            kind = json.loads(text).get("type")
            request_type = kind if isinstance(kind, str) and len(kind) <= 32 else None
        except ValueError:
            pass
        await client.post(Error(exc, request_type))
        await ws.close(code=CLOSE_TRY_AGAIN_LATER, message=exc.code.encode())
        return
    ctx.relays.relayed += 1
    try:
        await upstream.send_str(text)
        up = spawn(_guarded(_pipe_client_to_worker(ws, upstream)), name=f"relay-up-{room}")
        down = spawn(_guarded(_pipe_worker_to_client(ws, upstream, ctx.relays)), name=f"relay-down-{room}")
        _, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        # One side ended and closed the other; the other direction sees that close and ends.
        try:
            await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), CLOSE_TIMEOUT_S)
        except TimeoutError:
            for task in pending:
                task.cancel()
    finally:
        if not upstream.closed:
            await upstream.close()

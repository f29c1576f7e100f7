"""Rooms that span workers: one room, its participants on several workers, its producers
relayed over media links (sfu/cluster/media_link.py).

A room has a **home**: the worker its placement names. A participant placed on another worker
(``participant_placement = "local"``, or a join that names the home in the internal headers)
joins a **shard** of the room there: before the client's socket is accepted, the worker opens
a control channel to the home (an internal WebSocket, ``/internal/span/<room>``, with the
deployment's secret), and the two exchange their media link's address and keys and a
snapshot of who is in the room and what each publishes. Shards connect to the home only (a
star): the home passes on what one shard says to the others, and relays a shard's producers
to the others as its own relayed producers.

On the control channel, as JSON messages: ``joined`` and ``left`` (participants),
``publish`` and ``unpublish`` (a track, with its codec, payload type and link stream),
``mute``, ``chat``, ``demand`` (how many layers of a track the other side's consumers need,
and the largest height they accept: the sending side's dynacast counts it with its own
consumers), ``scores`` (a shard's speech scores, every speaker interval) and ``speaker`` (the
home decides one active speaker for the whole room). A remote participant is a
``RemoteParticipant`` in the room's ``participants``: it receives nothing, and its producers
are relayed ``Producer`` objects fed by the link, so subscribers see exactly what they see in
a room on one worker.

The channel carries WebSocket heartbeats: a peer that dies (its process killed, its node
cut off) is noticed within a few seconds; its participants leave (``track-unpublished`` for
their tracks, then ``participant-left``) and the rest of the room goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler

from ..config import Config
from ..dynacast import needed_layers
from ..errors import BadRequest, Conflict, SignalingError
from ..forwarding import Producer
from ..room import Participant, Room, RoomManager
from ..signaling.messages import ROOM_RE
from ..signaling.server_messages import ActiveSpeaker, Error, JoinInfo, TrackInfo
from ..speaker import INTERVAL_MS
from ..state import METRICS_KEY, ROOMS_KEY
from ..stats import RetiredTotals
from ..stream import Codec, Layer
from ..tasks import spawn
from .internal import SECRET_HEADER
from .media_link import KEY_BYTES, Link, LinkCollector, LinkEndpoint, RelayOut
from .span_wire import HOME_URL_HEADER, HOME_WORKER_HEADER, LINKS_PATH, ROOM_HEADER, SPAN_PATH

logger = logging.getLogger(__name__)

CHANNEL_HEARTBEAT_S = 1.0  # a dead peer is noticed within about two of these
CONNECT_TIMEOUT_S = 5.0
MAX_CONTROL_BYTES = 1 << 20
_NO_INFO = JoinInfo((), 0.0, 0)


def node_of(worker_id: str) -> str:
    return worker_id.rsplit("/", 1)[0]


class SpanContext:
    """A worker's part in spanning rooms: its id, its media link endpoint, its secret."""

    def __init__(self, worker_id: str, secret: str, config: Config, endpoint: LinkEndpoint) -> None:
        self.worker_id = worker_id
        self.node_id = node_of(worker_id)
        self.secret = secret
        self.config = config
        self.endpoint = endpoint
        self.session: aiohttp.ClientSession | None = None
        self.rooms: RoomManager | None = None


_SPAN_KEY = web.AppKey("span", SpanContext)


def _discard(msg: Any) -> None:
    pass


class _RemoteSession:
    """The session of a participant on another worker: a disconnect (an admin's kick, a room
    closed) is passed to that worker, which disconnects its socket."""

    def __init__(self, peer: SpanPeer, participant_id: str) -> None:
        self.peer = peer
        self.participant_id = participant_id

    async def disconnect(self, leave_reason: str, code: str | None, message: str, close_code: int) -> None:
        self.peer.send(
            {
                "type": "kick",
                "id": self.participant_id,
                "reason": leave_reason,
                "code": code,
                "message": message,
                "close_code": close_code,
            }
        )


class RemoteParticipant(Participant):
    """A participant connected to another worker of the room: it is told nothing here, and
    what it publishes comes over the link."""

    def __init__(self, room: SpanRoom, participant_id: str, name: str, peer: SpanPeer, config: Config) -> None:
        super().__init__(room, name, _discard, config)
        self.id = participant_id
        self.identity = participant_id
        self.grants = frozenset()
        self.peer = peer
        self.relayed: dict[str, Producer] = {}  # by track id
        self.streams: dict[str, int] = {}  # track id -> link stream
        self.score: float | None = None  # its last speech score, from its worker
        self.session = _RemoteSession(peer, participant_id)

    def producers(self) -> list[Producer]:
        return list(self.relayed.values())

    def speech_score(self, interval_ms: int) -> float | None:
        score, self.score = self.score, None
        return score

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for track_id in list(self.relayed):
            self.peer.link.remove_in(self.streams.pop(track_id, -1))
            self.relayed.pop(track_id).close()


class SpanPeer:
    """The control channel with one peer worker for one room, over the media link of the pair."""

    def __init__(self, room: SpanRoom, worker_id: str, ws: Any, link: Link) -> None:
        self.room = room
        self.worker_id = worker_id
        self.ws = ws  # web.WebSocketResponse (the home's side) or ClientWebSocketResponse
        self.link = link
        self.outs: dict[str, RelayOut] = {}  # by track id: what we relay to it
        self.demands: dict[str, tuple[int, int | None]] = {}  # by track id: what we asked of it
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._writer = spawn(self._write(), name=f"span-{room.name}-{worker_id}")
        self.closed = False
        self.messages_received = 0
        self.bad_messages = 0

    def send(self, msg: dict[str, Any]) -> None:
        if not self.closed:
            self._outbox.put_nowait(json.dumps(msg))

    async def _write(self) -> None:
        while True:
            text = await self._outbox.get()
            if text is None:
                return
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                return

    def publish(self, producer: Producer) -> None:
        if producer.id in self.outs:
            return
        out = self.link.add_out(producer)
        self.outs[producer.id] = out
        codec = producer.codec
        self.send(
            {
                "type": "publish",
                "participant": producer.participant_id,
                "track": TrackInfo.of(producer).to_wire(),
                "codec": {"name": codec.name, "clock_rate": codec.clock_rate, "parameters": list(codec.parameters)},
                "payload_type": producer.payload_type,
                "stream": out.stream,
            }
        )

    def unpublish(self, producer: Producer) -> None:
        out = self.outs.pop(producer.id, None)
        if out is not None:
            self.link.remove_out(out)
            self.send({"type": "unpublish", "participant": producer.participant_id, "track": producer.id})

    def drop_out(self, producer: Producer) -> None:
        out = self.outs.pop(producer.id, None)
        if out is not None:
            self.link.remove_out(out)

    def demand_changed(self, producer: Producer) -> None:
        """What our consumers need of a producer relayed from this peer."""
        if self.closed:
            return
        count, _ = needed_layers(producer.consumers, producer.layers)
        wanting = [c for c in producer.consumers if not c.closed and not c.paused]
        heights = [c.max_height for c in wanting]
        max_height = None if not heights or None in heights else max(h for h in heights if h is not None)
        demand = (count, max_height)
        if self.demands.get(producer.id) == demand:
            return
        self.demands[producer.id] = demand
        self.send({"type": "demand", "track": producer.id, "layers": count, "max_height": max_height})

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for out in list(self.outs.values()):
            self.link.remove_out(out)
        self.outs.clear()
        self._outbox.put_nowait(None)
        try:
            await asyncio.wait_for(self._writer, 1.0)
        except (TimeoutError, asyncio.CancelledError):
            self._writer.cancel()
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            await self.ws.close()


class SpanRoom(Room):
    """A room whose participants may be on several workers (a plain room while they are not)."""

    def __init__(
        self,
        name: str,
        capacity: int,
        on_empty: Callable[[Room], None],
        retired: RetiredTotals,
        id_prefix: str,
        ctx: SpanContext,
    ) -> None:
        super().__init__(name, capacity, on_empty, retired, id_prefix)
        self.ctx = ctx
        self.peers: dict[str, SpanPeer] = {}  # by peer worker id
        self.home: SpanPeer | None = None  # a shard's channel to the home; None at home
        self._origin: dict[str, SpanPeer] = {}  # remote participant id -> the peer it came through
        self._home_lock = asyncio.Lock()
        self._had_local = False

    @property
    def is_shard(self) -> bool:
        return self.home is not None

    def local_participants(self) -> list[Participant]:
        return [p for p in self.participants.values() if not isinstance(p, RemoteParticipant)]

    def _peers_except(self, participant_id: str) -> list[SpanPeer]:
        origin = self._origin.get(participant_id)
        return [peer for peer in self.peers.values() if peer is not origin]

    # -- what happens here, told to the other workers ---------------------------------------

    def join(self, participant: Participant, info: JoinInfo) -> None:
        super().join(participant, info)
        if not isinstance(participant, RemoteParticipant):
            self._had_local = True
        for peer in self._peers_except(participant.id):
            peer.send({"type": "joined", "id": participant.id, "name": participant.name})

    def producers_changed(self, owner: Participant, added: list[Producer], removed: list[Producer]) -> None:
        super().producers_changed(owner, added, removed)
        for peer in self._peers_except(owner.id):
            for producer in removed:
                peer.unpublish(producer)
            for producer in added:
                peer.publish(producer)

    def broadcast_mute(self, owner: Participant, producer: Producer) -> None:
        super().broadcast_mute(owner, producer)
        for peer in self._peers_except(owner.id):
            peer.send({"type": "mute", "participant": owner.id, "track": producer.id, "muted": producer.muted})

    def chat(self, sender: Participant, text: str) -> None:
        super().chat(sender, text)
        for peer in self._peers_except(sender.id):
            peer.send({"type": "chat", "from": sender.id, "text": text})

    async def leave(self, participant: Participant, reason: str) -> None:
        if self.participants.get(participant.id) is not participant:
            return
        peers = self._peers_except(participant.id)
        for peer in peers:
            for producer in participant.producers():
                peer.drop_out(producer)
        await super().leave(participant, reason)
        self._origin.pop(participant.id, None)
        for peer in peers:
            peer.send({"type": "left", "id": participant.id, "reason": reason})
        if self.is_shard and self._had_local and not self.local_participants():
            spawn(self.close("left"), name=f"shard-close-{self.name}")

    def update_speaker(self, now_ms: float, interval_ms: int = INTERVAL_MS) -> None:
        if self.home is not None:  # a shard: the home decides for the whole room
            scores = {}
            for p in self.local_participants():
                score = p.speech_score(interval_ms)
                if score is not None:
                    scores[p.id] = score
            if scores:
                self.home.send({"type": "scores", "scores": scores})
            return
        before = self.active_speaker
        super().update_speaker(now_ms, interval_ms)
        if self.active_speaker != before:
            for peer in self.peers.values():
                peer.send({"type": "speaker", "id": self.active_speaker})

    def _set_speaker(self, speaker: str | None) -> None:
        if speaker == self.active_speaker:
            return
        self.active_speaker = speaker
        for p in self.participants.values():
            if p.subscriber is not None:
                p.subscriber.active_speaker = speaker
        self._broadcast(ActiveSpeaker(speaker))

    def _closed_now(self) -> None:
        was_closed = self.closed
        super()._closed_now()
        if not was_closed:
            for peer in list(self.peers.values()):
                spawn(self._detach(peer, quiet=True), name=f"span-detach-{self.name}")

    # -- peers ----------------------------------------------------------------------------

    def attach(self, worker_id: str, ws: Any, link_info: dict[str, Any], link: Link, home: bool) -> SpanPeer:
        link.set_peer(str(link_info["host"]), int(link_info["port"]), bytes.fromhex(str(link_info.get("key", ""))))
        peer = SpanPeer(self, worker_id, ws, link)
        self.peers[worker_id] = peer
        if home:
            self.home = peer
        return peer

    def send_snapshot(self, peer: SpanPeer) -> None:
        """Who is here and what they publish, then ``synced``."""
        for p in list(self.participants.values()):
            if self._origin.get(p.id) is peer:
                continue
            peer.send({"type": "joined", "id": p.id, "name": p.name})
            for producer in p.producers():
                peer.publish(producer)
                if producer.muted:
                    peer.send({"type": "mute", "participant": p.id, "track": producer.id, "muted": True})
        if self.home is None:
            peer.send({"type": "speaker", "id": self.active_speaker})
        peer.send({"type": "synced"})

    async def run_peer(self, peer: SpanPeer) -> None:
        """Read the peer's messages until its channel ends, then forget it and its participants."""
        try:
            while True:
                msg = await peer.ws.receive()
                if msg.type != WSMsgType.TEXT:
                    break
                await self.on_message(peer, msg.data)
        except (ConnectionError, RuntimeError, aiohttp.ClientError, asyncio.CancelledError) as exc:
            logger.debug("room %s: span channel with %s ended: %r", self.name, peer.worker_id, exc)
        finally:
            await self._detach(peer)

    async def _detach(self, peer: SpanPeer, quiet: bool = False) -> None:
        if self.peers.get(peer.worker_id) is not peer:
            return
        del self.peers[peer.worker_id]
        if self.home is peer:
            self.home = None
        if not quiet:
            logger.info("room %s: worker %s left the room's span", self.name, peer.worker_id)
        for pid, origin in list(self._origin.items()):
            if origin is not peer:
                continue
            remote = self.participants.get(pid)
            if isinstance(remote, RemoteParticipant):
                removed = remote.producers()
                if removed:
                    self.producers_changed(remote, [], removed)
                    for producer in removed:
                        remote.relayed.pop(producer.id, None)
                        peer.link.remove_in(remote.streams.pop(producer.id, -1))
                await self.leave(remote, "disconnected")
        await peer.close()
        self.ctx.endpoint.release(peer.link)
        if not self.closed and not self.participants:
            self._closed_now()

    async def on_message(self, peer: SpanPeer, text: str) -> None:
        peer.messages_received += 1
        try:
            msg = json.loads(text)
            if not isinstance(msg, dict):
                raise ValueError("not an object")
            await self._handle(peer, msg)
        except (ValueError, KeyError, TypeError, SignalingError) as exc:
            peer.bad_messages += 1
            logger.warning("room %s: bad span message from %s: %r", self.name, peer.worker_id, exc)

    def _remote(self, peer: SpanPeer, participant_id: Any) -> RemoteParticipant | None:
        p = self.participants.get(str(participant_id))
        return p if isinstance(p, RemoteParticipant) and p.peer is peer else None

    async def _handle(self, peer: SpanPeer, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        remote: RemoteParticipant | None
        producer: Producer | None
        if kind == "joined":
            pid = str(msg["id"])
            if pid in self.participants:
                return
            remote = RemoteParticipant(self, pid, str(msg["name"]), peer, self.ctx.config)
            self._origin[pid] = peer
            try:
                self.join(remote, _NO_INFO)
            except SignalingError:
                self._origin.pop(pid, None)
                raise
        elif kind == "left":
            remote = self._remote(peer, msg["id"])
            if remote is not None:
                await self.leave(remote, str(msg.get("reason", "left")))
        elif kind == "publish":
            self._relayed_published(peer, msg)
        elif kind == "unpublish":
            remote = self._remote(peer, msg["participant"])
            track = str(msg["track"])
            if remote is not None and track in remote.relayed:
                producer = remote.relayed.pop(track)
                peer.link.remove_in(remote.streams.pop(track, -1))
                peer.demands.pop(track, None)
                self.producers_changed(remote, [], [producer])
        elif kind == "mute":
            remote = self._remote(peer, msg["participant"])
            producer = remote.relayed.get(str(msg["track"])) if remote is not None else None
            if remote is not None and producer is not None:
                producer.set_muted(bool(msg["muted"]), time.monotonic())
                self.broadcast_mute(remote, producer)
        elif kind == "chat":
            remote = self._remote(peer, msg["from"])
            if remote is not None:
                self.chat(remote, str(msg["text"]))
        elif kind == "demand":
            out = peer.outs.get(str(msg["track"]))
            if out is not None:
                height = msg.get("max_height")
                out.set_demand(int(msg["layers"]), None if height is None else int(height))
        elif kind == "scores":
            for pid, score in dict(msg["scores"]).items():
                remote = self._remote(peer, pid)
                if remote is not None:
                    remote.score = max(remote.score or 0.0, float(score))
        elif kind == "speaker":
            if peer is self.home:
                speaker = msg.get("id")
                self._set_speaker(None if speaker is None else str(speaker))
        elif kind == "kick":
            target = self.participants.get(str(msg["id"]))
            if target is not None and target.session is not None:
                code = msg.get("code")
                await target.session.disconnect(
                    str(msg["reason"]), None if code is None else str(code), str(msg["message"]), int(msg["close_code"])
                )
        elif kind == "synced":
            pass
        else:
            raise ValueError(f"unknown span message {kind!r}")

    def _relayed_published(self, peer: SpanPeer, msg: dict[str, Any]) -> None:
        remote = self._remote(peer, msg["participant"])
        if remote is None:
            return
        track = dict(msg["track"])
        track_id = str(track["id"])
        if track_id in remote.relayed:
            return
        kind = str(track["kind"])
        if kind not in ("audio", "video"):
            raise ValueError(f"bad track kind {kind!r}")
        codec_info = dict(msg["codec"])
        codec = Codec(
            str(codec_info["name"]),
            int(codec_info["clock_rate"]),
            tuple((str(k), str(v)) for k, v in codec_info.get("parameters", [])),
        )
        layers = track.get("layers")
        rids = [str(rid) for rid in layers] if layers else None
        stream = int(msg["stream"])
        link = peer.link

        def request_keyframe(producer: Producer, layer: Layer) -> None:
            link.request_keyframe(stream, layer.index)

        def send_nack(producer: Producer, layer: Layer, ext_seqs: list[int]) -> None:
            link.send_nack(stream, layer.index, ext_seqs)

        producer = Producer(
            producer_id=track_id,
            participant_id=remote.id,
            kind=kind,
            source=str(track.get("source", "camera")),
            codec=codec,
            payload_type=int(msg["payload_type"]),
            request_keyframe=request_keyframe,
            rids=rids,
            send_nack=send_nack,
            on_demand_changed=peer.demand_changed,
        )
        producer.muted = bool(track.get("muted", False))
        remote.relayed[track_id] = producer
        remote.streams[track_id] = stream
        link.add_in(producer, stream)
        self.producers_changed(remote, [producer], [])
        peer.demand_changed(producer)

    async def connect_home(self, home_url: str, home_worker: str) -> None:
        """Make this room a shard of the room at ``home_url`` (once; later calls return at once)."""
        ctx = self.ctx
        async with self._home_lock:
            if self.home is not None or self.peers:
                return  # a shard already, or the home of shards itself: the room is here
            if ctx.session is None:
                raise ConnectionError("the worker is not started")
            link = ctx.endpoint.link(home_worker, node_of(home_worker))
            try:
                ws = await ctx.session.ws_connect(
                    f"{home_url}{SPAN_PATH.format(room=self.name)}",
                    headers={SECRET_HEADER: ctx.secret},
                    heartbeat=CHANNEL_HEARTBEAT_S,
                    max_msg_size=MAX_CONTROL_BYTES,
                    timeout=aiohttp.ClientWSTimeout(ws_close=CONNECT_TIMEOUT_S),
                )
            except BaseException:
                ctx.endpoint.release(link)
                raise
            try:
                await ws.send_str(json.dumps({"type": "hello", "worker": ctx.worker_id, "link": link.describe_local()}))
                welcome = await ws.receive_json(timeout=CONNECT_TIMEOUT_S)
                if welcome.get("type") != "welcome" or welcome.get("worker") != home_worker:
                    raise ConnectionError(f"room {self.name}: {home_url} is not worker {home_worker}: {welcome!r}")
                peer = self.attach(home_worker, ws, _link_info(welcome["link"]), link, home=True)
            except BaseException:
                await ws.close()
                ctx.endpoint.release(link)
                raise
            # The home's snapshot, read before the client's join is handled (so that its
            # `joined` lists everyone).
            try:
                while True:
                    msg = await ws.receive(timeout=CONNECT_TIMEOUT_S)
                    if msg.type != WSMsgType.TEXT:
                        raise ConnectionError(f"room {self.name}: the home closed the channel")
                    await self.on_message(peer, msg.data)
                    if json.loads(msg.data).get("type") == "synced":
                        break
            except BaseException:
                await self._detach(peer, quiet=True)
                raise
            self.send_snapshot(peer)
            spawn(self.run_peer(peer), name=f"span-read-{self.name}")
            spawn(self._expect_local(), name=f"shard-deadline-{self.name}")
            logger.info("room %s: a shard of the room at %s", self.name, home_worker)

    async def _expect_local(self) -> None:
        """A shard made for a join that never came is closed."""
        await asyncio.sleep(self.ctx.config.join_timeout_s + CONNECT_TIMEOUT_S)
        if not self.closed and not self.local_participants():
            await self.close("left")

    def describe_span(self) -> dict[str, Any]:
        return {
            "home": self.home.worker_id if self.home is not None else self.ctx.worker_id,
            "peers": sorted(self.peers),
            "remote_participants": sorted(self._origin),
        }


def _link_info(value: Any) -> dict[str, Any]:
    """A peer's link address and key, checked (ValueError, KeyError, TypeError otherwise)."""
    info = dict(value)
    host, port, key = str(info["host"]), int(info["port"]), bytes.fromhex(str(info.get("key", "")))
    if not host or not 0 < port < 65536 or len(key) not in (0, KEY_BYTES):
        raise ValueError(f"bad link address or key: {host!r}:{port}")
    return {"host": host, "port": port, "key": key.hex()}


def is_shard(room: Room) -> bool:
    """A shard of a room whose home is another worker (not reported as the room's placement)."""
    return isinstance(room, SpanRoom) and room.is_shard


# -- the worker's endpoints ---------------------------------------------------------------


async def span_handler(request: web.Request) -> web.StreamResponse:
    """The home's side of a control channel: a worker with a shard of one of our rooms."""
    ctx = request.app[_SPAN_KEY]
    name = request.match_info["room"]
    if not ROOM_RE.fullmatch(name):
        raise web.HTTPBadRequest(text="bad room name")
    ws = web.WebSocketResponse(heartbeat=CHANNEL_HEARTBEAT_S, max_msg_size=MAX_CONTROL_BYTES)
    await ws.prepare(request)
    try:
        hello = await ws.receive_json(timeout=CONNECT_TIMEOUT_S)
        worker = str(hello["worker"])
        link_info = _link_info(hello["link"])
        if hello.get("type") != "hello" or worker == ctx.worker_id or not worker:
            raise ValueError("not a hello")
    except (ValueError, KeyError, TypeError, TimeoutError) as exc:
        await ws.close(code=4400, message=f"bad hello: {exc}".encode()[:120])
        return ws
    manager = request.app[ROOMS_KEY]
    try:
        room = manager.get_or_create(name)
    except SignalingError as exc:
        await ws.close(code=1013, message=exc.code.encode())
        return ws
    if not isinstance(room, SpanRoom):
        await ws.close(code=1011, message=b"room cannot span")
        return ws
    old = room.peers.get(worker)
    if old is not None:
        await room._detach(old)
    link = ctx.endpoint.link(worker, node_of(worker))
    peer = room.attach(worker, ws, link_info, link, home=False)
    peer.send({"type": "welcome", "worker": ctx.worker_id, "link": link.describe_local()})
    room.send_snapshot(peer)
    await room.run_peer(peer)
    return ws


def span_middleware(ctx: SpanContext) -> Any:
    """Before a client's socket to a worker that is not its room's home is accepted, the
    room's shard here is connected to the home."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        home_url = request.headers.get(HOME_URL_HEADER)
        if home_url and request.path == "/ws":
            name = request.headers.get(ROOM_HEADER, "")
            home_worker = request.headers.get(HOME_WORKER_HEADER, "")
            if not ROOM_RE.fullmatch(name) or not home_worker or not home_url.startswith(("http://", "https://")):
                error = BadRequest("bad-message", f"{ROOM_HEADER} and {HOME_WORKER_HEADER} are needed")
                return web.json_response(Error(error).to_wire(), status=400)
            if home_worker != ctx.worker_id:
                try:
                    room = request.app[ROOMS_KEY].get_or_create(name)
                    if isinstance(room, SpanRoom):
                        await room.connect_home(home_url.rstrip("/"), home_worker)
                except SignalingError as exc:
                    return web.json_response(Error(exc).to_wire(), status=exc.status)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError, TypeError) as exc:
                    logger.warning("room %s: the home worker %s cannot be reached: %r", name, home_worker, exc)
                    lost = Conflict("unavailable", "the room's home worker cannot be reached")
                    return web.json_response(Error(lost).to_wire(), status=503)
        return await handler(request)

    return middleware


async def links_handler(request: web.Request) -> web.Response:
    ctx = request.app[_SPAN_KEY]
    rooms = request.app[ROOMS_KEY].rooms
    spans = {name: room.describe_span() for name, room in rooms.items() if isinstance(room, SpanRoom) and room.peers}
    return web.json_response({"worker": ctx.worker_id, **ctx.endpoint.describe(), "rooms": spans})


def install(app: web.Application, worker_id: str, secret: str) -> None:
    """Rooms of this worker may span workers: the link endpoint, the control channel's route,
    the shard set-up before a client's socket, the links' report."""
    config = app[ROOMS_KEY].config
    endpoint = LinkEndpoint(worker_id, node_of(worker_id), config.link_srtp, config.link_drop_every)
    ctx = SpanContext(worker_id, secret, config, endpoint)
    ctx.rooms = app[ROOMS_KEY]
    app[_SPAN_KEY] = ctx

    def make_room(
        name: str, capacity: int, on_empty: Callable[[Room], None], retired: RetiredTotals, prefix: str
    ) -> Room:
        return SpanRoom(name, capacity, on_empty, retired, prefix, ctx)

    app[ROOMS_KEY].room_factory = make_room
    app[METRICS_KEY].register(LinkCollector(endpoint))
    app.middlewares.append(span_middleware(ctx))
    app.router.add_get(SPAN_PATH, span_handler)
    app.router.add_get(LINKS_PATH, links_handler)

    async def lifetime(app: web.Application) -> Any:
        await endpoint.start(config.host)
        ctx.session = aiohttp.ClientSession()
        tick = spawn(_tick(ctx), name="link-tick")
        yield
        tick.cancel()
        endpoint.close()
        await ctx.session.close()

    app.cleanup_ctx.append(lifetime)


async def _tick(ctx: SpanContext) -> None:
    """The relayed producers' periodic work (NACKs due on a quiet layer, keyframes for loss)."""
    while True:
        await asyncio.sleep(0.02)
        now_ms = int(time.monotonic() * 1000)
        for link in list(ctx.endpoint.links.values()):
            for relay in list(link.incoming.values()):
                relay.producer.tick(now_ms)

"""A node: the front process of one host, with its workers.

The front serves the public port: the browser client, /healthz, the signaling relay on /ws
(``relay.py``), /metrics (every worker's, labelled with node and worker, plus the node's own
gauges) and the admin API cluster-wide (rooms from the coordinator; a room's details, kick and
close forwarded to the worker that hosts it, wherever it is). It supervises its workers
(``supervisor.py``) and every ``node_heartbeat_s`` reads their load (``/internal/load``) and
writes it into the coordinator with the node's heartbeat, with each room's participants; a room
that ended on its worker is released. On SIGTERM it drains: the heartbeat says draining (no new
room is placed here), the workers drain their calls and exit, then the front does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import ssl as ssl_module
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from ..app import ACCESS_LOGGER, index
from ..config import Config
from ..errors import BadRequest, Conflict, SignalingError
from ..metrics import CONTENT_TYPE, render
from ..signaling.http import admin_claims, any_admin_claims, refuse
from ..signaling.messages import ROOM_RE
from ..signaling.whip_wire import ENDPOINT_METHODS, cors_headers, options_headers
from ..state import CONFIG_KEY, STATS_KEY
from ..stats import ServerStats
from ..tasks import spawn
from .coordinator import (
    Coordinator,
    CoordinatorUnavailable,
    NodeInfo,
    ParticipantEntry,
    Placement,
    WorkerLoad,
)
from .internal import LOAD_PATH, SECRET_HEADER, LoadReport, WorkerSpec, worker_config, worker_id
from .memory import MemoryCoordinator, choose_worker
from .redis_coordinator import RedisCoordinator
from .relay import RelayContext, RelayStats, relay_handler
from .span_wire import LINKS_PATH
from .supervisor import WorkerProcess

logger = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 2.0
FORWARD_TIMEOUT_S = 10.0


def default_node_id(config: Config) -> str:
    return config.node_id or f"{socket.gethostname()}-{config.port}"


def default_public_url(config: Config) -> str:
    if config.public_url:
        return config.public_url.rstrip("/")
    scheme = "https" if config.tls_enabled else "http"
    host = config.host if config.host not in ("0.0.0.0", "::") else socket.gethostname()
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{config.port}"


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def make_coordinator(config: Config) -> Coordinator:
    if config.redis_url:
        return RedisCoordinator(config.redis_url)
    return MemoryCoordinator()


@dataclass(frozen=True, slots=True)
class WorkerState:
    """One worker as the front last saw it."""

    worker: WorkerProcess
    report: LoadReport | None


MAX_SHARDS_REMEMBERED = 4096


class Node:
    """The front's state: its workers, their last load, the coordinator."""

    def __init__(self, config: Config, coordinator: Coordinator | None = None) -> None:
        self.config = config
        self.node_id = default_node_id(config)
        self.public_url = default_public_url(config)
        self.secret = config.cluster_secret or secrets.token_urlsafe(32)
        self.coordinator = coordinator if coordinator is not None else make_coordinator(config)
        self.draining = False
        self._stopped = False
        self.stats = ServerStats()
        self.relays = RelayStats()
        self.reports: dict[int, LoadReport] = {}
        self._reported_s: dict[int, float] = {}
        # After the coordinator was unreachable: no new room is placed before this (loop time).
        self._hold_until_s = float("-inf")  # when each worker's report was read (loop time)
        # (room, home worker) -> the worker this front last sent a participant of it to, when
        # not the home: the next one goes there too while it can, so a room has one shard per
        # node rather than one per worker (bounded: oldest forgotten first).
        self._shards: dict[tuple[str, str], Placement] = {}
        self.coordinator_ok = True
        self._pending_release: set[tuple[str, str]] = set()
        self._poke = asyncio.Event()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        count = config.worker_count
        self.workers = [
            WorkerProcess(
                i,
                WorkerSpec(
                    worker_id=worker_id(self.node_id, i),
                    secret=self.secret,
                    parent_pid=os.getpid(),
                    config=worker_config(config, i, count, free_port(config.cluster_host)),
                ),
                self._worker_exited,
            )
            for i in range(count)
        ]

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "the node is not started"
        return self._session

    def relay_context(self) -> RelayContext:
        return RelayContext(
            config=self.config,
            node_id=self.node_id,
            secret=self.secret,
            coordinator=self.coordinator,
            session=self.session,
            stats=self.stats,
            relays=self.relays,
            is_draining=lambda: self.draining,
            on_unreachable=self._unreachable,
            local_placement=self.local_placement,
            placement_held=self.placement_held,
            participant_worker=self.participant_worker,
        )

    def placement_held(self) -> bool:
        return asyncio.get_running_loop().time() < self._hold_until_s

    def local_placement(self, room: str) -> Placement | None:
        for worker in self.workers:
            report = self.reports.get(worker.index)
            if worker.ready and report is not None and any(r.room == room for r in report.rooms):
                return Placement(room, worker.worker_id, self.node_id, worker.url)
        return None

    async def participant_worker(self, room: str, home: Placement) -> Placement | None:
        """Where a new participant of a room placed at ``home`` goes, if not there: this node's
        least-loaded worker when participants stay on their node (participant_placement =
        local) and the home is elsewhere; the least-loaded worker under its limits (this node's
        first) when the home's worker is at its limit; else None (the home: gather)."""
        chosen = await self._participant_worker(room, home)
        key = (room, home.worker_id)
        if chosen is None:
            self._shards.pop(key, None)
            return None
        self._shards.pop(key, None)
        self._shards[key] = chosen
        while len(self._shards) > MAX_SHARDS_REMEMBERED:
            del self._shards[next(iter(self._shards))]
        return chosen

    async def _participant_worker(self, room: str, home: Placement) -> Placement | None:
        known = self._shards.get((room, home.worker_id))
        if self.config.participant_placement == "local" and home.node_id != self.node_id:
            ready = [w for w in self.workers if w.ready and self.reports.get(w.index) is not None]
            if known is not None and any(w.worker_id == known.worker_id for w in ready):
                return known
            if ready:
                worker = min(ready, key=lambda w: (self.reports[w.index].tracks, w.index))
                return Placement(room, worker.worker_id, self.node_id, worker.url)
            return None
        limit = self.config.max_tracks_per_worker
        if not limit:
            return None
        for worker in self.workers:  # the home on this node: its last report says
            report = self.reports.get(worker.index)
            if worker.worker_id == home.worker_id and report is not None and report.tracks < limit:
                return None
        try:
            nodes = await self.coordinator.nodes()
        except CoordinatorUnavailable:
            return None
        loads = {w.worker_id: w for n in nodes for w in n.workers}
        home_load = loads.get(home.worker_id)
        if home_load is None or home_load.under_limit():
            return None
        if known is not None and known.worker_id in loads and loads[known.worker_id].under_limit():
            return known
        others = [(n, w) for n in nodes for w in n.workers if w.worker_id != home.worker_id]
        chosen = choose_worker(others, prefer_node=self.node_id)
        if chosen is None:
            return None
        return Placement(room, chosen.worker_id, chosen.node_id, chosen.url)

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(headers={SECRET_HEADER: self.secret})
        try:
            await self.coordinator.start()
        except CoordinatorUnavailable as exc:  # the heartbeat loop writes the registry when it is back
            logger.warning("coordinator unavailable at start: %s", exc)
            self.coordinator_ok = False
        for worker in self.workers:
            worker.start()
        self._heartbeat_task = spawn(self._heartbeat_loop(), name="node-heartbeat")

    async def stop(self) -> None:
        """Drain: say so in the registry, let the workers drain and exit, leave the registry.
        Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.draining = True
        await self.heartbeat_once()
        for worker in self.workers:
            worker.terminate()
        await asyncio.gather(*(w.wait_stopped(self.config.shutdown_grace_s + 10) for w in self.workers))
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
        with contextlib.suppress(CoordinatorUnavailable):  # else its records expire by themselves
            await self.coordinator.remove_node(self.node_id)
        await self.coordinator.close()
        if self._session is not None:
            await self._session.close()

    # -- heartbeat --------------------------------------------------------------------------

    def _worker_exited(self, worker: WorkerProcess) -> None:
        """Its rooms are gone with it: release their placements, and heartbeat at once without
        it so that no new room is placed there (a rejoin is placed anew)."""
        report = self.reports.pop(worker.index, None)
        if report is not None:
            self._pending_release.update((r.room, worker.worker_id) for r in report.rooms)
        self._poke.set()

    async def _unreachable(self, placement: Placement) -> None:
        with contextlib.suppress(CoordinatorUnavailable):
            await self.coordinator.release_room(placement.room, placement.worker_id)

    async def _read_load(self, worker: WorkerProcess) -> LoadReport | None:
        if worker.pid is None:
            return None
        try:
            async with self.session.get(
                worker.url + LOAD_PATH, timeout=aiohttp.ClientTimeout(total=LOAD_TIMEOUT_S)
            ) as response:
                if response.status != 200:
                    return None
                return LoadReport.from_wire(await response.json())
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError, TypeError):
            return None

    def worker_load(self, worker: WorkerProcess, report: LoadReport) -> WorkerLoad:
        return WorkerLoad(
            worker_id=worker.worker_id,
            node_id=self.node_id,
            url=worker.url,
            tracks=report.tracks,
            rooms=len(report.rooms),
            participants=report.participants,
            cpu_percent=report.cpu_percent,
            max_tracks=self.config.max_tracks_per_worker,
            max_cpu_percent=self.config.max_worker_cpu_percent,
            # A draining worker (SIGTERM) stays in the registry, so that its rooms stay placed
            # there (not placed anew and split) while no new room goes to it.
            draining=report.draining,
        )

    async def heartbeat_once(self) -> None:
        reports = await asyncio.gather(*(self._read_load(w) for w in self.workers))
        loads: list[WorkerLoad] = []
        now_s = asyncio.get_running_loop().time()
        for worker, report in zip(self.workers, reports, strict=True):
            previous = self.reports.get(worker.index)
            if report is None:
                # A live worker too busy to answer in time keeps its last report for up to a
                # TTL: dropping it from the registry would let its rooms be placed anew (split).
                fresh_s = self._reported_s.get(worker.index, float("-inf"))
                if worker.pid is not None and previous is not None and now_s - fresh_s < self.config.node_ttl_s:
                    loads.append(self.worker_load(worker, previous))
                    continue
                worker.ready = False
                continue
            worker.ready = True
            self.reports[worker.index] = report
            self._reported_s[worker.index] = now_s
            if previous is not None:
                now = {r.room for r in report.rooms}
                self._pending_release.update((r.room, worker.worker_id) for r in previous.rooms if r.room not in now)
            loads.append(self.worker_load(worker, report))
        info = NodeInfo(self.node_id, self.public_url, self.draining, tuple(loads))
        ttl_s = self.config.node_ttl_s
        try:
            await self.coordinator.heartbeat(info, ttl_s=ttl_s)
            for worker in self.workers:
                report = self.reports.get(worker.index)
                if report is None or not worker.ready:
                    continue
                for room in report.rooms:
                    placement = Placement(room.room, worker.worker_id, self.node_id, worker.url)
                    members = tuple(ParticipantEntry(i, n) for i, n in room.participants)
                    await self.coordinator.set_room_participants(room.room, placement, members, ttl_s)
            for room_name, wid in list(self._pending_release):
                await self.coordinator.release_room(room_name, wid)
                self._pending_release.discard((room_name, wid))
            if not self.coordinator_ok:
                # Redis may have come back empty, and the other nodes may not have written their
                # running rooms back yet: placing one of those anew here would split it. Every
                # live node heartbeats within a TTL, so new rooms wait that long.
                self._hold_until_s = asyncio.get_running_loop().time() + ttl_s
                logger.info("coordinator reachable again: new rooms wait %.0f s for the running ones", ttl_s)
            self.coordinator_ok = True
        except CoordinatorUnavailable as exc:
            if self.coordinator_ok:
                logger.warning("coordinator unavailable: %s (running calls go on; new rooms wait)", exc)
            self.coordinator_ok = False

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self.heartbeat_once()
            except Exception:
                logger.exception("node heartbeat failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.config.node_heartbeat_s)
            self._poke.clear()

    # -- views ------------------------------------------------------------------------------

    def describe_workers(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for worker in self.workers:
            report = self.reports.get(worker.index) if worker.ready else None
            out.append(
                {
                    "worker": worker.worker_id,
                    "url": worker.url,
                    "pid": worker.pid,
                    "ready": worker.ready,
                    "restarts": worker.restarts,
                    "load": report.to_wire() if report is not None else None,
                }
            )
        return out


# -- the front's HTTP surface -------------------------------------------------------------------

NODE_KEY = web.AppKey("node", Node)
RELAY_KEY = web.AppKey("relay", RelayContext)


async def healthz(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    ready = [w for w in node.workers if w.ready]
    reports = [node.reports[w.index] for w in ready if w.index in node.reports]
    status = "draining" if node.draining else "ok" if ready else "starting"
    return web.json_response(
        {
            "status": status,
            "node": node.node_id,
            "workers": len(ready),
            "rooms": sum(len(r.rooms) for r in reports),
            "participants": sum(r.participants for r in reports),
            "coordinator": "ok" if node.coordinator_ok else "unavailable",
        },
        status=200 if status == "ok" else 503,
    )


async def ws(request: web.Request) -> web.StreamResponse:
    return await relay_handler(request, request.app[RELAY_KEY])


def _fail(request: web.Request, exc: SignalingError) -> web.Response:
    if exc.code == "unauthorized":
        request.app[STATS_KEY].auth_failures += 1
    return refuse(request, exc)


async def list_rooms(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    try:
        claims = any_admin_claims(request)
        entries = await node.coordinator.rooms()
    except SignalingError as exc:
        return _fail(request, exc)
    except CoordinatorUnavailable:
        return _fail(request, Conflict("unavailable", "the cluster's shared state cannot be reached"))
    rooms = [
        {
            "name": e.room,
            "participants": len(e.participants),
            "node": e.placement.node_id,
            "worker": e.placement.worker_id,
            "members": [{"id": p.participant_id, "name": p.name} for p in e.participants],
        }
        for e in entries
        if claims.covers(e.room)
    ]
    return web.json_response({"rooms": rooms})


async def list_links(request: web.Request) -> web.Response:
    """Each worker's media links (rooms that span workers): peers, counters, what is relayed."""
    node = request.app[NODE_KEY]
    try:
        admin_claims(request, None)
    except SignalingError as exc:
        return _fail(request, exc)

    async def read(worker: WorkerProcess) -> object:
        try:
            async with node.session.get(
                worker.url + LINKS_PATH, timeout=aiohttp.ClientTimeout(total=LOAD_TIMEOUT_S)
            ) as response:
                return await response.json() if response.status == 200 else {"worker": worker.worker_id}
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return {"worker": worker.worker_id}

    views = await asyncio.gather(*(read(w) for w in node.workers))
    return web.json_response({"node": node.node_id, "workers": list(views)})


async def list_nodes(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    try:
        admin_claims(request, None)
        nodes = await node.coordinator.nodes()
    except SignalingError as exc:
        return _fail(request, exc)
    except CoordinatorUnavailable:
        return _fail(request, Conflict("unavailable", "the cluster's shared state cannot be reached"))
    return web.json_response(
        {
            "node": node.node_id,
            "workers": node.describe_workers(),
            "nodes": [
                {
                    "node": n.node_id,
                    "public_url": n.public_url,
                    "draining": n.draining,
                    "workers": [
                        {
                            "worker": w.worker_id,
                            "tracks": w.tracks,
                            "rooms": w.rooms,
                            "participants": w.participants,
                            "cpu_percent": w.cpu_percent,
                        }
                        for w in n.workers
                    ],
                }
                for n in nodes
            ],
        }
    )


async def forward_to_owner(request: web.Request) -> web.Response:
    """A room's details, kick and close: checked here, then done by the worker that hosts the
    room (which checks the same token again), wherever it is."""
    node = request.app[NODE_KEY]
    room = request.match_info["room"]
    try:
        admin_claims(request, room)
        placement = await node.coordinator.placement(room)
        if placement is None:
            raise BadRequest("not-found", f"no room {room!r}")
    except SignalingError as exc:
        return _fail(request, exc)
    except CoordinatorUnavailable:
        return _fail(request, Conflict("unavailable", "the cluster's shared state cannot be reached"))
    headers = {"Authorization": request.headers.get("Authorization", "")}
    try:
        async with node.session.request(
            request.method,
            placement.url + request.rel_url.path_qs,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
        ) as response:
            body = await response.read()
            return web.Response(body=body, status=response.status, content_type="application/json")
    except (aiohttp.ClientError, OSError, TimeoutError):
        return _fail(request, Conflict("unavailable", f"the worker hosting room {room!r} cannot be reached"))


# Response headers a WHIP/WHEP answer carries back through the front (Link may repeat).
_FORWARDED_HEADERS = {
    "content-type",
    "location",
    "etag",
    "link",
    "accept-patch",
    "accept-post",
    "allow",
    "www-authenticate",
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
}


async def forward_media_session(request: web.Request) -> web.StreamResponse:
    """WHIP and WHEP through the front: the request goes to the worker that hosts the room
    (a WHIP POST places a new room as a join does); the worker answers it, its statuses and
    headers come back as they are. Every later request names the room in its path, so it
    reaches the same worker."""
    node = request.app[NODE_KEY]
    ctx = request.app[RELAY_KEY]
    room = request.match_info["room"]
    plain = cors_headers(ENDPOINT_METHODS)
    try:
        if not ROOM_RE.fullmatch(room):
            raise BadRequest("bad-message", "a room name has 1-64 of A-Z a-z 0-9 _ - . only")
        if node.draining:
            raise SignalingError("shutting-down", "the server is shutting down; try again in a moment")
        placement = ctx.local_placement(room)
        if placement is None:
            creates = request.method == "POST" and request.path.startswith("/whip/")
            if creates and not ctx.placement_held():
                placement = await node.coordinator.place_room(room, prefer_node=node.node_id)
            else:
                placement = await node.coordinator.placement(room)
        if placement is None:
            raise BadRequest("not-found", f"no room {room!r}")
        body = await request.content.read(node.config.max_message_bytes + 1)
    except SignalingError as exc:
        return refuse(request, exc, plain=True, headers=plain)
    except CoordinatorUnavailable:
        return refuse(
            request, Conflict("unavailable", "the cluster cannot place the room now"), plain=True, headers=plain
        )
    headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type", "if-match")}
    try:
        async with node.session.request(
            request.method,
            placement.url + request.rel_url.path_qs,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
        ) as response:
            answer = await response.read()
            out: CIMultiDict[str] = CIMultiDict()
            for key, value in response.headers.items():
                if key.lower() in _FORWARDED_HEADERS:
                    out.add(key, value)
            return web.Response(body=answer, status=response.status, headers=out)
    except (aiohttp.ClientError, OSError, TimeoutError):
        error = Conflict("unavailable", f"the worker hosting room {room!r} cannot be reached")
        return refuse(request, error, plain=True, headers=plain)


async def endpoint_options(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204, headers=options_headers(resource=False))


async def resource_options(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204, headers=options_headers(resource=True))


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def labelled(text: str, labels: dict[str, str]) -> list[Metric]:
    """The metric families of a Prometheus text exposition, every sample with ``labels`` added."""
    out: list[Metric] = []
    for family in text_string_to_metric_families(text):
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        copy.samples = [
            Sample(s.name, {**s.labels, **labels}, s.value, s.timestamp, s.exemplar) for s in family.samples
        ]
        out.append(copy)
    return out


def merge_families(groups: list[list[Metric]]) -> list[Metric]:
    """One family per name, with the samples of every group."""
    merged: dict[str, Metric] = {}
    for group in groups:
        for family in group:
            into = merged.get(family.name)
            if into is None:
                into = Metric(family.name, family.documentation, family.type, family.unit)
                merged[family.name] = into
            into.samples.extend(family.samples)
    return list(merged.values())


def node_families(node: Node) -> list[Metric]:
    labels = ["node", "worker"]
    workers = GaugeMetricFamily("sfu_node_workers", "Workers of this node answering", labels=["node"])
    workers.add_metric([node.node_id], sum(1 for w in node.workers if w.ready))
    cpu = GaugeMetricFamily("sfu_worker_cpu_percent", "CPU of each worker, percent of one core", labels=labels)
    rooms = GaugeMetricFamily("sfu_worker_rooms", "Rooms on each worker", labels=labels)
    tracks = GaugeMetricFamily("sfu_worker_tracks", "Tracks forwarded by each worker, in plus out", labels=labels)
    participants = GaugeMetricFamily("sfu_worker_participants", "Participants on each worker", labels=labels)
    restarts = CounterMetricFamily("sfu_worker_restarts", "Times each worker was restarted", labels=labels)
    for worker in node.workers:
        key = [node.node_id, worker.worker_id]
        restarts.add_metric(key, worker.restarts)
        report = node.reports.get(worker.index)
        if report is None or not worker.ready:
            continue
        cpu.add_metric(key, report.cpu_percent)
        rooms.add_metric(key, len(report.rooms))
        tracks.add_metric(key, report.tracks)
        participants.add_metric(key, report.participants)
    relayed = CounterMetricFamily("sfu_node_relays", "Signaling sockets relayed to a worker", labels=["node"])
    relayed.add_metric([node.node_id], node.relays.relayed)
    lost = CounterMetricFamily(
        "sfu_node_worker_lost", "Relayed sockets closed because their worker went away", labels=["node"]
    )
    lost.add_metric([node.node_id], node.relays.worker_lost)
    failures = CounterMetricFamily(
        "sfu_node_placement_failures", "Joins refused for want of a placement, by reason", labels=["node", "reason"]
    )
    for reason, count in sorted(node.relays.placement_failures.items()):
        failures.add_metric([node.node_id, reason], count)
    return [workers, cpu, rooms, tracks, participants, restarts, relayed, lost, failures]


async def _worker_metrics(node: Node, worker: WorkerProcess) -> list[Metric]:
    if worker.pid is None:
        return []
    try:
        async with node.session.get(
            worker.url + "/metrics", timeout=aiohttp.ClientTimeout(total=LOAD_TIMEOUT_S)
        ) as response:
            if response.status != 200:
                return []
            text = await response.text()
    except (aiohttp.ClientError, OSError, TimeoutError):
        return []
    return labelled(text, {"node": node.node_id, "worker": worker.worker_id})


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    config = node.config
    if config.auth_enabled and not config.metrics_public:
        try:
            admin_claims(request, None)
        except SignalingError as exc:
            return _fail(request, exc)
    groups = await asyncio.gather(*(_worker_metrics(node, w) for w in node.workers))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(merge_families([*groups, node_families(node)])))
    return web.Response(body=render(registry), headers={"Content-Type": CONTENT_TYPE})


def create_front_app(node: Node) -> web.Application:
    config = node.config
    app = web.Application()
    app[CONFIG_KEY] = config
    app[STATS_KEY] = node.stats
    app[NODE_KEY] = node

    async def node_ctx(app: web.Application) -> AsyncIterator[None]:
        await node.start()
        app[RELAY_KEY] = node.relay_context()
        yield
        await node.stop()

    app.cleanup_ctx.append(node_ctx)
    app.router.add_get("/ws", ws)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/admin/rooms", list_rooms)
    app.router.add_get("/admin/nodes", list_nodes)
    app.router.add_get("/admin/links", list_links)
    app.router.add_get("/admin/rooms/{room}", forward_to_owner)
    app.router.add_delete("/admin/rooms/{room}", forward_to_owner)
    app.router.add_delete("/admin/rooms/{room}/participants/{participant}", forward_to_owner)
    # WHIP and WHEP: OPTIONS answered here, everything else by the room's worker.
    for path in ("/whip/{room}", "/whep/{room}", "/whep/{room}/{participant}"):
        app.router.add_post(path, forward_media_session)
        app.router.add_options(path, endpoint_options)
    resource = "/{kind:whip|whep}/{room}/sessions/{session}"
    app.router.add_patch(resource, forward_media_session)
    app.router.add_delete(resource, forward_media_session)
    app.router.add_options(resource, resource_options)
    if config.metrics_enabled:
        app.router.add_get("/metrics", metrics)
    app.router.add_get("/", index)
    app.router.add_static("/", config.client_dir, show_index=False)
    return app


async def serve_node(config: Config, ssl: ssl_module.SSLContext | None) -> None:
    node = Node(config)
    app = create_front_app(node)
    runner = web.AppRunner(
        app, handle_signals=False, access_log_class=ACCESS_LOGGER, shutdown_timeout=config.shutdown_grace_s + 5
    )
    await runner.setup()  # starts the node: coordinator, workers, heartbeat
    try:
        await web.TCPSite(runner, config.host, config.port, ssl_context=ssl).start()
        print(
            f"SFU node {node.node_id}: {len(node.workers)} workers, "
            f"{'redis' if config.redis_url else 'one host'}, listening on {node.public_url}/",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        logger.info("node %s: draining", node.node_id)
        await node.stop()  # the workers drain their calls; the relays close with them
    finally:
        await runner.cleanup()


def run_node(config: Config, ssl: ssl_module.SSLContext | None) -> int:
    asyncio.run(serve_node(config, ssl))
    return 0

"""A worker process: the plain server (rooms, peers, media: ``sfu.app``) on the node's internal
address, behind its front process.

Differences from a plain server, all at the edge: every request but /healthz must carry the
deployment's secret (the front adds it; nobody else knows it), the client's address comes from
the front's header, participant ids carry the worker's prefix, and ``/internal/load`` reports
the load the front writes into the coordinator. The worker dies with its front: Linux's
parent-death signal (``PR_SET_PDEATHSIG``) for a front that is killed, and the end of stdin
(the pipe the settings came through) for one that exits without stopping it.
"""

from __future__ import annotations

import asyncio
import ctypes
import hmac
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from ..app import RedactingAccessLogger, create_app, drain
from ..errors import NotAuthorised
from ..signaling.server_messages import Error
from ..state import ROOMS_KEY
from ..tasks import spawn
from . import span
from .internal import CLIENT_ADDRESS_HEADER, LOAD_PATH, SECRET_HEADER, LoadReport, RoomReport, WorkerSpec

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
OPEN_PATHS = frozenset({"/healthz"})


class CpuMeter:
    """This process's CPU time over wall time since the previous reading, in percent of one
    core (``os.times``: user + system)."""

    def __init__(self) -> None:
        self._last = (time.monotonic(), self._cpu_s())

    @staticmethod
    def _cpu_s() -> float:
        t = os.times()
        return t.user + t.system

    def read_percent(self) -> float:
        now, cpu = time.monotonic(), self._cpu_s()
        last_now, last_cpu = self._last
        self._last = (now, cpu)
        elapsed = now - last_now
        return 0.0 if elapsed <= 0 else max(0.0, (cpu - last_cpu) / elapsed * 100.0)


_SPEC_KEY = web.AppKey("worker_spec", WorkerSpec)
_CPU_KEY = web.AppKey("worker_cpu", CpuMeter)


class WorkerAccessLogger(RedactingAccessLogger):
    """The access log, with the client's address as the front passed it on, and without the
    front's own reads of the load (every heartbeat)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if request.path.startswith("/internal/"):
            return
        super().log(request, response, time)

    def _format_line(
        self, request: BaseRequest, response: StreamResponse, time: float
    ) -> Iterable[tuple[str | tuple[str, str], str]]:
        client = request.headers.get(CLIENT_ADDRESS_HEADER)
        return [
            (key, client if key == "remote_address" and client else value)
            for key, value in super()._format_line(request, response, time)
        ]


def internal_only(secret: str) -> Middleware:
    """Middleware: the secret or 403; the client's address from the front's header."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            error = NotAuthorised("forbidden", "internal endpoint: only the front process may call it")
            return web.json_response(Error(error).to_wire(), status=error.status)
        address = request.headers.get(CLIENT_ADDRESS_HEADER)
        if address:
            request = request.clone(remote=address)
        return await handler(request)

    return middleware


def load_report(app: web.Application) -> LoadReport:
    manager = app[ROOMS_KEY]
    rooms: list[RoomReport] = []
    tracks = participants = 0
    for room in list(manager.rooms.values()):
        members = list(room.participants.values())
        participants += len(members)
        for p in members:
            tracks += len(p.producers())
            if p.subscriber is not None:
                tracks += len(p.subscriber.consumers())
        if span.is_shard(room):
            continue  # its home worker reports the room
        rooms.append(RoomReport(room.name, tuple((p.id, p.name) for p in members)))
    return LoadReport(
        worker_id=app[_SPEC_KEY].worker_id,
        pid=os.getpid(),
        tracks=tracks,
        participants=participants,
        cpu_percent=round(app[_CPU_KEY].read_percent(), 1),
        draining=manager.draining,
        rooms=tuple(rooms),
    )


async def load(request: web.Request) -> web.Response:
    return web.json_response(load_report(request.app).to_wire())


def create_worker_app(spec: WorkerSpec) -> web.Application:
    app = create_app(spec.config)
    app.middlewares.append(internal_only(spec.secret))
    app[_SPEC_KEY] = spec
    app[_CPU_KEY] = CpuMeter()
    app[ROOMS_KEY].id_prefix = spec.worker_id_prefix
    app.router.add_get(LOAD_PATH, load)
    span.install(app, spec.worker_id, spec.secret)  # rooms that span workers
    return app


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


async def _watch_stdin(stop: asyncio.Event) -> None:
    """The front holds our stdin open; its end means the front is gone: stop."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
    logger.info("the front process is gone: stopping")
    stop.set()


async def serve_worker(spec: WorkerSpec) -> None:
    config = spec.config
    app = create_worker_app(spec)
    runner = web.AppRunner(
        app, handle_signals=False, access_log_class=WorkerAccessLogger, shutdown_timeout=config.shutdown_grace_s + 5
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        logger.info("worker %s listening on %s:%d", spec.worker_id, config.host, config.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watch = spawn(_watch_stdin(stop), name="watch-front")
        await stop.wait()
        watch.cancel()
        await drain(app)
    finally:
        await runner.cleanup()


def run_worker(argv: list[str]) -> int:
    line = sys.stdin.buffer.readline()
    try:
        spec = WorkerSpec.from_wire(json.loads(line))
        spec = spec.validated()
    except (ValueError, KeyError, TypeError) as exc:
        print(f"sfu worker: bad settings on stdin: {exc}", file=sys.stderr)
        return 2
    die_with_parent(spec.parent_pid)
    logging.getLogger().setLevel(spec.config.log_level.upper())
    asyncio.run(serve_worker(spec))
    return 0

"""The aiohttp application: signaling WebSocket, health check, metrics, admin API and the
browser client; graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from . import debug, metrics
from .config import Config
from .media_sessions import MediaSessions
from .room import RoomManager
from .rtc import aiortc_glue
from .signaling import http, whip
from .signaling.limits import CLOSE_GOING_AWAY
from .signaling.ws import websocket_handler
from .state import CONFIG_KEY, CONNECTIONS_KEY, MEDIA_SESSIONS_KEY, METRICS_KEY, ROOMS_KEY, STATS_KEY, Connections
from .stats import ServerStats

__all__ = [
    "CONFIG_KEY",
    "CONNECTIONS_KEY",
    "MEDIA_SESSIONS_KEY",
    "METRICS_KEY",
    "ROOMS_KEY",
    "STATS_KEY",
    "RedactingAccessLogger",
    "create_app",
    "drain",
]

logger = logging.getLogger(__name__)

# After the grace period, how long closing sockets may take before the server stops anyway.
CLOSE_TIMEOUT_S = 3.0
_DRAINED = web.AppKey("drained", asyncio.Event)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(request.app[CONFIG_KEY].client_dir / "index.html")


async def healthz(request: web.Request) -> web.Response:
    manager = request.app[ROOMS_KEY]
    rooms = manager.rooms
    participants = sum(len(r.participants) for r in rooms.values())
    status = "draining" if manager.draining else "ok"
    return web.json_response(
        {"status": status, "rooms": len(rooms), "participants": participants},
        status=503 if manager.draining else 200,
    )


async def drain(app: web.Application) -> None:
    """Refuse new connections and joins, tell every client (``server-shutdown``), keep
    handling their messages while the calls end by themselves for up to ``shutdown_grace_s``,
    then close the remaining sockets (close code 1001, going away). Returns when the last
    participant has left or the grace is over and the sockets are closed; runs once (the
    SIGTERM handler of ``python -m sfu`` calls it before the server stops reading, and
    ``on_shutdown`` calls it again)."""
    done = app[_DRAINED]
    if app[ROOMS_KEY].draining:
        await done.wait()
        return
    config, manager, connections = app[CONFIG_KEY], app[ROOMS_KEY], app[CONNECTIONS_KEY]
    manager.draining = True
    try:
        if not len(connections):
            return
        grace_s = config.shutdown_grace_s
        logger.info("shutting down: %d sockets, %.1f s grace", len(connections), grace_s)
        for connection in connections:
            connection.notify_shutdown(grace_s)
            if not connection.joined:  # no call to finish
                await connection.disconnect("disconnected", None, "", CLOSE_GOING_AWAY)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        # (WHIP publishers and WHEP players have no socket to be told on: they are not waited for)
        while any(p.session is not None for r in manager.rooms.values() for p in r.participants.values()) and (
            loop.time() < deadline
        ):
            await asyncio.sleep(0.05)
        for connection in connections:
            await connection.disconnect("disconnected", None, "", CLOSE_GOING_AWAY)
        deadline = loop.time() + CLOSE_TIMEOUT_S
        while len(connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
    finally:
        done.set()


class RedactingAccessLogger(AccessLogger):
    """The default access log, with the value of every ``token=`` (request line, Referer)
    replaced. aiohttp compiles the format into its base class's own ``_format_*`` functions,
    so the redaction is applied to the formatted values, not to one of them."""

    _TOKEN = re.compile(r"(token=)[^&\s\"]*")

    def _format_line(
        self, request: BaseRequest, response: StreamResponse, time: float
    ) -> Iterable[tuple[str | tuple[str, str], str]]:
        return [
            (key, self._TOKEN.sub(r"\1REDACTED", value) if isinstance(value, str) else value)
            for key, value in super()._format_line(request, response, time)
        ]


ACCESS_LOGGER: type[AbstractAccessLogger] = RedactingAccessLogger


def create_app(config: Config | None = None) -> web.Application:
    config = (config or Config()).validate()
    for advice in config.advisories():
        logger.warning("%s", advice)
    aiortc_glue.check_compatibility()
    aiortc_glue.set_host_addresses(config.ice_host_addresses)
    aiortc_glue.configure_network(
        port_min=config.ice_port_min or None,
        port_max=config.ice_port_max or None,
        announced_address=config.ice_announced_address or None,
        keep_private_host=config.ice_keep_private_host,
    )
    app = web.Application()
    app[CONFIG_KEY] = config
    app[ROOMS_KEY] = RoomManager(config)
    app[STATS_KEY] = ServerStats()
    app[CONNECTIONS_KEY] = Connections()
    app[MEDIA_SESSIONS_KEY] = MediaSessions()
    app[_DRAINED] = asyncio.Event()
    app[METRICS_KEY] = metrics.make_registry(app[ROOMS_KEY], app[STATS_KEY])

    async def rooms_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[MEDIA_SESSIONS_KEY].close()
        await app[ROOMS_KEY].close()

    app.cleanup_ctx.append(rooms_ctx)
    app.on_shutdown.append(drain)
    app.router.add_get("/ws", websocket_handler)
    app.router.add_get("/healthz", healthz)
    http.add_routes(app, config.metrics_enabled)
    whip.add_routes(app)
    debug.start_tracing()
    app.router.add_get("/admin/debug/memory", debug.memory)
    app.router.add_get("/", index)
    app.router.add_static("/", config.client_dir, show_index=False)
    return app

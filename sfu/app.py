"""The aiohttp application: signaling WebSocket, health check, metrics, admin API and the
browser client; graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSCloseCode, web
from aiohttp.web_log import AccessLogger
from prometheus_client import CollectorRegistry

from . import debug, metrics
from .config import Config
from .room import RoomManager
from .rtc import aiortc_glue
from .signaling import http
from .signaling.ws import Session, websocket_handler

logger = logging.getLogger(__name__)

CONFIG_KEY = web.AppKey("config", Config)
ROOMS_KEY = web.AppKey("rooms", RoomManager)
STATS_KEY = web.AppKey("stats", metrics.ServerStats)
SESSIONS_KEY = web.AppKey("sessions", set[Session])
METRICS_KEY = web.AppKey("metrics", CollectorRegistry)

# After the grace period, how long closing sockets may take before the server stops anyway.
CLOSE_TIMEOUT_S = 3.0


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
    """on_shutdown: refuse new joins, tell every client, give the calls ``shutdown_grace_s``
    to end, then close the remaining sockets (WebSocket close code 1001, going away)."""
    config, manager, sessions = app[CONFIG_KEY], app[ROOMS_KEY], app[SESSIONS_KEY]
    manager.draining = True
    if not sessions:
        return
    grace_s = config.shutdown_grace_s
    logger.info("shutting down: %d sockets, %.1f s grace", len(sessions), grace_s)
    for session in list(sessions):
        session.notify_shutdown(grace_s)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while any(r.participants for r in manager.rooms.values()) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    for session in list(sessions):
        await session.disconnect("disconnected", None, "", WSCloseCode.GOING_AWAY)
    deadline = loop.time() + CLOSE_TIMEOUT_S
    while sessions and loop.time() < deadline:
        await asyncio.sleep(0.05)


class RedactingAccessLogger(AccessLogger):
    """The default access log, with ``token=...`` in URLs replaced."""

    _TOKEN = re.compile(r"(token=)[^&\s]*")

    @staticmethod
    def _format_r(request: Any, response: Any, time: float) -> str:
        line = AccessLogger._format_r(request, response, time)
        return RedactingAccessLogger._TOKEN.sub(r"\1REDACTED", line)


def create_app(config: Config | None = None) -> web.Application:
    config = (config or Config()).validate()
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
    app[STATS_KEY] = metrics.ServerStats()
    app[SESSIONS_KEY] = set()
    app[METRICS_KEY] = metrics.make_registry(app[ROOMS_KEY], app[STATS_KEY])

    async def rooms_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[ROOMS_KEY].close()

    app.cleanup_ctx.append(rooms_ctx)
    app.on_shutdown.append(drain)
    app.router.add_get("/ws", websocket_handler)
    app.router.add_get("/healthz", healthz)
    http.add_routes(app, config.metrics_enabled)
    debug.start_tracing()
    app.router.add_get("/admin/debug/memory", debug.memory)
    app.router.add_get("/", index)
    app.router.add_static("/", config.client_dir, show_index=False)
    return app

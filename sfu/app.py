"""The aiohttp application: signaling WebSocket, health check and the browser client."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from .config import Config
from .rtc import aiortc_glue
from .room import RoomManager
from .signaling.ws import websocket_handler

CONFIG_KEY = web.AppKey("config", Config)
ROOMS_KEY = web.AppKey("rooms", RoomManager)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(request.app[CONFIG_KEY].client_dir / "index.html")


async def healthz(request: web.Request) -> web.Response:
    rooms = request.app[ROOMS_KEY].rooms
    participants = sum(len(r.participants) for r in rooms.values())
    return web.json_response({"status": "ok", "rooms": len(rooms), "participants": participants})


def create_app(config: Config | None = None) -> web.Application:
    config = (config or Config()).validate()
    aiortc_glue.check_compatibility()
    aiortc_glue.set_host_addresses(config.ice_host_addresses)
    app = web.Application()
    app[CONFIG_KEY] = config
    app[ROOMS_KEY] = RoomManager(config)

    async def rooms_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[ROOMS_KEY].close()

    app.cleanup_ctx.append(rooms_ctx)
    app.router.add_get("/ws", websocket_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", index)
    app.router.add_static("/", config.client_dir, show_index=False)
    return app

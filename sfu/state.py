"""The application's typed state (aiohttp ``AppKey``s) and the registry of open signaling
connections. app.py fills it in; the signaling routes read it. Importing this module pulls in
no route, so sfu/signaling never needs to import sfu/app.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from .config import Config
from .media_sessions import MediaSessions
from .room import RoomManager
from .stats import ServerStats


class Connection(Protocol):
    """One open signaling socket, as the shutdown drain sees it."""

    @property
    def joined(self) -> bool: ...

    def notify_shutdown(self, grace_s: float) -> None: ...

    async def disconnect(self, leave_reason: str, code: str | None, message: str, close_code: int) -> None: ...


class Connections:
    """Open signaling sockets, counted per remote address for the connection limits."""

    def __init__(self) -> None:
        self._open: dict[Connection, str] = {}
        self._per_address: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._open))

    def on_address(self, address: str) -> int:
        return self._per_address[address]

    def add(self, connection: Connection, address: str) -> None:
        self._open[connection] = address
        self._per_address[address] += 1

    def discard(self, connection: Connection) -> None:
        address = self._open.pop(connection, None)
        if address is not None:
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]


CONFIG_KEY = web.AppKey("config", Config)
ROOMS_KEY = web.AppKey("rooms", RoomManager)
STATS_KEY = web.AppKey("stats", ServerStats)
CONNECTIONS_KEY = web.AppKey("connections", Connections)
METRICS_KEY = web.AppKey("metrics", CollectorRegistry)
MEDIA_SESSIONS_KEY = web.AppKey("media_sessions", MediaSessions)

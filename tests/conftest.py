import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from sfu.app import create_app
from sfu.client import load_clip
from sfu.config import Config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, config: Config, runner: web.AppRunner) -> None:
        self.config = config
        self.runner = runner
        self.app = runner.app
        self.url = f"http://127.0.0.1:{config.port}"
        self.ws_url = f"{self.url}/ws"


async def start_server(**options) -> RunningServer:
    options.setdefault("ice_host_addresses", ("127.0.0.1",))
    config = Config(port=free_port(), **options)
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", config.port).start()
    return RunningServer(config, runner)


@pytest.fixture(scope="session", autouse=True)
def clips():
    """Encode the media clips once, before any test measures time."""
    load_clip("audio")
    load_clip("video")


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    srv = await start_server(heartbeat_interval_s=1.0)
    yield srv
    await srv.runner.cleanup()


async def eventually(predicate, timeout: float = 10.0, interval: float = 0.1):
    """Wait until predicate() is truthy; return its value or fail with the last one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value = predicate()
    while not value:
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
        value = predicate()
    return value

import asyncio
import inspect
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from aiortc import RTCPeerConnection

from sfu.app import create_app
from sfu.client import load_clip
from sfu.config import Config
from tests.redis_fixture import RedisServer


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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """One real redis-server for the test session (free loopback port, persistence off)."""
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's redis-server, emptied before the test."""
    if not redis_server.running:
        redis_server.start()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
def fresh_redis(tmp_path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop or restart it."""
    server = RedisServer(free_port(), tmp_path / "redis")
    server.start()
    yield server
    server.stop()


async def eventually(predicate, timeout: float = 10.0, interval: float = 0.1, state=None):
    """Wait until predicate() is truthy; return its value or fail with the last one.

    ``state``, a function, describes what was seen when the condition is not met."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value = predicate()
    while not value:
        if loop.time() > deadline:
            seen = f": {state()}" if state is not None else ""
            raise AssertionError(f"condition not met within {timeout}s{seen}")
        await asyncio.sleep(interval)
        value = predicate()
    return value


async def settled(read, quiet_s: float = 0.5, timeout: float = 10.0):
    """Wait until read() (a function, or a coroutine function) has stopped changing for
    ``quiet_s``; return its value.

    For "nothing more arrives" checks: packets already on their way (in socket buffers, or
    sent before the server acted) are let in first, however slowly a busy machine reads them,
    and then the count must stay put."""

    async def value_now():
        value = read()
        return await value if inspect.isawaitable(value) else value

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value = await value_now()
    still_since = loop.time()
    while loop.time() - still_since < quiet_s:
        if loop.time() > deadline:
            raise AssertionError(f"still changing after {timeout}s: {value}")
        await asyncio.sleep(0.05)
        now_value = await value_now()
        if now_value != value:
            value, still_since = now_value, loop.time()
    return value


async def sendonly_offer(audio: int = 1, video: int = 0, inactive: int = 0) -> str:
    """A real aiortc publish offer: sendonly audio and video m-sections, then inactive ones."""
    pc = RTCPeerConnection()
    for _ in range(audio):
        pc.addTransceiver("audio", direction="sendonly")
    for _ in range(video):
        pc.addTransceiver("video", direction="sendonly")
    for _ in range(inactive):
        pc.addTransceiver("audio", direction="inactive")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp

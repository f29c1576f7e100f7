"""Headless Chromium (Debian's package) driven by Playwright, against the real server.

Playwright gives every launch a fresh, empty profile (--user-data-dir) of its own.
Every test collected under tests/e2e/ carries the ``e2e`` marker, so ``pytest -m "not e2e"``
(``make test-fast``) leaves out the browser and network-namespace tests.
"""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, async_playwright

from tests.conftest import RunningServer, start_server
from tests.e2e.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.netns import HOST_IP, Namespace

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A conftest's collection hook sees every collected item, not only this directory's.
    for item in items:
        if E2E_DIR in item.path.resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
        )
        yield b
        await b.close()


@pytest.fixture
async def e2e_server() -> AsyncIterator[RunningServer]:
    srv = await start_server(heartbeat_interval_s=1.0)
    yield srv
    await srv.runner.cleanup()


@pytest.fixture
async def lab() -> AsyncIterator[tuple[RunningServer, Namespace]]:
    """A network namespace (tests/e2e/netns.py), and a server listening on loopback and on the
    host side of the pair."""
    ns = Namespace()
    srv = await start_server(heartbeat_interval_s=1.0, ice_host_addresses=("127.0.0.1", HOST_IP))
    await web.TCPSite(srv.runner, HOST_IP, srv.config.port).start()
    try:
        yield srv, ns
    finally:
        await srv.runner.cleanup()
        ns.close()

"""Headless Chromium (Debian's package) driven by Playwright, against the real server.

Playwright gives every launch a fresh, empty profile (--user-data-dir) of its own.
"""

import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

from tests.conftest import RunningServer, start_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]


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

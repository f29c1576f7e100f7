"""Headless Chromium through the browser client: a call over HTTPS/WSS with access tokens in
the URL, and a call whose media goes only through a real coturn (iceTransportPolicy relay)."""

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from sfu import auth
from sfu.app import ROOMS_KEY, create_app
from sfu.config import Config
from sfu.tls import make_self_signed, ssl_context
from tests.conftest import eventually, free_port
from tests.e2e.chromium import CHROMIUM, CHROMIUM_ARGS

SECRET = "e2e-secret-" + "q" * 40
TURN_SECRET = "turn-e2e-secret"

MEDIA_JS = """async () => {
  const s = window.sfuSession;
  const out = {frames: 0, audio: 0, pairs: []};
  for (const pc of [s && s.publishPc, s && s.subscribePc]) {
    if (!pc) continue;
    const report = await pc.getStats();
    const byId = new Map();
    report.forEach((r) => byId.set(r.id, r));
    report.forEach((r) => {
      if (pc === s.subscribePc && r.type === 'inbound-rtp') {
        if (r.kind === 'video') out.frames += r.framesDecoded || 0;
        else out.audio += r.packetsReceived || 0;
      }
      if (r.type === 'transport' && r.selectedCandidatePairId) {
        const pair = byId.get(r.selectedCandidatePairId);
        const local = pair && byId.get(pair.localCandidateId);
        out.pairs.push(local ? local.candidateType : null);
      }
    });
  }
  return out;
}"""


@pytest.fixture
async def tls_browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS + ["--ignore-certificate-errors"], headless=True
        )
        yield b
        await b.close()


async def serve(config: Config, ssl: bool = False) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", config.port, ssl_context=ssl_context(config) if ssl else None).start()
    return runner, f"{'https' if ssl else 'http'}://127.0.0.1:{config.port}"


async def open_page(browser: Browser, url: str, name: str) -> Page:
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    page.on("console", lambda m: print(f"[{name}] {m.type}: {m.text}") if m.type == "error" else None)
    await page.goto(url)
    await page.wait_for_function("document.body.dataset.state === 'joined'", timeout=15000)
    return page


async def wait_media(page: Page, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        media = await page.evaluate(MEDIA_JS)
        if media["frames"] > 0 and media["audio"] > 0:
            return media
        assert time.monotonic() < deadline, f"no media: {media}"
        await asyncio.sleep(0.05)


async def test_browsers_call_over_https_and_wss_with_tokens_from_the_url(tls_browser, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key, ["localhost"], ["127.0.0.1"])
    config = Config(
        port=free_port(),
        ice_host_addresses=("127.0.0.1",),
        tls_cert_file=cert,
        tls_key_file=key,
        auth_secret=SECRET,
        heartbeat_interval_s=1.0,
    ).validate()
    runner, base = await serve(config, ssl=True)
    try:
        pages = []
        for who in ("ada", "bob"):
            tok = auth.mint(SECRET, who, "secure", {"publish", "subscribe"}, 600, name=who.title())
            pages.append(await open_page(tls_browser, f"{base}/?room=secure&name=x&autojoin=1&token={tok}", who))
        for page in pages:
            assert await page.evaluate("location.protocol") == "https:"
            assert await page.evaluate("window.sfuSession.ws.url.startsWith('wss://')")
            assert await page.evaluate("window.isSecureContext")
            await wait_media(page)
        room = runner.app[ROOMS_KEY].rooms["secure"]
        assert sorted(p.identity for p in room.participants.values()) == ["ada", "bob"]
        assert sorted(p.name for p in room.participants.values()) == ["Ada", "Bob"]
        # A page with a token for another room is refused and says so.
        tok = auth.mint(SECRET, "eve", "elsewhere", {"publish", "subscribe"}, 600)
        context = await tls_browser.new_context(ignore_https_errors=True)
        page = await context.new_page()
        await page.goto(f"{base}/?room=secure&name=eve&autojoin=1&token={tok}")
        await page.wait_for_function("document.body.dataset.state === 'error'", timeout=15000)
        assert "unauthorized" in await page.inner_text("#banner")
        assert len(room.participants) == 2
        for p in pages + [page]:
            await p.context.close()
    finally:
        await runner.cleanup()


@pytest.fixture
def coturn(tmp_path) -> tuple[int, Path]:
    """A real coturn on 127.0.0.1 with the REST-API shared secret; yields (port, log file)."""
    binary = shutil.which("turnserver")
    assert binary, "coturn is missing: run scripts/install-system-deps.sh"
    port = free_port()
    log = tmp_path / "turn.log"
    proc = subprocess.Popen(
        [
            binary,
            "-n",
            "--listening-ip",
            "127.0.0.1",
            "--relay-ip",
            "127.0.0.1",
            "--listening-port",
            str(port),
            "--min-port",
            "45000",
            "--max-port",
            "45999",
            "--use-auth-secret",
            "--static-auth-secret",
            TURN_SECRET,
            "--realm",
            "sfu.test",
            "--allow-loopback-peers",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--fingerprint",
            "--no-tcp-relay",
            "--pidfile",
            str(tmp_path / "turn.pid"),
            "--log-file",
            str(log),
            "--simple-log",
            "--verbose",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not (log.exists() and "listener" in log.read_text(errors="replace").lower()):
            assert proc.poll() is None, "turnserver exited"
            assert time.monotonic() < deadline, "turnserver did not start"
            time.sleep(0.05)
        yield port, log
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_relay_only_browsers_get_media_through_coturn(browser, coturn):
    turn_port, turn_log = coturn
    config = Config(
        port=free_port(),
        ice_host_addresses=("127.0.0.1",),
        turn_urls=(f"turn:127.0.0.1:{turn_port}?transport=udp",),
        turn_secret=TURN_SECRET,
        heartbeat_interval_s=1.0,
    ).validate()
    runner, base = await serve(config)
    try:
        t0 = time.monotonic()
        pages = [
            await open_page(browser, f"{base}/?room=relay&name=u{i}&autojoin=1&relay=1", f"u{i}") for i in range(2)
        ]
        times = []
        for page in pages:
            media = await wait_media(page, 30)
            times.append(time.monotonic() - t0)
            # Both peer connections of both pages run over relayed candidates only.
            assert media["pairs"] == ["relay", "relay"], media
        policy = await pages[0].evaluate("window.sfuSession.publishPc.getConfiguration().iceTransportPolicy")
        assert policy == "relay"
        servers = await pages[0].evaluate("window.sfuSession.iceServers")
        assert servers[0]["username"].split(":")[1]  # "<expiry>:<identity>"
        print(f"TURN relay only: first decoded video on both pages {max(times):.2f}s after the first page load")
        # Video keeps being decoded (polled: a busy machine decodes fewer frames in a given time).
        deadline = time.monotonic() + 20
        while True:
            later = [await page.evaluate(MEDIA_JS) for page in pages]
            if all(m["frames"] > 10 for m in later):
                break
            assert time.monotonic() < deadline, later
            await asyncio.sleep(0.2)
        assert all(m["frames"] > 10 for m in later), later
        text = turn_log.read_text(errors="replace")
        assert "allocation" in text.lower() or "ALLOCATE" in text, "coturn saw allocations"
        for page in pages:
            await page.context.close()
        await eventually(lambda: not runner.app[ROOMS_KEY].rooms, timeout=10)
    finally:
        await runner.cleanup()


def test_coturn_is_installed_by_the_system_deps_script():
    script = (Path(__file__).resolve().parents[2] / "scripts" / "install-system-deps.sh").read_text()
    assert "coturn" in script and os.access(shutil.which("turnserver") or "", os.X_OK)

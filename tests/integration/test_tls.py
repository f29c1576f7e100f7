"""Development HTTPS: a self-signed certificate for this machine, made once and reused, that
a client trusting it can verify for 127.0.0.1; `sfu healthcheck` speaks HTTPS too."""

import asyncio
import os
import ssl
import sys

import aiohttp
from aiohttp import web

from sfu.app import create_app
from sfu.config import Config
from sfu.tls import ssl_context
from tests.conftest import free_port


async def test_self_signed_mode_serves_https_that_verifies_for_the_local_address(tmp_path):
    config = Config(port=free_port(), tls_self_signed=True, tls_self_signed_dir=tmp_path / "tls").validate()
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", config.port, ssl_context=ssl_context(config)).start()
    try:
        cert = tmp_path / "tls" / "cert.pem"
        assert cert.exists() and oct((tmp_path / "tls" / "key.pem").stat().st_mode & 0o777) == "0o600"
        first = cert.read_bytes()
        ssl_context(config)
        assert cert.read_bytes() == first, "the certificate is reused, so phones trust it once"
        trusting = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://127.0.0.1:{config.port}/healthz", ssl=trusting) as r:
                assert (await r.json())["status"] == "ok"
            async with http.ws_connect(f"wss://127.0.0.1:{config.port}/ws", ssl=trusting) as ws:
                await ws.send_json({"type": "ping"})
                assert (await ws.receive_json(timeout=5))["type"] == "pong"
        env = dict(
            os.environ,
            SFU_PORT=str(config.port),
            SFU_TLS_SELF_SIGNED="true",
            SFU_TLS_SELF_SIGNED_DIR=str(tmp_path / "tls"),
        )
        check = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sfu", "healthcheck", env=env, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await check.communicate()
        assert check.returncode == 0, stderr
    finally:
        await runner.cleanup()

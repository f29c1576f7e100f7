"""The signaling surface against strangers, from outside over real sockets: hostile frames get
typed errors, and the limits (connections, join deadline, message rate, bytes queued for a
client that does not read, liveness from pongs) hold while a call in another room goes on."""

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import struct

import aiohttp
import pytest
from aiohttp import web

from sfu import auth
from sfu.app import ACCESS_LOGGER, ROOMS_KEY, create_app
from sfu.client import Participant
from sfu.config import Config
from sfu.state import CONNECTIONS_KEY
from tests.conftest import eventually, free_port, start_server
from tests.integration.test_operations import parse_metrics

SECRET = "limits-secret-" + "q" * 40


# -- a raw WebSocket client that reads only what it is told to ---------------------------------


async def raw_connect(port: int, local: str = "127.0.0.1", rcvbuf: int | None = None) -> socket.socket:
    """A WebSocket to /ws after its handshake; nothing more is read from it."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((local, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:  # one byte at a time: no frame is read with the head
        head += await loop.sock_recv(sock, 1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    return sock


def text_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes([0x81, 0x80 | n])
    elif n < 65536:
        header = bytes([0x81, 0x80 | 126]) + struct.pack("!H", n)
    else:
        header = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", n)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frames(sock: socket.socket) -> tuple[list[str], int | None]:
    """Read server frames until a close (or the end), answering pings; the texts and the
    close code."""
    loop = asyncio.get_running_loop()
    buf, texts = b"", []

    async def need(n):
        nonlocal buf
        while len(buf) < n:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                raise EOFError
            buf += chunk

    try:
        while True:
            await need(2)
            opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
            head = 2
            if n == 126:
                await need(4)
                n, head = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                await need(10)
                n, head = struct.unpack("!Q", buf[2:10])[0], 10
            await need(head + n)
            payload, buf = buf[head : head + n], buf[head + n :]
            if opcode == 0x1:
                texts.append(payload.decode())
            elif opcode == 0x9:
                await loop.sock_sendall(sock, control_frame(0xA, payload))
            elif opcode == 0x8:
                return texts, struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
    except (EOFError, ConnectionError):
        return texts, None


def control_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# -- hostile frames ----------------------------------------------------------------------------


async def test_hostile_frames_get_typed_errors_and_the_socket_stays_usable(server, caplog):
    caplog.set_level(logging.ERROR)
    limit = server.config.max_message_bytes
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws_url, max_msg_size=0)

        async def ask(text):
            await ws.send_str(text)
            return await ws.receive_json(timeout=10)

        # JSON nested about 990 deep (a 2 KB frame): bad JSON, not a server error.
        deep = '{"a":' * 990 + "1" + "}" * 990
        assert len(deep) < 8000
        assert (await ask(deep))["code"] == "bad-json"
        assert (await ask("[" * 20000 + "]" * 20000))["code"] == "bad-json"
        # A room name with a trailing newline is not a room name.
        for room in ("abc\n", "abc\r\n", "abc\n\n"):
            err = await ask(json.dumps({"type": "join", "room": room, "name": "x"}))
            assert (err["code"], err["request"]) == ("bad-message", "join")
        # A frame of exactly 4 x max_message_bytes is answered with too-large, the socket stays.
        assert (await ask("x" * (limit * 4)))["code"] == "too-large"
        assert (await ask(" " * (limit + 1)))["code"] == "too-large"
        assert (await ask('{"type": "ping"}'))["type"] == "pong"
        joined = await ask(json.dumps({"type": "join", "room": "abc", "name": "x"}))
        assert (joined["type"], joined["room"]) == ("joined", "abc")
        await ws.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no traceback for bad input"


async def test_the_access_log_never_shows_a_token(caplog):
    """Through the access logger `python -m sfu` uses: GET /ws?token=... is logged redacted."""
    config = Config(port=free_port(), ice_host_addresses=("127.0.0.1",), auth_secret=SECRET).validate()
    runner = web.AppRunner(create_app(config), access_log_class=ACCESS_LOGGER)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", config.port).start()
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    good = auth.mint(SECRET, "ada", "r", {"publish", "subscribe"}, 600)
    bad = "eyJhbGciOiJIUzI1NiJ9.not-a-real-token.signature-bits"
    url = f"http://127.0.0.1:{config.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/ws?token={bad}&x=1") as r:
                assert r.status == 401
            ws = await http.ws_connect(f"{url}/ws?token={good}")
            await ws.close()
            async with http.get(f"{url}/healthz", headers={"Referer": f"{url}/?room=r&token={good}"}) as r:
                assert r.status == 200

        def lines():
            return [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]

        await eventually(lambda: len(lines()) >= 3, timeout=10)
        text = "\n".join(lines())
        assert good not in text and bad not in text, text
        assert text.count("token=REDACTED") >= 3, text
        assert "x=1" in text  # only the token is hidden
    finally:
        await runner.cleanup()


# -- limits, with a call next door ---------------------------------------------------------------


class GapMonitor:
    """The longest time without a new packet of a's video at b."""

    def __init__(self, count):
        self.count = count
        self.longest_gap_s = 0.0
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self):
        loop = asyncio.get_running_loop()
        last_value, last_change = self.count(), loop.time()
        while True:
            await asyncio.sleep(0.05)
            now, value = loop.time(), self.count()
            if value != last_value:
                last_value, last_change = value, now
            self.longest_gap_s = max(self.longest_gap_s, now - last_change)

    async def stop(self):
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


LIMITS = dict(
    heartbeat_interval_s=1.0,
    max_connections=12,
    max_connections_per_address=5,
    join_timeout_s=4.0,
    messages_per_s=20.0,
    message_burst=40,
    max_message_bytes=8192,
    max_queued_bytes=16384,
    # A client that misses its pong is kept this long for a resume before it is removed.
    resume_grace_s=1.0,
)


async def test_strangers_hit_every_limit_while_the_call_next_door_never_stalls():
    srv = await start_server(**LIMITS)
    port, rooms = srv.config.port, srv.app[ROOMS_KEY]
    a, b = Participant(srv.ws_url, "good", "a"), Participant(srv.ws_url, "good", "b")
    sockets: list[socket.socket] = []
    http = aiohttp.ClientSession()
    try:
        await a.join()
        await a.publish()
        await b.join()
        await eventually(lambda: b.received_from(a.id, "video") > 20, timeout=20)
        monitor = GapMonitor(lambda: b.received_from(a.id, "video"))

        # Too many connections: per address (5), then in total (12, the call's 2 included).
        # These never join but answer pings, as an idle browser tab would.
        loop = asyncio.get_running_loop()
        idle, readers = [], []
        for local in ("127.0.0.2", "127.0.0.3"):
            for _ in range(5):
                sock = await raw_connect(port, local)
                idle.append(sock)
                readers.append(loop.create_task(read_frames(sock)))
            with pytest.raises(AssertionError, match="503"):
                await raw_connect(port, local)
        refused = await _http_get(port, "127.0.0.4")
        assert refused[0] == 503 and refused[1]["code"] == "too-many-connections"
        sockets += idle

        # Never joining: told join-timeout, then closed with 4000.
        for texts, close_code in await asyncio.wait_for(asyncio.gather(*readers), 30):
            assert [json.loads(t)["code"] for t in texts] == ["join-timeout"]
            assert close_code == 4000
        for sock in idle:
            sock.close()
        await eventually(lambda: len(srv.app[CONNECTIONS_KEY]) == 2, timeout=10)

        # A flood: dropped beyond the rate (told once per burst), the socket stays usable.
        flooder = await http.ws_connect(srv.ws_url)
        await flooder.send_str(json.dumps({"type": "join", "room": "flood", "name": "f"}))
        assert (await flooder.receive_json(timeout=10))["type"] == "joined"
        t0 = loop.time()
        for _ in range(2000):
            await flooder.send_str('{"type": "ping"}')
        replies = []
        try:
            while True:
                # (one deadline for the whole wait: the server's pings restart aiohttp's own)
                replies.append(await asyncio.wait_for(flooder.receive_json(), 1.5))
        except TimeoutError:
            pass
        elapsed_s = loop.time() - t0
        pongs = sum(1 for m in replies if m["type"] == "pong")
        limited = [m for m in replies if m.get("code") == "rate-limited"]
        assert limited and pongs >= LIMITS["message_burst"] // 2
        assert pongs <= LIMITS["message_burst"] + LIMITS["messages_per_s"] * elapsed_s + 5, (pongs, elapsed_s)
        assert len(replies) < 2000 // 4, "replies to a flood are bounded by the rate"
        await asyncio.sleep(0.5)
        await flooder.send_str('{"type": "ping"}')
        assert (await flooder.receive_json(timeout=5))["type"] == "pong"
        await flooder.close()

        # Sending without ever answering a ping: lost for a missed pong (incoming messages
        # are no proof of liveness), and removed once the resume grace is over.
        silent = await http.ws_connect(srv.ws_url, autoping=False)
        await silent.send_str(json.dumps({"type": "join", "room": "silent", "name": "s"}))
        assert (await silent.receive_json(timeout=10))["type"] == "joined"

        async def chatter():
            while not silent.closed:
                await silent.send_str('{"type": "ping"}')
                await asyncio.sleep(0.2)

        chat_task = loop.create_task(chatter())
        await eventually(lambda: "silent" not in rooms.rooms, timeout=15)
        chat_task.cancel()
        await asyncio.gather(chat_task, return_exceptions=True)

        # Never reading: what waits for it is bounded; past that it is dropped.
        slow = await raw_connect(port, "127.0.0.5", rcvbuf=1024)
        sockets.append(slow)
        await loop.sock_sendall(slow, text_frame(json.dumps({"type": "join", "room": "slow", "name": "s"})))
        await eventually(lambda: "slow" in rooms.rooms, timeout=10)
        # A burst of chats, each echoed to the sender (within the message rate), faster
        # than the heartbeat would notice a client that does not read.
        chat = text_frame(json.dumps({"type": "chat", "text": "z" * 1900}))
        with contextlib.suppress(OSError):
            await loop.sock_sendall(slow, chat * (LIMITS["message_burst"] - 1))
        await eventually(lambda: "slow" not in rooms.rooms, timeout=15)

        await asyncio.sleep(1.0)
        await monitor.stop()
        assert monitor.longest_gap_s < 1.0, f"the call next door stalled for {monitor.longest_gap_s:.2f} s"
        assert set(rooms.rooms) == {"good"}

        async with http.get(srv.url + "/metrics") as r:
            metrics = parse_metrics(await r.text())
        for limit in ("connections", "connections-per-address", "join-timeout", "rate", "heartbeat", "send-queue"):
            assert metrics.get(f'sfu_signaling_limited_total{{limit="{limit}"}}', 0) >= 1, limit
        assert metrics['sfu_errors_total{code="too-many-connections"}'] >= 3
    finally:
        await http.close()
        for s in sockets:
            s.close()
        for p in (a, b):
            await p.close()
        await srv.runner.cleanup()


async def _http_get(port: int, local: str) -> tuple[int, dict]:
    connector = aiohttp.TCPConnector(local_addr=(local, 0))
    async with aiohttp.ClientSession(connector=connector) as http, http.get(f"http://127.0.0.1:{port}/ws") as r:
        return r.status, await r.json()

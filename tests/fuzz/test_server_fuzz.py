"""The running server, fuzzed from outside: real WebSockets and a real SRTP session.

Seeded mutation fuzzing, reproducible (``SFU_FUZZ_SEED``, default 1): a bounded run of a few
thousand inputs per target in the normal suite, a long one with ``SFU_FUZZ_SERVER_EXAMPLES=<n>``
(inputs per target). Targets:

- signaling frames: valid messages of every type, mutated (values of the wrong type, missing
  and extra keys, truncated, bytes flipped, nested, oversized, not JSON at all), sent on
  sockets that are or are not joined;
- SDP: a real aiortc publish offer and real subscribe answers, mutated line by line (deleted,
  duplicated, swapped, numbers changed, BUNDLE groups rewritten, junk inserted); every offer
  must be answered or refused with a typed error, never left hanging;
- SRTP: a real aiortc participant's RTP and RTCP, mutated after the call is up and sent through
  its own SRTP session, so the server decrypts them and our parsers see them; on the publish
  connection (RTP and sender reports to the server) and the subscribe connection (feedback);
- data channels: data frames mutated byte by byte (some with destinations, some sent as text)
  on a real participant's reliable channel: each relayed or refused with a data-error.

Throughout, an unrelated call in another room must keep flowing, and the server's log must
hold no ERROR record with a traceback and no exception reported to the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import struct
import time

import aiohttp
import pytest

from sfu.app import ROOMS_KEY
from sfu.client import Participant
from sfu.data_frame import DataFrame, decode, encode
from sfu.rtc import aiortc_glue as glue
from tests.conftest import eventually, sendonly_offer, start_server

from .corpus import mutations

SEED = int(os.environ.get("SFU_FUZZ_SEED", "1"))
# Every input here crosses a real WebSocket or SRTP session: the long run sets its own count.
LONG = int(os.environ.get("SFU_FUZZ_SERVER_EXAMPLES", "0"))
PRINTS_ITS_COUNTS = True  # each target prints what it sent (tests/fuzz/conftest.py)

pytestmark = pytest.mark.timeout(max(300, LONG // 50))


def budget(bounded: int) -> int:
    return LONG or bounded


# -- the server's log ---------------------------------------------------------------------


class LogWatch(logging.Handler):
    """Every record with a traceback, and every ERROR, from the server and its WebRTC stack."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        traceback_in_text = "Traceback (most recent call last)" in text
        if record.levelno >= logging.ERROR or record.exc_info or traceback_in_text:
            if record.levelno < logging.WARNING and not traceback_in_text:
                return  # debug detail of a dropped input (exc_info on a debug record)
            self.bad.append(f"{record.name} {record.levelname}: {self.format(record)}")


@pytest.fixture
async def watched():
    watch = LogWatch()
    watch.setFormatter(logging.Formatter("%(message)s"))
    loggers = [logging.getLogger(name) for name in ("sfu", "aiortc", "aioice", "asyncio", "aiohttp")]
    for logger in loggers:
        logger.addHandler(watch)
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def on_loop_exception(loop, context):
        watch.bad.append(f"event loop: {context.get('message')} {context.get('exception')!r}")

    loop.set_exception_handler(on_loop_exception)
    # Every frame must reach the parser: the rate limit (tests/integration/test_signaling_limits.py)
    # would drop most of a fuzzer's frames unanswered.
    server = await start_server(heartbeat_interval_s=30.0, messages_per_s=1e6, message_burst=1_000_000)
    bystanders = await bystander_call(server)
    try:
        yield server, watch, bystanders
        # The unrelated call kept going, and nobody in it was removed.
        a, b = bystanders
        before = (a.received_from(b.id, "video"), b.received_from(a.id, "video"))
        await eventually(
            lambda: a.received_from(b.id, "video") > before[0] + 20 and b.received_from(a.id, "video") > before[1] + 20,
            20,
        )
        for p in bystanders:
            assert not [m for m in p.messages if m["type"] in ("participant-left", "socket-closed", "error")]
        assert set(server.app[ROOMS_KEY].rooms["bystanders"].participants) == {a.id, b.id}
        assert not watch.bad, "\n".join(watch.bad[:10])
    finally:
        for p in bystanders:
            await p.close()
        await server.runner.cleanup()
        loop.set_exception_handler(previous)
        for logger in loggers:
            logger.removeHandler(watch)


async def bystander_call(server):
    out = []
    for name in ("a", "b"):
        p = Participant(server.ws_url, "bystanders", name)
        await p.join()
        await p.publish()
        out.append(p)
    a, b = out
    await eventually(lambda: a.received_from(b.id, "video") > 10 and b.received_from(a.id, "video") > 10, 20)
    return out


class StallMeter:
    """The longest time the bystanders received no video (printed, not asserted)."""

    def __init__(self, bystanders) -> None:
        self.bystanders = bystanders
        self.longest_s = 0.0
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        a, b = self.bystanders
        last = (a.received_from(b.id, "video"), b.received_from(a.id, "video"))
        since = time.monotonic()
        while True:
            await asyncio.sleep(0.05)
            now = (a.received_from(b.id, "video"), b.received_from(a.id, "video"))
            t = time.monotonic()
            if now[0] > last[0] and now[1] > last[1]:
                last, since = now, t
            self.longest_s = max(self.longest_s, t - since)

    def stop(self) -> float:
        self._task.cancel()
        return self.longest_s


# -- mutators -----------------------------------------------------------------------------

WEIRD_VALUES = [
    None,
    True,
    0,
    -1,
    2**63,
    -(2**64),
    1e308,
    0.5,
    "",
    "x" * 300,
    "\u0000",
    "\ud800",
    "é\u202e",
    [],
    {},
    [1, [2, [3]]],
    {"type": "join"},
    "candidate:1 1 udp 1 1.2.3.4 9 typ host",
    "v=0",
]


def weird(rng: random.Random):
    return rng.choice(WEIRD_VALUES)


def mutate_json(rng: random.Random, msg: dict) -> dict:
    msg = json.loads(json.dumps(msg))
    for _ in range(rng.randint(1, 3)):
        keys = list(msg)
        op = rng.randrange(6)
        if op == 0 and keys:
            msg[rng.choice(keys)] = weird(rng)
        elif op == 1 and keys:
            del msg[rng.choice(keys)]
        elif op == 2:
            msg[rng.choice(["room", "name", "sdp", "pc", "track", "x", "type", "muted", "candidate"])] = weird(rng)
        elif op == 3:
            msg["type"] = rng.choice(["join", "offer", "answer", "candidate", "mute", "subscription", "chat", "ping"])
        elif op == 4 and keys:
            key = rng.choice(keys)
            depth = rng.randint(1, 40)
            msg[key] = json.loads("[" * depth + json.dumps(msg[key]) + "]" * depth)
        elif op == 5 and "candidate" in msg and isinstance(msg["candidate"], dict):
            msg["candidate"]["candidate"] = mutate_line(rng, str(msg["candidate"].get("candidate", "")))
    return msg


def mutate_text(rng: random.Random, text: str) -> str:
    op = rng.randrange(6)
    if op == 0:
        return text[: rng.randrange(len(text) + 1)]
    if op == 1:
        chars = list(text)
        for _ in range(rng.randint(1, 4)):
            chars[rng.randrange(len(chars))] = chr(rng.choice([0, 34, 44, 58, 91, 92, 93, 123, 125, 0x7F, 0xE9]))
        return "".join(chars)
    if op == 2:
        return rng.choice(["", "null", "[]", "1", '"join"', "{", "NaN", "Infinity", "[" * 30 + "]" * 30])
    if op == 3:
        return text + rng.choice(["}", "{}", " ", "\x00", ",1"])
    if op == 4:
        return json.dumps({"type": "chat", "text": "x" * rng.choice([1, 1000, 70_000, 200_000])})
    return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(1, 80)))


def mutate_line(rng: random.Random, line: str) -> str:
    op = rng.randrange(5)
    if op == 0:
        return re.sub(r"\d+", lambda m: str(rng.choice([0, -1, 65536, 2**32, 2**64, int(m.group()) + 1])), line)
    if op == 1:
        return line[: rng.randrange(len(line) + 1)]
    if op == 2:
        parts = line.split(" ")
        rng.shuffle(parts)
        return " ".join(parts)
    if op == 3:
        return line + " " + rng.choice(["x", "0", "typ", "\u00e9", ":", "/"])
    return "".join(c if rng.random() > 0.1 else rng.choice("0 :/=a\t") for c in line)


SDP_JUNK = [
    "a=group:BUNDLE 2 0 0",
    "a=group:BUNDLE 0 0",
    "a=group:BUNDLE 9",
    "a=group:BUNDLE",
    "a=mid:0",
    "a=mid:",
    "a=rtpmap:96 VP8/0",
    "a=rtpmap:300 opus/48000/2",
    "a=fmtp:96 apt=200",
    "a=ssrc:1 cname:x",
    "a=ssrc-group:FID 1",
    "a=ssrc-group:FID 1 2 3",
    "a=rid:h send",
    "a=simulcast:send h;q",
    "a=simulcast:send " + ";".join(str(i) for i in range(50)),
    "a=extmap:15 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:0 x",
    "a=setup:passive",
    "a=setup:holdconn",
    "a=fingerprint:sha-256 00",
    "a=ice-ufrag:",
    "a=rtcp-fb:96 nack",
    "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "m=audio 0 UDP/TLS/RTP/SAVPF 111",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "c=IN IP4 0.0.0.0",
    "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host",
    "a=sendrecv",
    "a=inactive",
]


def mutate_sdp(rng: random.Random, sdp: str) -> str:
    lines = [line for line in sdp.split("\r\n") if line]
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(lines))
        op = rng.randrange(7)
        if op == 0 and len(lines) > 1:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])
        elif op == 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3:
            lines[i] = mutate_line(rng, lines[i])
        elif op == 4:
            lines.insert(i, rng.choice(SDP_JUNK))
        elif op == 5:
            # Drop a whole m-section.
            starts = [k for k, line in enumerate(lines) if line.startswith("m=")]
            if starts:
                k = rng.randrange(len(starts))
                end = starts[k + 1] if k + 1 < len(starts) else len(lines)
                del lines[starts[k] : end]
        else:
            # Repeat an m-section (more tracks than the first offer).
            starts = [k for k, line in enumerate(lines) if line.startswith("m=")]
            if starts:
                k = rng.randrange(len(starts))
                end = starts[k + 1] if k + 1 < len(starts) else len(lines)
                lines += lines[starts[k] : end] * rng.randint(1, 3)
    return "\r\n".join(lines) + "\r\n"


# -- raw sockets --------------------------------------------------------------------------


class RawSession:
    """A WebSocket of our own: frames out, replies collected."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.replies: list[dict] = []
        self.offers: asyncio.Queue[dict] = asyncio.Queue()
        self._reader: asyncio.Task | None = None
        self._new = asyncio.Event()

    async def open(self) -> None:
        self.ws = await self.http.ws_connect(self.url, max_msg_size=0)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @property
    def closed(self) -> bool:
        return self.ws is None or self.ws.closed

    async def _read(self) -> None:
        async for raw in self.ws:
            if raw.type != aiohttp.WSMsgType.TEXT:
                break
            msg = json.loads(raw.data)
            self.replies.append(msg)
            if msg.get("type") == "offer":
                self.offers.put_nowait(msg)
            self._new.set()

    async def send(self, text: str) -> None:
        with contextlib.suppress(ConnectionError):
            await self.ws.send_str(text)

    async def request(self, msg: dict, timeout: float = 15.0) -> dict:
        """Send and wait for the reply of the same request (answer, joined, or error)."""
        start = len(self.replies)
        await self.send(json.dumps(msg))
        kind = msg.get("type")

        def reply():
            for m in self.replies[start:]:
                if m.get("type") == "error" and m.get("request") == kind and kind != "ping":
                    return m
                if kind == "offer" and m.get("type") == "answer":
                    return m
                if kind == "join" and m.get("type") == "joined":
                    return m
                if kind == "ping" and m.get("type") == "pong":
                    return m
            return None

        deadline = time.monotonic() + timeout
        while (found := reply()) is None:
            if self.closed and self._reader is not None and self._reader.done():
                return {"type": "socket-closed"}
            if time.monotonic() > deadline:
                raise AssertionError(f"no reply to {kind} within {timeout} s: {json.dumps(msg)[:300]}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), 0.2)
        return found

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


def internal_errors(sessions) -> list[dict]:
    return [m for s in sessions for m in s.replies if m.get("type") == "error" and m.get("code") == "internal"]


# -- targets ------------------------------------------------------------------------------


async def test_mutated_signaling_frames_and_sdp_get_typed_answers(watched):
    server, watch, bystanders = watched
    rng = random.Random(SEED)
    offer_sdp = await sendonly_offer(audio=1, video=1)
    stalls = StallMeter(bystanders)
    publisher = Participant(server.ws_url, "fuzz", "publisher")  # gives raw sessions subscribe offers
    await publisher.join()
    await publisher.publish()
    started = time.monotonic()
    frames = sdp_inputs = 0
    outcomes: dict[str, int] = {}  # replies to the offers, by type or error code
    async with aiohttp.ClientSession() as http:
        sessions: list[RawSession] = []
        try:
            for i in range(4):
                s = RawSession(http, server.ws_url)
                await s.open()
                if i % 2 == 0:
                    await s.request({"type": "join", "room": "fuzz", "name": f"raw{i}"})
                sessions.append(s)
            templates = [
                {"type": "join", "room": "fuzz", "name": "x"},
                {"type": "ping"},
                {"type": "chat", "text": "hello"},
                {"type": "mute", "track": "t-0", "muted": True},
                {"type": "subscription", "track": "t-0", "max_height": 360, "paused": False, "pinned": False},
                {
                    "type": "candidate",
                    "pc": "publish",
                    "candidate": {
                        "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host",
                        "sdp_mid": "0",
                        "sdp_mline_index": 0,
                    },
                },
                {"type": "answer", "pc": "subscribe", "sdp": offer_sdp},
                {"type": "offer", "pc": "publish", "sdp": offer_sdp},
            ]
            # Frames, not waiting for each reply; a ping on every socket now and then proves
            # no session is stuck.
            for n in range(budget(2000)):
                s = sessions[n % len(sessions)]
                if s.closed:
                    s = sessions[n % len(sessions)] = RawSession(http, server.ws_url)
                    await s.open()
                msg = mutate_json(rng, rng.choice(templates))
                text = json.dumps(msg) if rng.random() < 0.7 else mutate_text(rng, json.dumps(msg))
                await s.send(text)
                frames += 1
                if n % 100 == 99:
                    for s in sessions:
                        if not s.closed:
                            reply = await s.request({"type": "ping"})
                            assert reply["type"] in ("pong", "socket-closed"), reply
            # SDP: offers from a joined socket, answers to the subscribe offers it gets.
            offerer = RawSession(http, server.ws_url)
            await offerer.open()
            await offerer.request({"type": "join", "room": "fuzz", "name": "offerer"})
            sessions.append(offerer)
            for n in range(budget(250)):
                if offerer.closed:
                    offerer = RawSession(http, server.ws_url)
                    await offerer.open()
                    await offerer.request({"type": "join", "room": "fuzz", "name": "offerer"})
                    sessions.append(offerer)
                sdp = mutate_sdp(rng, offer_sdp) if n % 5 else offer_sdp
                reply = await offerer.request({"type": "offer", "pc": "publish", "sdp": sdp})
                assert reply["type"] in ("answer", "error", "socket-closed"), reply
                outcomes[reply.get("code", reply["type"])] = outcomes.get(reply.get("code", reply["type"]), 0) + 1
                sdp_inputs += 1
                while not offerer.offers.empty():
                    offer = offerer.offers.get_nowait()
                    answer = offer["sdp"].replace("a=setup:actpass", "a=setup:active").replace("sendonly", "recvonly")
                    await offerer.send(
                        json.dumps({"type": "answer", "pc": "subscribe", "sdp": mutate_sdp(rng, answer)})
                    )
                    sdp_inputs += 1
            for s in sessions:
                if not s.closed:
                    reply = await s.request({"type": "ping"})
                    assert reply["type"] in ("pong", "socket-closed"), reply
            assert not internal_errors(sessions), internal_errors(sessions)[:5]
        finally:
            for s in sessions:
                await s.close()
            await publisher.close()
    elapsed = time.monotonic() - started
    print(
        f"signaling fuzz: {frames} frames, {sdp_inputs} SDP, seed {SEED}, {elapsed:.1f} s, "
        f"{(frames + sdp_inputs) / elapsed:.0f} inputs/s, bystanders' longest stall {stalls.stop():.2f} s; "
        f"offers: {outcomes}"
    )
    # Everyone who left is gone: only the bystanders' room is left.
    await eventually(lambda: set(server.app[ROOMS_KEY].rooms) == {"bystanders"}, 15)


# -- SRTP ---------------------------------------------------------------------------------


def mutate_rtp(rng: random.Random, packet: bytes) -> bytes:
    data = bytearray(packet)
    op = rng.randrange(8)
    if op == 0:  # header bits: CSRC count, extension, padding, marker, payload type
        data[0] = 0x80 | (rng.randrange(16) if rng.random() < 0.5 else 0) | rng.choice([0, 0x10, 0x20, 0x30])
        data[1] = rng.randrange(256)
    elif op == 1:  # sequence numbers and timestamps that jump
        # Far jumps on a stream of its own: on a real stream, SRTP's replay window would
        # follow the jump and refuse the real packets after it for minutes (the sender's own
        # loss, but then nothing more of that stream would reach our parsers).
        seq = struct.unpack_from("!H", data, 2)[0]
        if rng.random() < 0.5:
            struct.pack_into("!I", data, 8, rng.randrange(2**32))
            struct.pack_into("!H", data, 2, rng.randrange(65536))
        else:
            struct.pack_into("!H", data, 2, (seq + rng.randint(-500, 500)) & 0xFFFF)
        struct.pack_into("!I", data, 4, rng.randrange(2**32))
    elif op == 2:  # an unknown SSRC (another real one would take this stream's numbers)
        struct.pack_into("!I", data, 8, rng.randrange(2**32))
    elif op == 3:  # a header extension block of junk, or one whose length lies
        body = rng.randbytes(rng.choice([0, 4, 8, 40]))
        length = len(body) // 4 if rng.random() < 0.5 else rng.randrange(256)
        profile = rng.choice([0xBEDE, 0x1000, rng.randrange(65536)])
        data[0] |= 0x10
        data[12:12] = struct.pack("!HH", profile, length) + body
    elif op == 4:  # payload bytes flipped (VP8 descriptor, Opus)
        for _ in range(rng.randint(1, 8)):
            if len(data) > 12:
                data[rng.randrange(12, len(data))] = rng.randrange(256)
    elif op == 5:  # truncated
        del data[rng.randrange(12, len(data) + 1) :]
    elif op == 6:  # padding that claims more than there is
        data[0] |= 0x20
        data += bytes([rng.randrange(256)])
    else:
        data = bytearray(data[:12]) + rng.randbytes(rng.randrange(0, 1200))
    return bytes(data)


def random_rtcp(rng: random.Random, ssrcs: list[int]) -> bytes:
    """One RTCP packet of a random type, its fields and counts random (lengths may lie)."""
    ssrc = rng.choice(ssrcs + [rng.randrange(2**32)])
    pt = rng.choice([200, 201, 202, 203, 204, 205, 205, 206, 206, 206, 207, rng.randrange(192, 224)])
    count = rng.randrange(32)
    if pt == 205:
        count = rng.choice([1, 15, rng.randrange(32)])  # NACK, transport-cc
    elif pt == 206:
        count = rng.choice([1, 4, 15, rng.randrange(32)])  # PLI, FIR, REMB (app)
    body = struct.pack("!II", rng.randrange(2**32), ssrc)
    if pt == 206 and count == 15 and rng.random() < 0.7:  # REMB: SSRC count may lie
        n = rng.randrange(6)
        claimed = rng.choice([n, n + 1, 255])
        body += b"REMB" + bytes([claimed]) + struct.pack("!I", rng.randrange(2**24))[1:]
        body += b"".join(struct.pack("!I", rng.choice(ssrcs)) for _ in range(n))
    elif pt == 205 and count == 15 and rng.random() < 0.7:  # transport-cc feedback
        base = rng.randrange(65536)
        status_count = rng.choice([1, 14, 200, 65535])
        body += struct.pack("!HHI", base, status_count, rng.randrange(2**32))
        body += rng.randbytes(rng.choice([0, 2, 8, 30]))
    else:
        body += rng.randbytes(rng.choice([0, 4, 8, 20, 24, 44]))
    body += bytes(-len(body) % 4)
    words = len(body) // 4 if rng.random() < 0.8 else rng.randrange(256)
    return bytes([0x80 | count, pt]) + struct.pack("!H", words) + body


async def test_mutated_rtp_and_rtcp_through_a_real_srtp_session(watched):
    server, watch, bystanders = watched
    rng = random.Random(SEED)
    stalls = StallMeter(bystanders)
    sender = Participant(server.ws_url, "srtp", "sender")
    receiver = Participant(server.ws_url, "srtp", "receiver")
    await sender.join()
    await receiver.join()
    await sender.publish_rtp(audio=True, video=True)
    await receiver.publish()
    await eventually(lambda: receiver.received_from(sender.id, "video") > 20 and receiver.subscribe_pc is not None, 20)
    await eventually(lambda: sender.subscribe_pc is not None and glue.dtls_transports(sender.subscribe_pc), 20)
    publish = glue.dtls_transports(sender.publish_pc)[0]
    subscribe = glue.dtls_transports(receiver.subscribe_pc)[0]
    own = [s.ssrc for s in sender.rtp_streams]
    received = [ssrc for ssrc in receiver._ssrc_mid]
    started = time.monotonic()
    sent = rtp_inputs = rtcp_inputs = 0
    try:
        for n in range(budget(3000)):
            stream = rng.choice(sender.rtp_streams)
            packet = rng.choice(stream.packets(n % 300, trailer=False))
            sent += glue.send_packet(publish, mutate_rtp(rng, packet))
            rtp_inputs += 1
            compound = b"".join(random_rtcp(rng, own + received) for _ in range(rng.randint(1, 3)))
            target = publish if n % 2 else subscribe
            sent += glue.send_packet(target, compound, rtcp=True)
            rtcp_inputs += 1
            if n % 50 == 49:
                await asyncio.sleep(0.01)  # let the server read them
        await asyncio.sleep(1)
        # The fuzzed call itself is still up, and the server still forwards its audio (its
        # video may rightly be paused: the fuzzed feedback says the downlink is tiny).
        before = receiver.received_from(sender.id, "audio")
        await eventually(lambda: receiver.received_from(sender.id, "audio") > before + 20, 20)
        assert sender.publish_pc.connectionState == "connected"
        assert receiver.subscribe_pc.connectionState == "connected"
        room = server.app[ROOMS_KEY].rooms["srtp"]
        assert set(room.participants) == {sender.id, receiver.id}
    finally:
        await sender.close()
        await receiver.close()
    elapsed = time.monotonic() - started
    print(
        f"SRTP fuzz: {rtp_inputs} RTP, {rtcp_inputs} RTCP ({sent} protected and sent), seed {SEED}, "
        f"{elapsed:.1f} s, {(rtp_inputs + rtcp_inputs) / elapsed:.0f} inputs/s, "
        f"bystanders' longest stall {stalls.stop():.2f} s"
    )


# -- data channel frames ------------------------------------------------------------------


async def test_mutated_data_frames_through_real_data_channels(watched):
    """Mutated data frames (and text messages) on a real participant's data channels: each is
    relayed or refused with a data-error, the receiver gets only well-formed frames from the
    sender, and a clean message still arrives afterwards."""
    server, watch, bystanders = watched
    rng = random.Random(SEED)
    stalls = StallMeter(bystanders)
    sender = Participant(server.ws_url, "data-fuzz", "sender")
    receiver = Participant(server.ws_url, "data-fuzz", "receiver")
    seeds = [
        encode(DataFrame(b"")),
        encode(DataFrame.of_text("hello", topic="chat")),
        encode(DataFrame(b"\x00\xff" * 20, topic="cursor", ref="42")),
    ]
    started = time.monotonic()
    inputs = 0
    try:
        for p in (sender, receiver):
            await p.join()
            await p.publish_data()
        await sender.wait_data_open(30)
        await receiver.wait_data_open(30)
        room = server.app[ROOMS_KEY].rooms["data-fuzz"]
        room.data.messages_per_s, room.data.burst = 1e9, 1_000_000  # every frame reaches the parser
        stats = room.data.stats
        received_before = stats.received
        for n, frame in enumerate(mutations(seeds, count=budget(2000), salt=77)):
            if rng.random() < 0.3:  # destinations: the receiver, someone unknown, garbage
                frame = encode(DataFrame(frame, to=(rng.choice([receiver.id, "ghost", "x" * 64]),)))
            sender.send_raw_data(frame if rng.random() < 0.95 else frame.decode("latin-1"), reliable=True)
            inputs += 1
            if n % 50 == 49:
                await asyncio.sleep(0.01)
        sender.send_data("the end", topic="end")
        await receiver.wait_data(lambda r: r.frame.topic == "end", timeout=60)
        # Every input reached the relay (the reliable channel is ordered) and was relayed or
        # refused; every refusal was reported.
        assert stats.received - received_before == inputs + 1
        refused = sum(stats.dropped[r] for r in ("bad-message", "too-large", "rate-limited"))

        def reported():
            return sum(
                m["dropped"]
                for m in sender.messages
                if m["type"] == "data-error" and m["code"] != "unknown-participant"
            )

        await eventually(lambda: reported() == refused, 20, state=lambda: (reported(), refused))
        assert all(r.frame.sender == sender.id for r in receiver.data_received)
        assert receiver.malformed_data == 0
        assert all(decode(encode(r.frame)) == r.frame for r in receiver.data_received)
        assert set(room.participants) == {sender.id, receiver.id}
    finally:
        await sender.close()
        await receiver.close()
    elapsed = time.monotonic() - started
    print(
        f"data channel fuzz: {inputs} frames, seed {SEED}, {elapsed:.1f} s, {inputs / elapsed:.0f} inputs/s, "
        f"bystanders' longest stall {stalls.stop():.2f} s"
    )

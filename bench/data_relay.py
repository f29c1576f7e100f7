"""What relaying data channel messages costs the server, and how long a message takes.

    .venv/bin/python bench/data_relay.py [--receivers 1,4] [--messages 3000] [--rate 500]
        [--bytes 200] [--out bench/results/data_relay.json]

For each receiver count a fresh server runs as a subprocess (``python -m sfu``, loopback,
the data rate limit raised out of the way: ``SFU_DATA_MESSAGES_PER_S``), so that its CPU time
can be read with psutil apart from the clients. One Python participant sends ``--messages``
frames of ``--bytes`` on its reliable channel at ``--rate`` a second (each payload carries its
send time); the others only receive. Reported per run: the server's CPU time per message
received and per copy delivered (after subtracting the idle CPU of the same room over the
same time), and the latency from send to receive (same process, same clock: loopback, so it
is the stack's cost, not a network's), median and 95th percentile. Beside them, the cost of
the relay's own decisions (sfu/data_relay.py: rate, size, decode, encode) per message with
fake receivers: the rest is aiortc's SCTP and DTLS, in Python.

``--flood-seconds``: a call of two (a publisher's video, a viewer) in a fresh server while a
third participant, in a process of its own, floods its reliable channel as fast as it can (far
over the default rate of 50 a second): the viewer's video packets per second and longest gap,
and the server's CPU, over a quiet window and a flooded one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sfu.client import Participant  # noqa: E402
from sfu.data_frame import DataFrame, encode  # noqa: E402
from sfu.data_relay import DataRelay  # noqa: E402

HOST = "127.0.0.1"
STAMP = struct.Struct("!d")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode}")
            try:
                async with session.get(f"http://{HOST}:{port}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("server did not become ready")


def cpu_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


async def run(receivers: int, messages: int, rate: float, size: int) -> dict[str, Any]:
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        SFU_DATA_MESSAGES_PER_S="1000000",
        SFU_DATA_MESSAGE_BURST="1000000",
    )
    cmd = [sys.executable, "-m", "sfu", "--host", HOST, "--port", str(port), "--ice-host", HOST]
    proc = subprocess.Popen([*cmd, "--log-level", "WARNING"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    people: list[Participant] = []
    try:
        await wait_ready(port, proc)
        server = psutil.Process(proc.pid)
        url = f"ws://{HOST}:{port}/ws"
        for i in range(receivers + 1):
            p = Participant(url, "bench", f"p{i}")
            await p.join()
            await p.publish_data()
            people.append(p)
        for p in people:
            await p.wait_data_open(30)
        sender, others = people[0], people[1:]
        await asyncio.sleep(1.0)
        # The room's idle cost (SCTP heartbeats, RTCP timers), over as long as the run takes.
        duration_s = messages / rate
        idle_start = cpu_s(server)
        await asyncio.sleep(duration_s)
        idle_cpu_s = cpu_s(server) - idle_start

        cpu_start = cpu_s(server)
        started = time.monotonic()
        filler = b"x" * max(0, size - STAMP.size)
        for i in range(messages):
            due = started + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sender.send_data(STAMP.pack(time.monotonic()) + filler, topic="bench")
        deadline = time.monotonic() + 60
        while any(len(o.data_received) < messages for o in others) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        elapsed_s = time.monotonic() - started
        busy_cpu_s = cpu_s(server) - cpu_start - idle_cpu_s * elapsed_s / duration_s
        latencies_ms = sorted(
            (r.at_s - STAMP.unpack_from(r.frame.payload)[0]) * 1000 for o in others for r in o.data_received
        )
        delivered = sum(len(o.data_received) for o in others)
        data = await metrics(port)
        return {
            "receivers": receivers,
            "messages": messages,
            "rate_per_s": rate,
            "payload_bytes": size,
            "delivered": delivered,
            "server_cpu_us_per_message": round(busy_cpu_s / messages * 1e6, 1),
            "server_cpu_us_per_delivery": round(busy_cpu_s / max(1, delivered) * 1e6, 1),
            "latency_ms_p50": round(statistics.median(latencies_ms), 2),
            "latency_ms_p95": round(latencies_ms[int(len(latencies_ms) * 0.95)], 2),
            "delivered_per_receiver": [len(o.data_received) for o in others],
            "server_dropped": {k: v for k, v in data.items() if k.startswith("sfu_data_dropped") and v},
        }
    finally:
        for p in people:
            await p.close()
        proc.terminate()
        proc.wait(10)


FLOODER = """
import asyncio, sys, time
from sfu.client import Participant

async def main(url, seconds):
    p = Participant(url, "flood", "flooder")
    await p.join()
    await p.publish_data()
    await p.wait_data_open(30)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    sent, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(50):
            p.send_data(b"x" * 200)
            sent += 1
        await asyncio.sleep(0.005)
    print("sent", sent, flush=True)
    await p.close()

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


async def metrics(port: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(f"http://{HOST}:{port}/metrics") as r:
        text = await r.text()
    out = {}
    for line in text.splitlines():
        if line.startswith("sfu_data_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def flood_probe(seconds: float) -> dict[str, Any]:
    """A call of two (a publisher, a viewer) while a third participant, in a process of its
    own, floods its reliable channel as fast as it can: the viewer's video and the server's CPU
    over a quiet window and a flooded one."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "sfu", "--host", HOST, "--port", str(port), "--ice-host", HOST]
    server_proc = subprocess.Popen([*cmd, "--log-level", "WARNING"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    url = f"ws://{HOST}:{port}/ws"
    publisher = Participant(url, "flood", "publisher")
    viewer = Participant(url, "flood", "viewer")
    flooder: subprocess.Popen[str] | None = None
    try:
        await wait_ready(port, server_proc)
        server = psutil.Process(server_proc.pid)
        for p in (publisher, viewer):
            await p.join()
        await publisher.publish(audio=False)
        flooder = subprocess.Popen(
            [sys.executable, "-c", FLOODER, url, str(seconds)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert flooder.stdout is not None and flooder.stdin is not None
        ready = await asyncio.to_thread(flooder.stdout.readline)
        assert ready.strip() == "ready", ready
        await asyncio.sleep(3)

        async def window(window_s: float) -> dict[str, float]:
            start_count = last = viewer.received_from(publisher.id, "video")
            start = since = time.monotonic()
            cpu = cpu_s(server)
            longest_gap_s = 0.0
            while time.monotonic() - start < window_s:
                await asyncio.sleep(0.02)
                count, now = viewer.received_from(publisher.id, "video"), time.monotonic()
                if count > last:
                    last, since = count, now
                longest_gap_s = max(longest_gap_s, now - since)
            return {
                "video_packets_per_s": round((viewer.received_from(publisher.id, "video") - start_count) / window_s, 1),
                "longest_video_gap_s": round(longest_gap_s, 3),
                "server_cpu_percent": round((cpu_s(server) - cpu) / window_s * 100, 1),
            }

        quiet = await window(seconds)
        flooder.stdin.write("go\n")
        flooder.stdin.flush()
        flooded = await window(seconds)
        sent_line = await asyncio.to_thread(flooder.stdout.readline)
        if not sent_line.startswith("sent "):
            raise RuntimeError(f"the flooder failed: {sent_line!r}")
        await asyncio.sleep(1)
        data = await metrics(port)
        return {
            "seconds": seconds,
            "flooder_sent": int(sent_line.split()[1]),
            "server_received": data.get("sfu_data_messages_received_total", 0),
            "server_relayed": data.get("sfu_data_messages_relayed_total", 0),
            "server_refused_rate_limited": data.get('sfu_data_dropped_total{reason="rate-limited"}', 0),
            "quiet": quiet,
            "flooded": flooded,
        }
    finally:
        for p in (publisher, viewer):
            await p.close()
        if flooder is not None:
            flooder.kill()
            flooder.wait(10)
        server_proc.terminate()
        server_proc.wait(10)


class _FakeReceiver:
    def send(self, reliable: bool, frame: bytes) -> str | None:
        return None


def relay_us_per_message(receivers: int, size: int, n: int = 20000) -> float:
    """The relay's own work per message (no SCTP): CPU µs, with fake receivers."""
    relay = DataRelay(65536, 1e12, 1 << 40)
    frame = encode(DataFrame(b"x" * size, topic="bench"))
    targets = {f"p{i}": _FakeReceiver() for i in range(receivers)}
    start = time.process_time()
    for i in range(n):
        relay.relay("sender", True, frame, targets, lambda e: None, i * 1e-6)
    return round((time.process_time() - start) / n * 1e6, 2)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--receivers", default="1,4")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--bytes", type=int, default=200)
    parser.add_argument("--flood-seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "data_relay.json")
    args = parser.parse_args()
    runs = []
    for n in (int(x) for x in args.receivers.split(",")):
        result = await run(n, args.messages, args.rate, args.bytes)
        result["relay_decisions_us_per_message"] = relay_us_per_message(n, args.bytes)
        print(json.dumps(result), flush=True)
        runs.append(result)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    out = {
        "commit": commit.stdout.strip(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load_1m": os.getloadavg()[0],
        "runs": runs,
    }
    if args.flood_seconds > 0:
        out["flood"] = await flood_probe(args.flood_seconds)
        print(json.dumps(out["flood"]), flush=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())

"""Recording benchmark: the server CPU one recorded publisher (VP8 640x360 30 fps + Opus) costs.

One server subprocess (its CPU read with psutil, every thread: the event loop and the writer
threads), P publishers (sfu.client RTP publishers: pre-encoded clips, no encoder) and one
subscriber that receives them all (so the forwarding path runs as in a call). Rounds alternate
recording off and on in the same call (the admin API starts and stops the room's recording),
so that a machine whose load drifts affects both alike; each round waits ``--warmup`` seconds,
then measures ``--window`` seconds:

- server CPU (% of one core), off and on; their difference per recorded publisher (one file,
  one audio and one video stream) and per recorded stream;
- µs of CPU per recorded packet (the difference over the packets the recorders received:
  what the publishers sent in the window), next to µs per forwarded packet (the CPU of the
  rounds without recording over the packets the subscriber received);
- frames written and dropped, from the sidecar.

Medians over the rounds, and every round, go to ``--out`` (JSON).

    .venv/bin/python bench/recording_bench.py --publishers 4 --rounds 3 --out bench/results/recording.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sfu import auth  # noqa: E402
from sfu.client import Participant  # noqa: E402

SECRET = "bench-recording-" + "b" * 40
HOST = "127.0.0.1"
ROOM = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def commit() -> str:
    out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip()


async def wait_ready(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"http://{HOST}:{port}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            await asyncio.sleep(0.2)


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="sfu-recording-bench-"))
    env = dict(
        os.environ,
        SFU_AUTH_SECRET=SECRET,
        SFU_ALLOW_OPEN_ROOMS="true",
        SFU_RECORDING_DIR=str(directory),
        SFU_LOG_LEVEL="WARNING",
    )
    cmd = [sys.executable, "-m", "sfu", "--host", HOST, "--port", str(port), "--ice-host", HOST]
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    proc = psutil.Process(server.pid)
    headers = {"Authorization": "Bearer " + auth.mint(SECRET, "bench", ROOM, {"admin"}, 3600)}
    url = f"http://{HOST}:{port}"
    participants: list[Participant] = []
    rounds: list[dict[str, Any]] = []
    try:
        await wait_ready(port)
        viewer = Participant(f"{url}/ws", ROOM, "viewer")
        await viewer.join()
        participants.append(viewer)
        publishers = []
        for i in range(args.publishers):
            p = Participant(f"{url}/ws", ROOM, f"pub{i}")
            await p.join()
            await p.publish_rtp(trailer=False)
            publishers.append(p)
            participants.append(p)
        deadline = time.monotonic() + 30
        while not all(viewer.received_from(p.id or "", "video") > 100 for p in publishers):
            if time.monotonic() > deadline:
                raise RuntimeError("media did not flow")
            await asyncio.sleep(0.2)

        def sent() -> int:
            return sum(s.packets_sent for p in publishers for s in p.rtp_streams)

        def received() -> int:
            return sum(s.packets for s in viewer.streams.values())

        async with aiohttp.ClientSession() as http:
            for index in range(2 * args.rounds):
                recording = index % 2 == 1
                method = http.post if recording else http.delete
                async with method(f"{url}/admin/rooms/{ROOM}/recording", headers=headers) as r:
                    if r.status != 200:
                        raise RuntimeError(await r.text())
                await asyncio.sleep(args.warmup)
                c0, s0, r0, t0 = cpu_s(proc), sent(), received(), time.monotonic()
                await asyncio.sleep(args.window)
                c1, s1, r1, t1 = cpu_s(proc), sent(), received(), time.monotonic()
                row = {
                    "recording": recording,
                    "cpu_percent": 100 * (c1 - c0) / (t1 - t0),
                    "cpu_s": c1 - c0,
                    "packets_sent": s1 - s0,
                    "packets_forwarded": r1 - r0,
                    "seconds": t1 - t0,
                }
                rounds.append(row)
                print(json.dumps(row), flush=True)
            async with http.delete(f"{url}/admin/rooms/{ROOM}/recording", headers=headers) as r:
                state = await r.json()
    finally:
        for p in participants:
            await p.close()
        server.terminate()
        server.wait(10)
    pairs = [(rounds[i], rounds[i + 1]) for i in range(0, len(rounds), 2)]
    per_publisher = [(on["cpu_percent"] - off["cpu_percent"]) / args.publishers for off, on in pairs]
    us_recorded = [
        1e6 * (on["cpu_s"] / on["seconds"] - off["cpu_s"] / off["seconds"]) * on["seconds"] / on["packets_sent"]
        for off, on in pairs
    ]
    us_forwarded = [1e6 * off["cpu_s"] / off["packets_forwarded"] for off, _ in pairs]
    files = state["files"]
    return {
        "command": " ".join(sys.argv),
        "commit": commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_1m": os.getloadavg()[0]},
        "publishers": args.publishers,
        "window_s": args.window,
        "rounds": rounds,
        "median": {
            "cpu_percent_off": statistics.median(r["cpu_percent"] for r in rounds if not r["recording"]),
            "cpu_percent_on": statistics.median(r["cpu_percent"] for r in rounds if r["recording"]),
            "cpu_percent_per_recorded_publisher": statistics.median(per_publisher),
            "cpu_percent_per_recorded_stream": statistics.median(per_publisher) / 2,
            "us_per_recorded_packet": statistics.median(us_recorded),
            "us_per_forwarded_packet_whole_server": statistics.median(us_forwarded),
        },
        "files": len(files),
        "frames_written": sum(s["frames"] for f in files for s in f["streams"]),
        "frames_dropped": sum(f["frames_dropped"] for f in files),
        "recording_dir": str(directory),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of rounds (recording off, then on)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result["median"], indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

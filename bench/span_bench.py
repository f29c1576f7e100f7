"""Broadcast over a room that spans two workers, against the same room on one worker.

    python bench/span_bench.py [--viewers 8] [--seconds 20]

One node (``python -m sfu --workers 2``) as a subprocess; one publisher (Python client: VP8
640x360 with send-time trailers, and audio) and N viewers, all in this process. Two runs:

- ``one-worker``: every viewer joins through the front (the room's worker takes them all);
- ``two-workers``: half of them through the front, half straight to the other worker with the
  spanning headers (a shard of the room: the producers cross the media link once).

Over a steady window it reports, per run: each group's latency (publisher send -> viewer
receive, per video frame) p50/p99, and for two workers the difference between the shard's
viewers and the home's (what the link adds); each worker's CPU (psutil, % of one core), the
packets it forwarded per second (its /metrics) and so its CPU per forwarded packet; what
crossed the link per second against what the publisher sent (once per packet per worker).
Results: bench/results/span.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from sfu.client import TRAILER, TRAILER_MAGIC, Participant  # noqa: E402
from sfu.cluster.coordinator import Placement  # noqa: E402
from sfu.cluster.internal import SECRET_HEADER  # noqa: E402
from sfu.cluster.span_wire import LINKS_PATH, spanning_headers  # noqa: E402
from sfu.media.rtp import MalformedPacket, parse_rtp  # noqa: E402

SECRET = "bench-secret-" + "s" * 40
CLUSTER_SECRET = "bench-cluster-" + "c" * 40


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Viewer(Participant):
    """A viewer that notes when each video frame (by its send-time trailer) arrived."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.frames: dict[int, float] = {}  # sent (us) -> arrival (us), both wall clock

    async def _on_rtp(self, data: bytes, arrival_ms: int) -> None:
        await super()._on_rtp(data, arrival_ms)
        try:
            view = parse_rtp(data)
        except MalformedPacket:
            return
        end = view.payload_end
        if view.marker and end - view.payload_start >= TRAILER.size:
            magic, sent_us = TRAILER.unpack_from(data, end - TRAILER.size)
            if magic == TRAILER_MAGIC:
                self.frames.setdefault(sent_us, time.time() * 1_000_000)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 2)


class Node:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "SFU_AUTH_SECRET": SECRET,
            "SFU_ALLOW_OPEN_ROOMS": "true",
            "SFU_CLUSTER_SECRET": CLUSTER_SECRET,
            "SFU_ICE_HOST_ADDRESSES": "127.0.0.1",
            "SFU_ROOM_CAPACITY": "256",
            "SFU_LOG_LEVEL": "WARNING",
            "SFU_METRICS_PUBLIC": "true",
        }
        self.log = open(f"/tmp/sfu-span-bench-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sfu", "--port", str(self.port), "--workers", "2"],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(self.url + "/healthz") as r:
                        if (await r.json()).get("status") == "ok":
                            return
                except (aiohttp.ClientError, OSError, ValueError):
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError("node not ready")

    async def workers(self) -> list[dict[str, Any]]:
        from sfu import auth

        token = auth.mint(SECRET, "bench", "*", {"admin"}, 600)
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.url + "/admin/nodes", headers={"Authorization": f"Bearer {token}"}) as r,
        ):
            return list((await r.json())["workers"])

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log.close()


async def worker_counters(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession(headers={SECRET_HEADER: CLUSTER_SECRET}) as http:
        async with http.get(url + "/metrics") as r:
            text = await r.text()
        async with http.get(url + LINKS_PATH) as r:
            links = await r.json()
    out = {"forwarded": 0.0, "link_sent": 0.0}
    for line in text.splitlines():
        if line.startswith("sfu_packets_forwarded_total"):
            out["forwarded"] = float(line.rsplit(" ", 1)[1])
    out["link_sent"] = float(sum(link["packets_sent"] for link in links["links"]))
    out["link_rtt_ms"] = max((link["rtt_ms"] or 0.0 for link in links["links"]), default=0.0)
    return out


async def run(mode: str, viewers: int, seconds: float) -> dict[str, Any]:
    node = Node()
    clients: list[Participant] = []
    try:
        await node.ready()
        pub = Participant(node.url + "/ws", "cast", "pub")
        clients.append(pub)
        await pub.join()
        await pub.publish_rtp(audio=True, video=True)
        workers: list[dict[str, Any]] = []
        for _ in range(100):
            workers = await node.workers()
            if any(w["load"] and any(r["room"] == "cast" for r in w["load"]["rooms"]) for w in workers):
                break
            await asyncio.sleep(0.2)
        home = next(w for w in workers if any(r["room"] == "cast" for r in w["load"]["rooms"]))
        other = next(w for w in workers if w is not home)
        placement = Placement("cast", home["worker"], home["worker"].rsplit("/", 1)[0], home["url"])
        groups: dict[str, list[Viewer]] = {"home": [], "shard": []}
        for i in range(viewers):
            if mode == "two-workers" and i % 2:
                headers = {SECRET_HEADER: CLUSTER_SECRET, **spanning_headers("cast", placement)}
                v = Viewer(other["url"] + "/ws", "cast", f"v{i}", headers=headers)
                groups["shard"].append(v)
            else:
                v = Viewer(node.url + "/ws", "cast", f"v{i}")
                groups["home"].append(v)
            clients.append(v)
            await v.join()
        deadline = time.monotonic() + 60
        while not all(v.received_from(pub.id, "video") > 30 for g in groups.values() for v in g):
            if time.monotonic() > deadline:
                raise RuntimeError("viewers got no video")
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # warm-up
        procs = {w["worker"]: psutil.Process(w["pid"]) for w in workers}
        cpu0 = {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}
        me0 = psutil.Process().cpu_times()
        bench0 = me0.user + me0.system
        counters0 = {w["worker"]: await worker_counters(w["url"]) for w in workers}
        lat0 = {
            id(v): len(next(s for s in v.streams.values() if s.kind == "video").latencies_ms)
            for g in groups.values()
            for v in g
        }
        sent0 = sum(s.packets_sent for s in pub.rtp_streams)
        t0, wall0_us = time.monotonic(), time.time() * 1_000_000
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        cpu1 = {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}
        counters1 = {w["worker"]: await worker_counters(w["url"]) for w in workers}
        published_pps = (sum(s.packets_sent for s in pub.rtp_streams) - sent0) / elapsed
        result: dict[str, Any] = {"mode": mode, "viewers": viewers, "window_s": round(elapsed, 1)}
        result["published_packets_per_s"] = round(published_pps, 1)
        for name, group in groups.items():
            if not group:
                continue
            lat: list[float] = []
            for v in group:
                stream = next(s for s in v.streams.values() if s.kind == "video")
                lat += stream.latencies_ms[lat0[id(v)] :]
            result[f"{name}_viewers"] = len(group)
            result[f"{name}_latency_ms"] = {
                "p50": percentile(lat, 0.5),
                "p99": percentile(lat, 0.99),
                "frames": len(lat),
            }
        if groups["shard"]:
            # Frame by frame: the first arrival among the shard's viewers minus the first among
            # the home's (the viewers share this process's event loop: its delays cancel out).
            added = []
            for sent_us in groups["home"][0].frames:
                if sent_us < wall0_us:
                    continue
                home_us = [v.frames[sent_us] for v in groups["home"] if sent_us in v.frames]
                shard_us = [v.frames[sent_us] for v in groups["shard"] if sent_us in v.frames]
                if home_us and shard_us:
                    added.append((min(shard_us) - min(home_us)) / 1000)
            result["link_added_latency_ms"] = {
                "p50": percentile(added, 0.5),
                "p99": percentile(added, 0.99),
                "frames": len(added),
            }
        per_worker = {}
        for w in workers:
            wid = w["worker"]
            cpu_pct = (cpu1[wid] - cpu0[wid]) / elapsed * 100
            fwd = (counters1[wid]["forwarded"] - counters0[wid]["forwarded"]) / elapsed
            link = (counters1[wid]["link_sent"] - counters0[wid]["link_sent"]) / elapsed
            per_worker[wid] = {
                "role": "home" if wid == home["worker"] else "other",
                "cpu_percent": round(cpu_pct, 1),
                "forwarded_packets_per_s": round(fwd, 1),
                "cpu_us_per_forwarded_packet": round(cpu_pct / 100 * 1e6 / fwd, 1) if fwd > 0 else None,
                "link_packets_sent_per_s": round(link, 1),
                "link_rtt_ms": counters1[wid]["link_rtt_ms"],
            }
        result["workers"] = per_worker
        me = psutil.Process().cpu_times()
        result["bench_process_cpu_percent"] = round((me.user + me.system - bench0) / elapsed * 100, 1)
        return result
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        node.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", default=str(BENCH / "results" / "span.json"))
    args = parser.parse_args()
    results = []
    for mode in ("one-worker", "two-workers"):
        result = await run(mode, args.viewers, args.seconds)
        print(json.dumps(result, indent=1))
        results.append(result)
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    out = {
        "revision": revision.stdout.strip(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "runs": results,
    }
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())

"""Placement latency: ``RedisCoordinator.place_room`` against a real redis-server.

A redis-server (Debian's package, persistence off, free loopback port) is started for the run;
a registry of nodes and workers (``--registries``, 8x4 and 32x16) is written by heartbeat; then,
for 1 and for 20 concurrent callers (each caller its own ``RedisCoordinator``, so its own
connection, as each node of a cluster has), ``--calls`` calls of ``place_room`` in total:

- ``new``: every call places a room never seen (the script scans the live workers, chooses,
  records the placement and counts it against the worker);
- ``existing``: every call asks for a room already placed (a join to a running room).

Each call's latency is measured around the ``await`` on this process's loop (so with 20
callers it includes the wait for the client loop, not only Redis), and Redis's own time per
script is read from ``INFO commandstats`` (``evalsha``). The in-memory coordinator is measured
the same way, for scale. Each scenario runs ``--repeat`` times on a fresh registry; each
figure reported is the median over the repeats (every repeat is kept in the JSON). Results:
bench/results/placement.json.

Usage: .venv/bin/python bench/placement_bench.py [--calls 4000] [--registries 8x4,32x16]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from sfu.cluster.coordinator import Coordinator, NodeInfo, WorkerLoad  # noqa: E402
from sfu.cluster.memory import MemoryCoordinator, MemoryState  # noqa: E402
from sfu.cluster.redis_coordinator import RedisCoordinator  # noqa: E402
from tests.redis_fixture import RedisServer  # noqa: E402

TTL_S = 600.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def registry(nodes: int, workers: int) -> list[NodeInfo]:
    return [
        NodeInfo(
            node_id=f"n{n}",
            public_url=f"https://n{n}.example",
            workers=tuple(
                WorkerLoad(worker_id=f"n{n}/{w}", node_id=f"n{n}", url=f"http://n{n}:{9100 + w}", tracks=w)
                for w in range(workers)
            ),
        )
        for n in range(nodes)
    ]


def percentiles_us(latencies_s: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_s)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_us": round(cuts[49] * 1e6, 1),
        "p90_us": round(cuts[89] * 1e6, 1),
        "p99_us": round(cuts[98] * 1e6, 1),
        "max_us": round(ordered[-1] * 1e6, 1),
        "mean_us": round(statistics.fmean(ordered) * 1e6, 1),
    }


async def run_callers(callers: list[Coordinator], rooms: list[str]) -> tuple[list[float], float]:
    """Spread the rooms over the callers; each caller places its share one after the other."""
    latencies: list[float] = []

    async def caller(coordinator: Coordinator, share: list[str]) -> None:
        for room in share:
            started = time.perf_counter()
            await coordinator.place_room(room, prefer_node="n0")
            latencies.append(time.perf_counter() - started)

    shares = [rooms[i :: len(callers)] for i in range(len(callers))]
    started = time.perf_counter()
    await asyncio.gather(*(caller(c, s) for c, s in zip(callers, shares, strict=True)))
    return latencies, time.perf_counter() - started


def evalsha_usec_per_call(client: redis.Redis) -> float:
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return float(stats.get("usec_per_call", 0.0))


async def scenario(
    kind: str, url: str | None, concurrency: int, calls: int, nodes: list[NodeInfo], admin: redis.Redis | None
) -> dict[str, Any]:
    state = MemoryState()
    callers: list[Coordinator] = [
        RedisCoordinator(url) if kind == "redis" and url else MemoryCoordinator(state=state) for _ in range(concurrency)
    ]
    try:
        if admin is not None:
            admin.flushall()
        for node in nodes:
            await callers[0].heartbeat(node, TTL_S)
        # warm up: connections open, scripts loaded
        await run_callers(callers, [f"warm-{i}" for i in range(concurrency * 5)])
        results: dict[str, Any] = {"coordinator": kind, "callers": concurrency, "calls": calls}
        for what in ("new", "existing"):
            rooms = [f"room-{i}" for i in range(calls)]
            if admin is not None:
                admin.config_resetstat()
            latencies, elapsed_s = await run_callers(callers, rooms)
            entry = {**percentiles_us(latencies), "calls_per_s": round(calls / elapsed_s)}
            if admin is not None:
                entry["redis_evalsha_us_per_call"] = evalsha_usec_per_call(admin)
            results[what] = entry
        return results
    finally:
        for c in callers:
            await c.close()


def commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument(
        "--registries", default="8x4,32x16", help="registry sizes, NODESxWORKERS each (the script scans the workers)"
    )
    parser.add_argument("--concurrency", default="1,20")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each scenario; the medians are reported too")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "placement.json")
    args = parser.parse_args()
    sizes = [tuple(int(x) for x in size.split("x")) for size in args.registries.split(",")]
    levels = [int(x) for x in args.concurrency.split(",")]
    server = RedisServer(free_port(), Path(tempfile.mkdtemp(prefix="placement-bench-")))
    server.start()
    admin = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        runs = []
        for node_count, worker_count in sizes:
            nodes = registry(node_count, worker_count)
            size = {"nodes": node_count, "workers_per_node": worker_count}
            plans = [("redis", server.url, c, admin) for c in levels] + [("memory", None, 1, None)]
            for kind, url, concurrency, client in plans:
                repeats = [
                    await scenario(kind, url, concurrency, args.calls, nodes, client) for _ in range(args.repeat)
                ]
                runs.append(size | {"coordinator": kind, "callers": concurrency, "calls": args.calls})
                for what in ("new", "existing"):
                    runs[-1][what] = {
                        stat: round(statistics.median(r[what][stat] for r in repeats), 1) for stat in repeats[0][what]
                    }
                runs[-1]["repeats"] = [{k: r[k] for k in ("new", "existing")} for r in repeats]
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "repeats"}), flush=True)
        version = admin.info("server")["redis_version"]
    finally:
        admin.close()
        server.stop()
    report = {
        "benchmark": "place_room latency",
        "commit": commit(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "redis_server": version,
        },
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())

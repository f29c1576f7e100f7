"""Soak: churn real participants through a server process for a long time and watch its resources.

    python bench/soak.py                     # one hour (the default)
    python bench/soak.py --duration 900      # 15 minutes

Starts ``python -m sfu`` on 127.0.0.1 (a free port, an auth secret so that the admin API can
be read; participants get tokens) and, in this process, aiortc participants from
``sfu.client`` that join rooms, publish the pre-encoded clips (audio + video) or only watch,
stay for a random while and leave: politely (``leave``), by closing their socket, or by
dropping it (the TCP connection is aborted, no WebSocket close). Every ``--sample-interval``
seconds it records the server's RSS, open file descriptors and threads (psutil), and from
``/metrics`` its participants, rooms, peer connections, producers, consumers and event-loop
tasks; every ``--debug-interval`` seconds the live objects of the server's own classes and
aiortc's (``GET /admin/debug/memory``). After ``--duration`` everyone leaves and the script
checks that the server is back to its idle baseline: no participant, room or peer connection,
as many tasks and file descriptors as before the churn, none of the tracked objects alive.
It reports the RSS growth after the warm-up (``--warmup``, 10 minutes; target < 5 %).

Results: ``--out`` (JSON: every sample, the checks, the command, the revision; rewritten every
minute during the run) and ``--plot`` (PNG). Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from sfu import auth  # noqa: E402
from sfu.client import Participant, load_clip  # noqa: E402
from sfu.rtc import aiortc_glue as glue  # noqa: E402

GAUGES = {
    "sfu_participants": "participants",
    "sfu_rooms": "rooms",
    "sfu_peer_connections": "peer_connections",
    "sfu_consumers": "consumers",
    "sfu_asyncio_tasks": "tasks",
}
LEAVE_KINDS = ("leave", "close", "drop")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, token: str, timeout_s: float = 10) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=timeout_s) as r:
        body: bytes = r.read()
        return body


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if "{" in name:  # sum labelled series (producers by kind)
            name = name.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(value)
        else:
            out[name.removesuffix("_total")] = float(value)
    return out


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.secret = secrets.token_urlsafe(32)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.admin = auth.mint(self.secret, "soak-admin", auth.ANY_ROOM, ["admin"], 10 * 24 * 3600)
        self.server: subprocess.Popen[bytes] | None = None
        self.proc: psutil.Process | None = None
        self.t0 = 0.0
        self.samples: list[dict[str, Any]] = []
        self.debug_samples: list[dict[str, Any]] = []
        self.clients: set[asyncio.Task[None]] = set()
        self.per_room: dict[str, int] = {}
        self.counts = {"sessions": 0, "publishers": 0, "join_failures": 0, "publish_failures": 0, "errors": 0}
        self.counts.update({f"left_{kind}": 0 for kind in LEAVE_KINDS})
        self.error_examples: list[str] = []
        self.stopping = False
        # The code under test: the revision when the run starts.
        self.revision = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()

    # -- the server -------------------------------------------------------------------------

    def start_server(self) -> None:
        cmd = [sys.executable, "-m", "sfu", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--ice-host", "127.0.0.1", "--room-capacity", str(max(16, self.args.room_size))]
        cmd += ["--log-level", "WARNING"]
        env = dict(os.environ, SFU_AUTH_SECRET=self.secret)
        if self.args.tracemalloc:
            env["SFU_TRACEMALLOC"] = str(self.args.tracemalloc)
        self.args.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.args.log_dir / "soak-server.log").open("wb")
        self.server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.proc = psutil.Process(self.server.pid)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2):
                    return
            except OSError:
                if self.server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the server did not start; see {self.args.log_dir / 'soak-server.log'}"
                    ) from None
                time.sleep(0.2)

    def stop_server(self) -> int | None:
        if self.server is None:
            return None
        if self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(10)
        return self.server.returncode

    # -- measuring ----------------------------------------------------------------------------

    def sample(self) -> dict[str, Any]:
        assert self.proc is not None
        s: dict[str, Any] = {"t_s": round(time.monotonic() - self.t0, 1)}
        with self.proc.oneshot():
            s["rss_bytes"] = self.proc.memory_info().rss
            s["fds"] = self.proc.num_fds()
            s["threads"] = self.proc.num_threads()
            times = self.proc.cpu_times()
            s["cpu_s"] = round(times.user + times.system, 2)
        metrics = parse_metrics(http_get(self.base + "/metrics", self.admin).decode())
        for name, key in GAUGES.items():
            s[key] = int(metrics.get(name, -1))
        s["producers"] = int(metrics.get("sfu_producers", 0))
        s["joins"] = int(metrics.get("sfu_joins", 0))
        s["clients"] = len(self.clients)
        return s

    def debug_sample(self, trim: bool = False) -> dict[str, Any]:
        url = self.base + "/admin/debug/memory?top=10" + ("&trim=1" if trim else "")
        d: dict[str, Any] = json.loads(http_get(url, self.admin, timeout_s=60))
        d["t_s"] = round(time.monotonic() - self.t0, 1)
        return d

    async def sampler(self) -> None:
        next_debug = 0.0
        while not self.stopping:
            try:
                s = await asyncio.to_thread(self.sample)
                self.samples.append(s)
                if s["t_s"] >= next_debug:
                    next_debug = s["t_s"] + self.args.debug_interval
                    self.debug_samples.append(await asyncio.to_thread(self.debug_sample))
                    self.write(partial=True)
            except Exception as exc:  # a slow scrape must not end the soak
                self.note_error(f"sample: {exc!r}")
            await asyncio.sleep(self.args.sample_interval)

    def note_error(self, text: str) -> None:
        self.counts["errors"] += 1
        if len(self.error_examples) < 20:
            self.error_examples.append(text)

    # -- participants -------------------------------------------------------------------------

    def room_names(self) -> list[str]:
        return [f"soak-{i}" for i in range(self.args.rooms)]

    async def participant(self, room: str, publish: bool, lifetime_s: float, leave_kind: str) -> None:
        n = self.counts["sessions"] = self.counts["sessions"] + 1
        grants = ["publish", "subscribe"] if publish else ["subscribe"]
        token = auth.mint(self.secret, f"soak-{n}", room, grants, 3600 + lifetime_s)
        p = Participant(self.base + "/ws", room, f"soak-{n}", token=token)
        try:
            try:
                await asyncio.wait_for(p.join(), 30)
            except Exception as exc:
                self.counts["join_failures"] += 1
                self.note_error(f"join: {exc!r}")
                return
            if publish:
                self.counts["publishers"] += 1
                try:
                    await asyncio.wait_for(p.publish(), 30)
                except Exception as exc:
                    self.counts["publish_failures"] += 1
                    self.note_error(f"publish: {exc!r}")
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(lifetime_s)
        finally:
            self.counts[f"left_{leave_kind}"] += 1
            try:
                await asyncio.wait_for(self.leave(p, leave_kind), 30)
            except Exception as exc:
                self.note_error(f"leave: {exc!r}")
            self.per_room[room] -= 1

    @staticmethod
    async def leave(p: Participant, kind: str) -> None:
        if kind == "drop":  # the TCP connection goes away without a WebSocket close
            ws = p._ws
            conn = getattr(ws, "_conn", None) if ws is not None else None
            transport = getattr(conn, "transport", None)
            if transport is not None:
                transport.abort()
        await p.close(leave=kind == "leave")

    async def churn(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        rooms = self.room_names()
        self.per_room = dict.fromkeys(rooms, 0)
        while loop.time() < until:
            open_rooms = [r for r in rooms if self.per_room[r] < self.args.room_size]
            if open_rooms:
                room = self.rng.choice(open_rooms)
                self.per_room[room] += 1
                publish = self.rng.random() < self.args.publishers
                lifetime_s = self.rng.uniform(self.args.min_stay, self.args.max_stay)
                lifetime_s = min(lifetime_s, max(1.0, until - loop.time()))
                kind = self.rng.choices(LEAVE_KINDS, weights=self.args.leave_weights)[0]
                task = loop.create_task(self.participant(room, publish, lifetime_s, kind))
                self.clients.add(task)
                task.add_done_callback(self.clients.discard)
            await asyncio.sleep(self.rng.expovariate(self.args.rate))

    # -- the run ------------------------------------------------------------------------------

    async def wait_idle(self, baseline: dict[str, Any]) -> dict[str, Any]:
        """Sample until the server is back to the baseline or ``--settle`` seconds passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.args.settle
        while True:
            s = await asyncio.to_thread(self.sample)
            self.samples.append(s)
            idle = s["participants"] == 0 and s["rooms"] == 0 and s["peer_connections"] == 0
            if idle and s["tasks"] <= baseline["tasks"] and s["fds"] <= baseline["fds"]:
                return s
            if loop.time() > deadline:
                return s
            await asyncio.sleep(1)

    async def run(self) -> dict[str, Any]:
        load_clip("audio")
        load_clip("video")
        glue.set_host_addresses(["127.0.0.1"])
        self.start_server()
        self.t0 = time.monotonic()
        await asyncio.sleep(2)
        baseline = await asyncio.to_thread(self.sample)
        self.samples.append(baseline)
        debug_baseline = await asyncio.to_thread(self.debug_sample)
        self.debug_samples.append(debug_baseline)
        sampler = asyncio.get_running_loop().create_task(self.sampler())
        churn_start = time.monotonic()
        await self.churn(asyncio.get_running_loop().time() + self.args.duration)
        churn_end = time.monotonic()
        # Everyone leaves: the participants still in their stay are cut short (their chosen
        # way of leaving still applies).
        for task in list(self.clients):
            task.cancel()
        if self.clients:
            await asyncio.wait(list(self.clients), timeout=120)
        self.stopping = True
        await asyncio.gather(sampler, return_exceptions=True)
        idle = await self.wait_idle(baseline)
        objects_after = await asyncio.to_thread(self.debug_sample, True)
        self.debug_samples.append(objects_after)
        return self.summarise(baseline, idle, objects_after, churn_start, churn_end)

    def summarise(
        self,
        baseline: dict[str, Any],
        idle: dict[str, Any],
        debug_after: dict[str, Any],
        churn_start: float,
        churn_end: float,
    ) -> dict[str, Any]:
        churn = [s for s in self.samples if s["t_s"] <= churn_end - self.t0]
        warm_t = churn_start - self.t0 + self.args.warmup
        after_warmup = [s for s in churn if s["t_s"] >= warm_t]
        rss_warm = after_warmup[0]["rss_bytes"] if after_warmup else None
        rss_end = churn[-1]["rss_bytes"]
        growth = None if rss_warm is None else round(100 * (rss_end - rss_warm) / rss_warm, 2)
        leftover = {k: v for k, v in debug_after["objects"].items() if v}
        checks = {
            "participants_zero": idle["participants"] == 0,
            "rooms_zero": idle["rooms"] == 0,
            "peer_connections_zero": idle["peer_connections"] == 0,
            "tasks_back_to_baseline": idle["tasks"] <= baseline["tasks"],
            "fds_back_to_baseline": idle["fds"] <= baseline["fds"],
            "no_tracked_objects_left": not leftover,
            "rss_growth_after_warmup_below_5_pct": growth is not None and growth < 5.0,
        }
        mb = 1 / 2**20
        return {
            "server_log": self.scan_log(),
            "rss_mb": {
                "baseline": round(baseline["rss_bytes"] * mb, 1),
                "after_warmup": None if rss_warm is None else round(rss_warm * mb, 1),
                "end_of_churn": round(rss_end * mb, 1),
                "peak": round(max(s["rss_bytes"] for s in churn) * mb, 1),
                "idle_after": round(idle["rss_bytes"] * mb, 1),
                "idle_after_malloc_trim": round(debug_after.get("rss_after_trim_bytes", 0) * mb, 1),
            },
            "rss_growth_after_warmup_pct": growth,
            "warmup_s": self.args.warmup,
            "baseline": {k: baseline[k] for k in ("fds", "tasks", "threads", "participants", "rooms")},
            "idle_after": {
                k: idle[k] for k in ("fds", "tasks", "threads", "participants", "rooms", "peer_connections")
            },
            "objects_left": debug_after["objects"],
            "max_participants": max(s["participants"] for s in churn),
            "checks": checks,
            "passed": all(checks.values()),
        }

    def scan_log(self) -> dict[str, Any]:
        """ERROR lines and tracebacks in the server's output, with the distinct exceptions."""
        path = self.args.log_dir / "soak-server.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        errors = [line for line in lines if " ERROR " in line or " CRITICAL " in line]
        # The last line of each traceback names the exception.
        exceptions: dict[str, int] = {}
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                j = i + 1
                while j < len(lines) and (lines[j].startswith(" ") or lines[j].startswith("Traceback")):
                    j += 1
                if j < len(lines):
                    exceptions[lines[j][:200]] = exceptions.get(lines[j][:200], 0) + 1
        return {"error_lines": len(errors), "tracebacks": sum(exceptions.values()), "exceptions": exceptions}

    def write(self, partial: bool = False, summary: dict[str, Any] | None = None) -> None:
        report = {
            "command": " ".join(["python", "bench/soak.py", *sys.argv[1:]]),
            "revision": self.revision,
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items()},
            "partial": partial,
            "counts": self.counts,
            "error_examples": self.error_examples,
            "summary": summary,
            "samples": self.samples,
            "debug_samples": self.debug_samples,
        }
        self.args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(self.args.out)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report["samples"]
    t = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    summary = report.get("summary") or {}
    growth = summary.get("rss_growth_after_warmup_pct")
    title = textwrap.fill(report["command"] + f" (at {report['revision']})", 110)
    if growth is not None:
        title += f"\nRSS growth after warm-up {growth:+.1f} %"
    fig.suptitle(title, fontsize=10)
    axes[0].plot(t, [s["rss_bytes"] / 2**20 for s in samples], label="RSS")
    traced = [
        (d["t_s"] / 60, d["tracemalloc"]["traced_bytes"] / 2**20) for d in report["debug_samples"] if "tracemalloc" in d
    ]
    if traced:
        axes[0].plot(*zip(*traced, strict=True), "o-", label="Python heap (tracemalloc)")
    axes[0].set_ylabel("MiB")
    warmup_min = report["options"]["warmup"] / 60
    axes[0].axvline(warmup_min, color="grey", linestyle=":", label="end of warm-up")
    axes[0].legend(loc="lower right")
    axes[1].plot(t, [s["fds"] for s in samples], label="open fds")
    axes[1].plot(t, [s["threads"] for s in samples], label="threads")
    axes[1].legend(loc="upper right")
    axes[2].plot(t, [s["tasks"] for s in samples], label="asyncio tasks")
    axes[2].legend(loc="upper right")
    for key in ("participants", "peer_connections", "consumers", "rooms"):
        axes[3].plot(t, [s[key] for s in samples], label=key.replace("_", " "))
    axes[3].legend(loc="upper right")
    axes[3].set_xlabel("minutes")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3600, help="seconds of churn (default 3600)")
    parser.add_argument("--rooms", type=int, default=4, help="rooms joined at random (default 4)")
    parser.add_argument("--room-size", type=int, default=5, help="at most this many participants per room (5)")
    parser.add_argument("--rate", type=float, default=0.4, help="joins per second, Poisson (default 0.4)")
    parser.add_argument("--min-stay", type=float, default=10, help="shortest stay in seconds (10)")
    parser.add_argument("--max-stay", type=float, default=50, help="longest stay in seconds (50)")
    parser.add_argument("--publishers", type=float, default=0.5, help="share who publish audio+video (0.5)")
    parser.add_argument(
        "--leave-weights",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.5, 0.2, 0.3],
        help="weights of leaving politely, closing the socket, dropping it (default 0.5,0.2,0.3)",
    )
    parser.add_argument("--warmup", type=float, default=600, help="RSS growth is measured from here (600 s)")
    parser.add_argument("--sample-interval", type=float, default=5, help="seconds between samples (5)")
    parser.add_argument("--debug-interval", type=float, default=60, help="seconds between object counts (60)")
    parser.add_argument("--settle", type=float, default=60, help="seconds to wait for the idle baseline (60)")
    parser.add_argument("--tracemalloc", type=int, default=0, help="trace the server's allocations, N frames")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "soak.json")
    parser.add_argument("--plot", type=Path, default=BENCH / "results" / "soak.png")
    parser.add_argument("--log-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "sfu-soak")
    parser.add_argument("--replot", action="store_true", help="only redraw --plot from --out")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(args.out.read_text()), args.plot)
        return 0
    if len(args.leave_weights) != 3:
        parser.error("--leave-weights takes three numbers")
    soak = Soak(args)
    summary: dict[str, Any] | None = None
    try:
        summary = asyncio.run(soak.run())
    finally:
        code = soak.stop_server()
        soak.write(partial=summary is None, summary=summary)
        if soak.samples:
            plot(json.loads(args.out.read_text()), args.plot)
    print(json.dumps({"counts": soak.counts, "server_exit": code, **(summary or {})}, indent=1))
    return 0 if summary and summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

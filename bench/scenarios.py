"""Capacity scenarios: ramp real participants (bench/locustfile.py) against a fresh server.

One command per scenario:

    python bench/scenarios.py big-room      # one room, everyone publishes (simulcast, grid layout)
    python bench/scenarios.py small-rooms   # rooms of four, everyone publishes
    python bench/scenarios.py broadcast     # one publisher, everyone else watches

Each step starts the server (``python -m sfu``) as a subprocess, runs locust headless with N
users, waits until all N have joined plus a warm-up, then measures over a steady window:

- the server's CPU (user+sys of its process, % of one core) and RSS, from psutil;
- the load generator's CPU, per locust process, to show which side was the bottleneck;
- forwarded packets per second, from the server's /metrics;
- loss (gaps in the forwarded sequence numbers) and latency percentiles (publisher send ->
  subscriber receive), from the locustfile's JSON.

The ramp stops at the first step where loss > 1 % or p99 latency > 100 ms (or where not all
users could join), or at the last step. Results: bench/results/<scenario>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from sfu.config import SDP_BYTES_PER_M_SECTION

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOCUSTFILE = BENCH / "locustfile.py"

SCENARIOS: dict[str, dict[str, Any]] = {
    "big-room": {
        "about": "one room, every participant publishes simulcast video + audio and sees everyone (grid)",
        "room_size": 0,
        "publishers": -1,
        "layout": "grid",
        "steps": [2, 4, 6, 8, 10, 12, 14, 16, 20, 24],
    },
    "small-rooms": {
        "about": "rooms of four, every participant publishes simulcast video + audio (grid)",
        "room_size": 4,
        "publishers": -1,
        "layout": "grid",
        "steps": [8, 16, 24, 32, 40, 48, 56, 64],
    },
    "broadcast": {
        "about": "one room, one publisher (simulcast video + audio), everyone else only watches (top layer)",
        "room_size": 0,
        "publishers": 1,
        "layout": "high",
        "steps": [2, 21, 61, 101, 151, 201],
    },
}

NOISY_OTHER_CPU_PCT = 25.0
LOSS_LIMIT_PCT = 1.0
P99_LIMIT_MS = 100.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_NODE_LABELS = re.compile(r'(node|worker)="[^"]*",?')


def scrape(url: str) -> dict[str, float]:
    """The server's unlabelled series; with workers (a front's /metrics, where each worker's
    series carries node and worker labels), the sum over the workers."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if "{" in name:
            base, _, labels = name.partition("{")
            if _NODE_LABELS.sub("", labels.rstrip("}")).strip(","):
                continue  # labelled by something else than the node and worker
            name = base
        key = name.removesuffix("_total")
        out[key] = out.get(key, 0.0) + float(value)
    return out


def scrape_workers(url: str) -> dict[str, dict[str, float]]:
    """Per worker (a front's /metrics): rooms, participants, tracks, CPU as the node saw them."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, dict[str, float]] = {}
    for match in re.finditer(
        r'^sfu_worker_(rooms|participants|tracks|cpu_percent)\{[^}]*worker="([^"]+)"[^}]*\} (\S+)$', text, re.M
    ):
        out.setdefault(match.group(2), {})[match.group(1)] = float(match.group(3))
    return out


def wait_healthy(url: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return out


def runqueue_wait_s(procs: list[psutil.Process]) -> float:
    """Seconds the processes' threads spent runnable but waiting for a CPU (/proc/*/schedstat)."""
    total_ns = 0
    for p in procs:
        try:
            for task in Path(f"/proc/{p.pid}/task").iterdir():
                total_ns += int((task / "schedstat").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return total_ns / 1e9


def percentile(hist: dict[float, int], q: float) -> float | None:
    total = sum(hist.values())
    if not total:
        return None
    rank = q / 100 * total
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return value
    return max(hist)


def summarize_records(records: list[dict[str, Any]], t0: float, t1: float) -> dict[str, Any]:
    """Loss, latency percentiles and receive rates over the records of [t0, t1]."""
    window = [r for r in records if t0 < r["t"] <= t1 + 0.5]
    hist: dict[float, int] = {}
    for r in window:
        for k, n in r["latency_hist"].items():
            hist[float(k)] = hist.get(float(k), 0) + n
    expected = sum(r["expected"] for r in window)
    lost = sum(r["lost"] for r in window)
    # Rates per user over the intervals it reported (workers' last reports may be cut off).
    per_user: dict[str, list[float]] = {}
    for r in window:
        acc = per_user.setdefault(str(r["user"]), [0.0, 0.0, 0.0])
        acc[0] += r["packets"]
        acc[1] += r["bytes"]
        acc[2] += r["dt"]
    lags = sorted(r.get("loop_lag_ms_max", 0.0) for r in window)
    return {
        "records": len(window),
        # Worst loop lag of the generator per user and interval: p99 of those, and the max.
        "generator_loop_lag_ms": {
            "p99": lags[int(0.99 * (len(lags) - 1))] if lags else None,
            "max": lags[-1] if lags else None,
        },
        "rx_packets_per_s": sum(p / dt for p, _b, dt in per_user.values() if dt),
        "rx_mbit_per_s": sum(b * 8 / dt for _p, b, dt in per_user.values() if dt) / 1e6,
        "expected": expected,
        "lost": lost,
        "loss_pct": 100.0 * lost / expected if expected else None,
        "latency_frames": sum(hist.values()),
        "latency_ms": {f"p{q}": percentile(hist, q) for q in (50, 90, 99)} | {"max": max(hist) if hist else None},
    }


def run_step(name: str, scenario: dict[str, Any], n: int, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tag = f"{name}-{n}"
    logs = args.logs
    logs.mkdir(parents=True, exist_ok=True)
    server_cmd = [
        sys.executable,
        "-m",
        "sfu",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ice-host",
        "127.0.0.1",
        "--room-capacity",
        str(max(16, n)),
        "--log-level",
        "WARNING",
    ]
    if args.workers is not None:
        server_cmd += ["--workers", str(args.workers)]
    # Every generated participant signals from 127.0.0.1: lift the per-address WebSocket
    # limit (max_connections_per_address, 64 by default) above the step's count. A subscribe
    # offer holds at most max_m_sections_per_sdp m-sections (32 by default: a room of 16), and
    # tracks beyond it are not offered: lift it so everyone receives everyone's audio and video,
    # and max_message_bytes with it, so that the answers to such offers fit in a frame.
    server_env = dict(
        os.environ,
        SFU_MAX_CONNECTIONS_PER_ADDRESS=str(max(64, 2 * n)),
        SFU_MAX_M_SECTIONS_PER_SDP=str(max(32, 2 * n + 2)),
        SFU_MAX_MESSAGE_BYTES=str(max(65536, SDP_BYTES_PER_M_SECTION * (2 * n + 2))),  # their answers
    )
    server_log = (logs / f"{tag}-server.log").open("w")
    server = subprocess.Popen(server_cmd, cwd=ROOT, env=server_env, stdout=server_log, stderr=subprocess.STDOUT)
    result: dict[str, Any] = {"participants": n}
    locust = None
    try:
        wait_healthy(url)
        json_path = logs / f"{tag}.json"
        spawn_s = n / args.spawn_rate
        budget_s = spawn_s + args.join_timeout + args.warmup + args.duration + 30
        locust_cmd = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--only-summary",
            "-u",
            str(n),
            "-r",
            str(args.spawn_rate),
            "-t",
            f"{int(budget_s)}s",
            "--stop-timeout",
            "10",
            "--host",
            url,
            "--csv",
            str(logs / tag),
            "--sfu-json",
            str(json_path),
            "--sfu-room-size",
            str(scenario["room_size"]),
            "--sfu-publishers",
            str(scenario["publishers"]),
            "--sfu-layout",
            scenario["layout"],
            "--loglevel",
            "WARNING",
        ]
        if args.simulcast:
            locust_cmd.append("--sfu-simulcast")
        if args.processes > 1:
            locust_cmd += ["--processes", str(args.processes)]
        locust_log = (logs / f"{tag}-locust.log").open("w")
        t_start = time.time()
        locust = subprocess.Popen(locust_cmd, cwd=ROOT, stdout=locust_log, stderr=subprocess.STDOUT)

        # Everyone in (and their media flowing), then a warm-up.
        deadline = time.time() + spawn_s + args.join_timeout
        metrics: dict[str, float] = {}
        while time.time() < deadline:
            metrics = scrape(url)
            if metrics.get("sfu_participants", 0) >= n:
                break
            if locust.poll() is not None:
                break
            time.sleep(0.5)
        result["joined"] = int(metrics.get("sfu_participants", 0))
        result["all_joined_after_s"] = round(time.time() - t_start, 1)
        time.sleep(args.warmup)

        # The steady window: CPU of both sides, /metrics, then the locust JSON for that window.
        server_procs = tree(server.pid)
        gen_procs = tree(locust.pid)
        m0, t0 = scrape(url), time.time()
        s0, g0 = cpu_seconds(server_procs), cpu_seconds(gen_procs)
        sw0, gw0 = runqueue_wait_s(server_procs), runqueue_wait_s(gen_procs)
        machine0 = psutil.cpu_times()
        samples = []
        while time.time() - t0 < args.duration:
            time.sleep(1.0)
            samples.append(
                {
                    "t": round(time.time() - t0, 1),
                    "server_rss_mb": sum(p.memory_info().rss for p in server_procs if p.is_running()) / 2**20,
                }
            )
        m1, t1 = scrape(url), time.time()
        s1, g1 = cpu_seconds(server_procs), cpu_seconds(gen_procs)
        if args.workers is not None:
            result["workers"] = scrape_workers(url)
            result["front_pid"] = str(server.pid)
        sw1, gw1 = runqueue_wait_s(server_procs), runqueue_wait_s(gen_procs)
        machine1 = psutil.cpu_times()
        span = t1 - t0
        busy = lambda c: c.user + c.system + c.nice + getattr(c, "irq", 0) + getattr(c, "softirq", 0)  # noqa: E731
        result.update(
            {
                "window_s": round(span, 1),
                "server_cpu_pct": {str(pid): 100 * (s1[pid] - s0[pid]) / span for pid in s1 if pid in s0},
                "generator_cpu_pct": {str(pid): 100 * (g1[pid] - g0[pid]) / span for pid in g1 if pid in g0},
                "machine_cpu_pct": 100 * (busy(machine1) - busy(machine0)) / span,  # of all cores together
                # Time runnable but not running (CPU contention), % of the window, all threads summed.
                "server_runqueue_wait_pct": 100 * (sw1 - sw0) / span,
                "generator_runqueue_wait_pct": 100 * (gw1 - gw0) / span,
                "server_rss_mb": max((s["server_rss_mb"] for s in samples), default=None),
                "forwarded_packets_per_s": (m1.get("sfu_packets_forwarded", 0) - m0.get("sfu_packets_forwarded", 0))
                / span,
                "received_packets_per_s": (m1.get("sfu_packets_received", 0) - m0.get("sfu_packets_received", 0))
                / span,
                "consumers": m1.get("sfu_consumers"),
                "consumers_expected": expected_consumers(scenario, n),
                "participants_in_window": m1.get("sfu_participants"),
            }
        )
        result["server_cpu_total_pct"] = sum(result["server_cpu_pct"].values())
        result["generator_cpu_total_pct"] = sum(result["generator_cpu_pct"].values())
        result["generator_cpu_max_process_pct"] = max(result["generator_cpu_pct"].values(), default=0)
        # Everything else running on the machine meanwhile (it is shared), in % of one core.
        result["other_cpu_pct"] = max(
            0.0, result["machine_cpu_pct"] - result["server_cpu_total_pct"] - result["generator_cpu_total_pct"]
        )

        if args.processes > 1:
            time.sleep(4)  # workers report to the master every 3 s
        locust.send_signal(signal.SIGTERM)  # stop: users leave, the JSON is written
        try:
            locust.wait(40)
        except subprocess.TimeoutExpired:
            locust.kill()
            locust.wait()
        data = json.loads(json_path.read_text()) if json_path.exists() else {"users": [], "records": []}
        result.update(summarize_records(data["records"], t0, t1))
        users = data["users"]
        joins = sorted(u["join_ms"] for u in users if "join_ms" in u)
        firsts = sorted(u["first_frame_ms"] for u in users if "first_frame_ms" in u)
        result["join_ms"] = {"p50": joins[len(joins) // 2] if joins else None, "max": joins[-1] if joins else None}
        result["first_frame_ms"] = {
            "p50": firsts[len(firsts) // 2] if firsts else None,
            "max": firsts[-1] if firsts else None,
        }
        result["user_errors"] = [u["error"] for u in users if "error" in u][:10]
    finally:
        if locust is not None and locust.poll() is None:
            locust.kill()
            locust.wait()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server_log.close()
    return result


def expected_consumers(scenario: dict[str, Any], n: int) -> int:
    """Forwarded tracks when everyone receives what the scenario says: each publisher's audio
    and video to every other participant of its room."""
    size = scenario["room_size"] or n
    rooms = [size] * (n // size) + ([n % size] if n % size else [])
    cap = scenario["publishers"]  # -1: everyone publishes
    return sum(2 * (s if cap < 0 else min(s, cap)) * (s - 1) for s in rooms)


def verdict(step: dict[str, Any], n: int) -> str | None:
    """Why this step is over capacity, or None."""
    if step.get("joined", 0) < n:
        return f"only {step.get('joined')} of {n} joined"
    consumers, expected = step.get("consumers"), step.get("consumers_expected")
    if consumers is not None and expected and consumers < expected:
        return f"only {consumers:.0f} of {expected} tracks forwarded"
    loss = step.get("loss_pct")
    p99 = step.get("latency_ms", {}).get("p99")
    if loss is None or p99 is None:
        return "no media measured"
    if loss > LOSS_LIMIT_PCT:
        return f"loss {loss:.2f} % > {LOSS_LIMIT_PCT} %"
    if p99 > P99_LIMIT_MS:
        return f"p99 latency {p99:.0f} ms > {P99_LIMIT_MS:.0f} ms"
    return None


def plot(name: str, report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Steps where not everyone joined measured something else than N participants: left out.
    steps = [s for s in report["steps"] if "server_cpu_total_pct" in s and s.get("joined", 0) >= s["participants"]]
    x = [s["participants"] for s in steps]
    fig, (ax1, ax2, ax4) = plt.subplots(1, 3, figsize=(16, 4.4))
    ax1.plot(x, [s["server_cpu_total_pct"] for s in steps], "o-", label="server (1 process)")
    ax1.plot(x, [s["generator_cpu_max_process_pct"] for s in steps], "s--", label="load generator (busiest process)")
    ax1.plot(x, [s.get("other_cpu_pct", 0) for s in steps], ":", color="grey", label="other programs on the machine")
    ax1.plot(
        x,
        [s.get("server_runqueue_wait_pct", 0) for s in steps],
        "^:",
        color="tab:blue",
        alpha=0.6,
        label="server waiting for a CPU (% of time)",
    )
    ax1.axhline(100, color="red", lw=0.8)
    ax1.set_xlabel("participants")
    ax1.set_ylabel("CPU, % of one core")
    ax1.set_title(f"{name}: CPU")
    ax1.set_ylim(bottom=0, top=max([105.0] + [s.get("other_cpu_pct", 0) * 1.05 for s in steps]))
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    for q, style in (("p50", "o-"), ("p90", "^-"), ("p99", "s-")):
        ax2.plot(x, [s["latency_ms"][q] for s in steps], style, label=f"latency {q}")
    ax2.axhline(P99_LIMIT_MS, color="red", lw=0.8)
    over = [s for s in steps if s.get("over_limit")]
    ax2.plot(
        [s["participants"] for s in over],
        [s["latency_ms"]["p99"] for s in over],
        "o",
        ms=14,
        mfc="none",
        mec="red",
        label="over the limits",
    )
    ax2.set_yscale("log")
    ax2.set_xlabel("participants")
    ax2.set_ylabel("send → receive, ms")
    ax2.set_title(f"{name}: latency and loss")
    ax2.grid(alpha=0.3, which="both")
    ax3 = ax2.twinx()
    ax3.plot(x, [s["loss_pct"] or 0 for s in steps], "x:", color="black", label="loss %")
    ax3.set_ylabel("loss %")
    ax3.set_ylim(bottom=0, top=max(2.0, max((s["loss_pct"] or 0 for s in steps), default=0) * 1.2))
    lines = ax2.get_legend_handles_labels()
    more = ax3.get_legend_handles_labels()
    ax2.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    ax4.plot(x, [s["forwarded_packets_per_s"] / 1000 for s in steps], "o-", label="forwarded by the server")
    ax4.plot(x, [s["rx_packets_per_s"] / 1000 for s in steps], "x--", label="received by the subscribers")
    ax4.set_xlabel("participants")
    ax4.set_ylabel("thousand RTP packets per second")
    ax4.set_ylim(bottom=0)
    ax4.grid(alpha=0.3)
    ax5 = ax4.twinx()
    ax5.plot(
        x,
        [s["generator_loop_lag_ms"]["p99"] or 0 for s in steps],
        "v:",
        color="tab:red",
        label="generator loop lag p99 (ms)",
    )
    ax5.set_ylabel("generator loop lag, ms")
    ax5.set_ylim(bottom=0)
    ax4.set_title(f"{name}: packets, generator health")
    a, b = ax4.get_legend_handles_labels(), ax5.get_legend_handles_labels()
    ax4.legend(a[0] + b[0], a[1] + b[1], fontsize=8, loc="upper left")
    left_out = [s for s in report["steps"] if s not in steps]
    if left_out:
        fig.text(
            0.01,
            0.01,
            "not plotted: " + "; ".join(f"{s['participants']}: {s.get('over_limit')}" for s in left_out),
            fontsize=8,
            color="red",
        )
    fig.tight_layout(rect=(0, 0.04 if left_out else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--steps", help="participant counts, comma-separated (default: the scenario's)")
    parser.add_argument("--max-participants", type=int, help="stop the default steps here")
    parser.add_argument("--duration", type=float, default=20, help="steady measurement window, seconds")
    parser.add_argument("--warmup", type=float, default=6, help="seconds after everyone joined")
    parser.add_argument("--spawn-rate", type=float, default=4, help="users started per second")
    parser.add_argument("--join-timeout", type=float, default=30, help="seconds for everyone to join")
    parser.add_argument("--no-simulcast", dest="simulcast", action="store_false", help="one 640x360 VP8 layer")
    parser.add_argument("--processes", type=int, default=1, help="locust processes (--processes) of the generator")
    parser.add_argument(
        "--workers", type=int, help="the server's --workers (results: <scenario>-workers<N>.json); default: one process"
    )
    parser.add_argument("--keep-going", action="store_true", help="do not stop at the first step over the limits")
    parser.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="run a step over the limits again (up to this many runs) when other programs "
        f"used more than {NOISY_OTHER_CPU_PCT:.0f} %% of a core during it (a shared machine)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="JSON and PNG go here")
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG from the scenario's JSON")
    parser.add_argument(
        "--logs",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "sfu-scenarios",
        help="server and locust logs, locust CSV and JSON per step",
    )
    args = parser.parse_args()

    if args.replot:
        plot(
            args.scenario,
            json.loads((args.out / f"{args.scenario}.json").read_text()),
            args.out / f"{args.scenario}.png",
        )
        return
    scenario = SCENARIOS[args.scenario]
    steps = [int(s) for s in args.steps.split(",")] if args.steps else list(scenario["steps"])
    if args.max_participants:
        steps = [s for s in steps if s <= args.max_participants]
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "scenario": args.scenario,
        "about": scenario["about"],
        "limits": {"loss_pct": LOSS_LIMIT_PCT, "p99_latency_ms": P99_LIMIT_MS},
        "machine": {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "command": " ".join(["python", "bench/scenarios.py", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "revision": subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "steps": [],
        "capacity": None,  # the last step before the first one over the limits
        "first_over_limit": None,
        "stopped_because": None,
    }
    stem = args.scenario if args.workers is None else f"{args.scenario}-workers{args.workers}"
    json_path = args.out / f"{stem}.json"
    for n in steps:
        print(f"[{args.scenario}] {n} participants ...", flush=True)
        attempts = []
        while True:
            step = run_step(args.scenario, scenario, n, args)
            why = verdict(step, n)
            step["over_limit"] = why
            attempts.append(step)
            noisy = step.get("other_cpu_pct", 0) > NOISY_OTHER_CPU_PCT
            if why is None or not noisy or len(attempts) >= args.attempts:
                break
            print(f"  {why} while other programs used {step['other_cpu_pct']:.0f} % of a core: again", flush=True)
        if step.get("loss_pct") is None:  # nothing measured: report an attempt that measured media
            step = next((a for a in reversed(attempts) if a.get("loss_pct") is not None), step)
            why = step["over_limit"]
        if len(attempts) > 1:
            step["earlier_attempts"] = [
                {k: a.get(k) for k in ("over_limit", "other_cpu_pct", "loss_pct", "latency_ms", "server_cpu_total_pct")}
                for a in attempts
                if a is not step
            ]
        report["steps"].append(step)
        lat = step.get("latency_ms", {})
        print(
            f"  joined {step.get('joined')}/{n}  server CPU {step.get('server_cpu_total_pct', 0):.0f} %"
            f"  generator CPU {step.get('generator_cpu_total_pct', 0):.0f} %  forwarded {step.get('forwarded_packets_per_s', 0):.0f} pkt/s"
            f"  loss {step.get('loss_pct')}  p50/p99 {lat.get('p50')}/{lat.get('p99')} ms"
            f"  generator lag p99 {step.get('generator_loop_lag_ms', {}).get('p99')} ms"
            f"  others {step.get('other_cpu_pct', 0):.0f} %"
            f"  server waited for a CPU {step.get('server_runqueue_wait_pct', 0):.0f} %  {why or 'ok'}",
            flush=True,
        )
        if why is None and report["first_over_limit"] is None:
            report["capacity"] = n
        elif why is not None and report["first_over_limit"] is None:
            report["first_over_limit"] = f"{n} participants: {why}"
        if why is not None and not args.keep_going:
            report["stopped_because"] = report["first_over_limit"]
        json_path.write_text(json.dumps(report, indent=1))
        plot(args.scenario, report, args.out / f"{stem}.png")
        if report["stopped_because"]:
            break
    json_path.write_text(json.dumps(report, indent=1))
    plot(args.scenario, report, args.out / f"{stem}.png")
    summary = (
        f"first over the limits: {report['first_over_limit']}"
        if report["first_over_limit"]
        else "every step within limits"
    )
    print(f"capacity: {report['capacity']} participants ({summary})")
    print(f"wrote {json_path} and {args.out / (stem + '.png')}")


if __name__ == "__main__":
    main()

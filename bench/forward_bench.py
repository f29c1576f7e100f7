"""Forwarding benchmark: one publisher (VP8 + Opus) to N subscribers.

The server under test (the SFU, or the naive MediaRelay baseline in baseline_mediarelay.py)
runs as a subprocess so that its CPU time can be read with psutil. This process hosts the
clients (sfu.client participants: pre-encoded media, no encoder, no decoder) on one asyncio
loop and measures its own CPU too, to show it is not the bottleneck.

Each run: start a fresh server, join + publish, join N subscribers, wait until every
subscriber receives audio and video, warm up, then measure over a steady-state window:

- server CPU (user+sys of the server process, all threads) as % of one core;
- forwarded packets/s: sum over subscribers of RTP packets received in the window (primary
  SSRCs only; RTX retransmissions are counted separately);
- CPU microseconds per forwarded packet, % of a core per subscriber;
- received bitrate, video frame rate (RTP marker bits), and loss from sequence-number gaps.

Usage: see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from aiortc import sdp as aiortc_sdp

ROOT = Path(__file__).resolve().parent.parent


def _argv_value(name: str) -> str | None:
    for i, a in enumerate(sys.argv):
        if a == name and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def snapshot(commit: str) -> Path:
    """A `git archive` copy of one commit in the temp dir (made once, then reused)."""
    import tempfile

    full = subprocess.run(
        ["git", "rev-parse", "--verify", commit + "^{commit}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    root = Path(tempfile.gettempdir()) / f"sfu-bench-{full[:12]}"
    if not (root / "COMMIT").exists():
        root.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", full], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
        build_extension(root)
        (root / "COMMIT").write_text(full + "\n")
    return root


def build_extension(root: Path) -> None:
    """Compile a snapshot's compiled send path (sfu/rtc/_fastpath.c) in place, as
    `pip install -e .` does for the working tree; without it the snapshot runs pure Python."""
    import sysconfig

    source = root / "sfu" / "rtc" / "_fastpath.c"
    if not source.exists():
        return
    target = source.with_name("_fastpath" + sysconfig.get_config_var("EXT_SUFFIX"))
    sources = [str(source)] + [str(p) for p in [source.with_name("_media.c")] if p.exists()]  # as setup.py lists
    include = [f"-I{sysconfig.get_paths()['include']}", f"-I{source.parent}"]
    cmd = ["cc", "-shared", "-fPIC", "-O2", *include, *sources, "-lsrtp2", "-o"]
    result = subprocess.run([*cmd, str(target)], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"the snapshot's compiled send path did not build: {result.stderr.strip()}", file=sys.stderr)


def _sfu_root() -> Path:
    """The checkout whose sfu package (server AND client library) is benchmarked.

    --sfu-commit REV: a `git archive` snapshot of that commit; --sfu-root DIR: any checkout;
    default: this working tree. A snapshot keeps a working tree that is being edited from
    changing the code under test halfway through a series of runs. Read before importing sfu."""
    commit = _argv_value("--sfu-commit")
    if commit:
        return snapshot(commit)
    root = _argv_value("--sfu-root")
    return Path(root).resolve() if root else ROOT


SFU_ROOT = _sfu_root()
sys.path.insert(0, str(SFU_ROOT))

from sfu.client import Participant, load_clip  # noqa: E402
from sfu.rtc import aiortc_glue as glue  # noqa: E402

PYTHON = sys.executable
HOST = "127.0.0.1"
_RTP_HDR = struct.Struct("!BBHII")
PROFILE_RATE = 1000  # py-spy samples per second


# -- subscribers that only count ------------------------------------------------------------


@dataclass(slots=True)
class StreamCounter:
    """Counters for one received SSRC."""

    kind: str
    packets: int = 0
    bytes: int = 0
    frames: int = 0  # packets with the marker bit (end of a video frame)
    highest_ext: int = -1  # highest extended sequence number seen

    def snapshot(self) -> tuple[int, int, int, int]:
        return (self.packets, self.bytes, self.frames, self.highest_ext)


class CountingParticipant(Participant):
    """A Participant whose RTP tap only counts: parses the 12-byte header, nothing else.

    Keeps per-SSRC counters for the primary SSRC of every offered m-section and counts RTX
    (the second SSRC of an FID ssrc-group) apart, so sequence gaps measure real loss.
    """

    def __init__(self, url: str, room: str, name: str) -> None:
        super().__init__(url, room, name)
        self.counters: dict[int, StreamCounter] = {}
        self.rtx_ssrcs: set[int] = set()
        self.rtx_packets = 0
        self.unknown_packets = 0
        self.joined_at = 0.0
        self.first_media_at: float | None = None
        self._pinger: asyncio.Task[None] | None = None

    async def join(self) -> dict[str, Any]:
        self.joined_at = time.monotonic()
        msg = await super().join()
        self._pinger = asyncio.get_running_loop().create_task(self._ping_loop())
        return msg

    async def _ping_loop(self) -> None:
        interval = float((self.joined or {}).get("heartbeat_interval_s", 2.0))
        try:
            while not self.closed:
                await asyncio.sleep(interval)
                await self.send({"type": "ping"})
        except (asyncio.CancelledError, ConnectionError, RuntimeError):
            pass

    async def _on_subscribe_offer(self, msg: dict[str, Any]) -> None:
        description = aiortc_sdp.SessionDescription.parse(msg["sdp"])
        kinds = {c["mid"]: c["kind"] for c in msg["consumers"]}
        for media in description.media:
            rtx = {int(g.items[1]) for g in media.ssrc_group if g.semantic == "FID" and len(g.items) > 1}
            self.rtx_ssrcs |= rtx
            kind = kinds.get(media.rtp.muxId)
            if kind is None:
                continue
            for s in media.ssrc:
                if s.ssrc not in rtx and s.ssrc not in self.counters:
                    self.counters[s.ssrc] = StreamCounter(kind)
        await super()._on_subscribe_offer(msg)  # installs the tap with our _on_rtp

    async def _on_rtp(self, data: bytes, arrival_ms: int) -> None:
        if len(data) < 12:
            return
        _b0, b1, seq, _ts, ssrc = _RTP_HDR.unpack_from(data, 0)
        c = self.counters.get(ssrc)
        if c is None:
            if ssrc in self.rtx_ssrcs:
                self.rtx_packets += 1
            else:
                self.unknown_packets += 1
            return
        if self.first_media_at is None:
            self.first_media_at = time.monotonic()
        c.packets += 1
        c.bytes += len(data)
        if b1 & 0x80:
            c.frames += 1
        # Extend the 16-bit sequence number.
        if c.highest_ext < 0:
            c.highest_ext = seq + 65536
        else:
            d = (seq - c.highest_ext) & 0xFFFF
            if d < 0x8000:
                c.highest_ext += d

    def receiving(self) -> bool:
        kinds = {c.kind for c in self.counters.values() if c.packets > 0}
        return {"audio", "video"} <= kinds

    def snapshot(self) -> dict[int, tuple[str, tuple[int, int, int, int]]]:
        return {ssrc: (c.kind, c.snapshot()) for ssrc, c in self.counters.items()}

    async def close(self, leave: bool = True) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
        await super().close(leave)


# -- the server subprocess ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


SERVER_CMD: str | None = None  # --server-cmd template


def server_command(server: str, port: int) -> list[str]:
    if SERVER_CMD:
        return shlex.split(SERVER_CMD.format(python=PYTHON, host=HOST, port=port, root=SFU_ROOT))
    common = ["--host", HOST, "--port", str(port), "--ice-host", HOST]
    if server == "sfu":
        return [PYTHON, "-m", "sfu", *common, "--log-level", "WARNING"]
    if server == "mediarelay":
        return [PYTHON, str(ROOT / "bench" / "baseline_mediarelay.py"), *common]
    raise ValueError(server)


async def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
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


def cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def cpu_split(p: psutil.Process) -> tuple[float, float]:
    t = p.cpu_times()
    return t.user, t.system


# -- one run --------------------------------------------------------------------------------


@dataclass
class RunConfig:
    server: str
    subscribers: int
    warmup_s: float
    seconds: float
    pin: bool
    profile: str | None = None  # py-spy output path (server run under py-spy)
    profile_format: str = "speedscope"
    log_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def run_once(cfg: RunConfig) -> dict[str, Any]:
    port = free_port()
    cmd = server_command(cfg.server, port)
    if cfg.profile:
        cmd = [
            str(Path(PYTHON).parent / "py-spy"),
            "record",
            "--nonblocking",
            "--threads",
            "--rate",
            str(PROFILE_RATE),
            "--format",
            cfg.profile_format,
            "-o",
            cfg.profile,
            "--",
            *cmd,
        ]
    log = None
    if cfg.log_dir is not None:
        cfg.log_dir.mkdir(parents=True, exist_ok=True)
        log = (cfg.log_dir / f"{cfg.server}-{cfg.subscribers}-{int(time.time())}.log").open("wb")
    env = dict(os.environ, PYTHONPATH=str(SFU_ROOT), SFU_ROOT=str(SFU_ROOT))
    proc = subprocess.Popen(cmd, cwd=SFU_ROOT, env=env, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
    me = psutil.Process()
    participants: list[CountingParticipant] = []
    try:
        await wait_ready(port, proc)
        server_proc = psutil.Process(proc.pid)
        if cfg.profile:  # the server is py-spy's child
            children = server_proc.children()
            server_proc = children[0] if children else server_proc
        if cfg.pin and len(os.sched_getaffinity(0)) >= 2:
            cpus = sorted(os.sched_getaffinity(0))
            for p in [server_proc, *server_proc.children(recursive=True)]:
                p.cpu_affinity([cpus[0]])
            me.cpu_affinity([cpus[1]])
        url = f"ws://{HOST}:{port}/ws"
        room = "bench"
        setup_start = time.monotonic()
        publisher = CountingParticipant(url, room, "publisher")
        participants.append(publisher)
        await publisher.join()
        await publisher.publish(audio=True, video=True)
        subs = [CountingParticipant(url, room, f"sub{i}") for i in range(cfg.subscribers)]
        participants.extend(subs)
        await asyncio.gather(*(s.join() for s in subs))
        deadline = time.monotonic() + 30
        while not all(s.receiving() for s in subs):
            if time.monotonic() > deadline:
                missing = [s.name for s in subs if not s.receiving()]
                raise RuntimeError(f"no media after 30 s on {missing}")
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode}")
            await asyncio.sleep(0.05)
        setup_s = time.monotonic() - setup_start
        first_media_ms = [1000 * (s.first_media_at - s.joined_at) for s in subs if s.first_media_at]
        await asyncio.sleep(cfg.warmup_s)

        async def publisher_sent() -> int:
            total = 0
            for t in publisher.publish_pc.getTransceivers():
                for st in (await t.sender.getStats()).values():
                    if getattr(st, "type", "") == "outbound-rtp":
                        total += st.packetsSent
            return total

        pub0 = await publisher_sent()
        snaps0 = [s.snapshot() for s in subs]
        rtx0 = sum(s.rtx_packets for s in subs)
        psutil.cpu_percent(None)  # reset the system-wide counter
        (su0, ss0), me0, t0 = cpu_split(server_proc), cpu_seconds(me), time.monotonic()
        await asyncio.sleep(cfg.seconds)
        (su1, ss1), me1, t1 = cpu_split(server_proc), cpu_seconds(me), time.monotonic()
        srv0, srv1 = su0 + ss0, su1 + ss1
        system_pct = psutil.cpu_percent(None) * psutil.cpu_count()
        snaps1 = [s.snapshot() for s in subs]
        rtx1 = sum(s.rtx_packets for s in subs)
        pub1 = await publisher_sent()
        server_rss_mb = server_proc.memory_info().rss / 1e6
        server_threads = server_proc.num_threads()
        alive = proc.poll() is None
    finally:
        await asyncio.gather(*(p.close() for p in participants), return_exceptions=True)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15 if cfg.profile else 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log is not None:
            log.close()

    window = t1 - t0
    per_sub = []
    for a, b in zip(snaps0, snaps1, strict=False):
        d = {"audio": [0, 0, 0, 0], "video": [0, 0, 0, 0]}  # packets, bytes, frames, expected
        for ssrc, (kind, (p1, by1, f1, h1)) in b.items():
            _, (p0, by0, f0, h0) = a.get(ssrc, (kind, (0, 0, 0, -1)))
            acc = d[kind]
            acc[0] += p1 - p0
            acc[1] += by1 - by0
            acc[2] += f1 - f0
            acc[3] += (h1 - h0) if h0 >= 0 else (p1 - p0)
        per_sub.append(d)
    pkts = sum(d[k][0] for d in per_sub for k in d)
    nbytes = sum(d[k][1] for d in per_sub for k in d)
    expected = sum(d[k][3] for d in per_sub for k in d)
    lost = max(0, expected - pkts)
    server_cpu_s = srv1 - srv0
    client_cpu_s = me1 - me0
    n = cfg.subscribers
    video_fps = [d["video"][2] / window for d in per_sub]
    sub_pps = [(d["audio"][0] + d["video"][0]) / window for d in per_sub]
    return {
        "server": cfg.server,
        "subscribers": n,
        "window_s": round(window, 3),
        "setup_s": round(setup_s, 2),
        "first_media_ms_median": round(statistics.median(first_media_ms), 1) if first_media_ms else None,
        "server_cpu_pct": 100 * server_cpu_s / window,
        "server_user_pct": 100 * (su1 - su0) / window,
        "server_sys_pct": 100 * (ss1 - ss0) / window,
        "client_cpu_pct": 100 * client_cpu_s / window,
        "system_cpu_pct": system_pct,  # all processes, % of one core (2 cores = 200)
        "other_cpu_pct": system_pct - 100 * (server_cpu_s + client_cpu_s) / window,
        "publisher_sent_pps": (pub1 - pub0) / window,
        "forwarded_pps": pkts / window,
        "forwarded_pps_per_subscriber_min": min(sub_pps) if sub_pps else 0.0,
        "server_us_per_forwarded_packet": 1e6 * server_cpu_s / pkts if pkts else None,
        "server_user_us_per_forwarded_packet": 1e6 * (su1 - su0) / pkts if pkts else None,
        "server_sys_us_per_forwarded_packet": 1e6 * (ss1 - ss0) / pkts if pkts else None,
        "client_us_per_received_packet": 1e6 * client_cpu_s / pkts if pkts else None,
        "server_pct_core_per_subscriber": 100 * server_cpu_s / window / n if n else None,
        "rx_kbps_total": nbytes * 8 / window / 1000,
        "rx_kbps_per_subscriber": nbytes * 8 / window / 1000 / n if n else 0.0,
        "video_fps_per_subscriber_mean": statistics.fmean(video_fps) if video_fps else 0.0,
        "video_fps_per_subscriber_min": min(video_fps) if video_fps else 0.0,
        "packets_expected": expected,
        "packets_received": pkts,
        "packets_lost": lost,
        "loss_pct": 100 * lost / expected if expected else 0.0,
        "rtx_packets": rtx1 - rtx0,
        "server_rss_mb": round(server_rss_mb, 1),
        "server_threads": server_threads,
        "server_alive_at_end": alive,
    }


# -- many runs, medians, output ---------------------------------------------------------------

MEDIAN_KEYS = [
    "server_cpu_pct",
    "server_user_pct",
    "server_sys_pct",
    "client_cpu_pct",
    "system_cpu_pct",
    "other_cpu_pct",
    "publisher_sent_pps",
    "forwarded_pps",
    "server_us_per_forwarded_packet",
    "server_user_us_per_forwarded_packet",
    "server_sys_us_per_forwarded_packet",
    "client_us_per_received_packet",
    "server_pct_core_per_subscriber",
    "rx_kbps_total",
    "rx_kbps_per_subscriber",
    "video_fps_per_subscriber_mean",
    "video_fps_per_subscriber_min",
    "loss_pct",
    "first_media_ms_median",
    "setup_s",
    "server_rss_mb",
]


SOURCE_FPS = 30.0  # the publisher's clip (sfu.client.load_clip("video") default)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    runs = [r for r in runs if "error" not in r]
    out: dict[str, Any] = {"server": runs[0]["server"], "subscribers": runs[0]["subscribers"], "runs": len(runs)}
    for key in MEDIAN_KEYS:
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            out[key] = round(statistics.median(values), 3)
            out[key + "_min"] = round(min(values), 3)
            out[key + "_max"] = round(max(values), 3)
    out["packets_lost"] = sum(r["packets_lost"] for r in runs)
    out["packets_expected"] = sum(r["packets_expected"] for r in runs)
    # Saturated: the server no longer delivers the source frame rate to its subscribers, or
    # loses packets. (A re-encoding server drops frames before packetizing them, so its
    # overload shows as a lower frame rate with no sequence gaps.)
    out["saturated"] = bool(
        out["subscribers"] > 0
        and (out.get("video_fps_per_subscriber_mean", 0) < 0.9 * SOURCE_FPS or out.get("loss_pct", 0) > 2.0)
    )
    return out


def marginal(summary: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Least-squares slope and intercept of server CPU (median) vs subscribers, over the
    subscriber counts where the server was not saturated."""
    summary = [s for s in summary if not s.get("saturated")]
    pts = [(s["subscribers"], s["server_cpu_pct"]) for s in summary]
    pts_pkt = [(s["forwarded_pps"], s["server_cpu_pct"]) for s in summary]
    if len({x for x, _ in pts}) < 2:
        return None
    slope, intercept = statistics.linear_regression([x for x, _ in pts], [y for _, y in pts])
    slope_pkt, _ = statistics.linear_regression([x for x, _ in pts_pkt], [y for _, y in pts_pkt])
    pps = [s["forwarded_pps"] for s in summary]
    # The same slope for user and system time apart (they add up to the total's slope).
    slope_user, _ = statistics.linear_regression(pps, [s.get("server_user_pct", 0.0) for s in summary])
    slope_sys, _ = statistics.linear_regression(pps, [s.get("server_sys_pct", 0.0) for s in summary])
    return {
        "server_cpu_pct_per_extra_subscriber": round(slope, 3),
        "server_cpu_pct_intercept": round(intercept, 3),
        "server_marginal_us_per_forwarded_packet": round(slope_pkt * 1e4, 2),  # %/pps -> us/packet
        "server_marginal_user_us_per_forwarded_packet": round(slope_user * 1e4, 2),
        "server_marginal_sys_us_per_forwarded_packet": round(slope_sys * 1e4, 2),
        "fitted_subscriber_counts": [x for x, _ in pts],
    }


def resummarize(out: Path) -> None:
    """Recompute every server's summary and fit from the raw runs stored in ``out``."""
    data = json.loads(out.read_text())
    for server, payload in data.get("results", {}).items():
        by_n: dict[int, list[dict[str, Any]]] = {}
        for r in payload.get("runs", []):
            by_n.setdefault(r["subscribers"], []).append(r)
        payload["summary"] = [summarize(rs) for _, rs in sorted(by_n.items()) if any("error" not in r for r in rs)]
        payload["marginal"] = marginal(payload["summary"])
        print_table(payload["summary"])
        print(f"{server} fit: {payload['marginal']}")
    out.write_text(json.dumps(data, indent=2) + "\n")


async def settle(below_pct: float, max_s: float) -> float:
    """Wait (at most max_s) until the whole machine uses less than below_pct (% of one core,
    summed over cores) over one second; returns the last reading."""
    deadline = time.monotonic() + max_s
    while True:
        psutil.cpu_percent(None)
        await asyncio.sleep(1.0)
        busy = psutil.cpu_percent(None) * psutil.cpu_count()
        if busy < below_pct or time.monotonic() >= deadline:
            return busy


def machine_info() -> dict[str, Any]:
    import aiortc

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": psutil.cpu_count(),
        "cpu_model": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor(),
        "loadavg_at_start": load,
        "aiortc": aiortc.__version__,
        "sfu_root": str(SFU_ROOT),
        "sfu_commit": git_describe(SFU_ROOT),
    }


def git_describe(root: Path) -> str | None:
    """The commit under test: `git rev-parse HEAD` (+"-dirty"), or a snapshot's COMMIT file."""
    marker = root / "COMMIT"
    if marker.exists():
        return marker.read_text().strip()
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "sfu"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def save(out: Path, server: str, payload: dict[str, Any], merge: bool) -> dict[str, Any]:
    """Write this server's results into the output file; other servers' results are kept.

    With merge, subscriber counts measured earlier for the same server (and not measured
    now) are kept too, and the marginal fit is recomputed over all of them."""
    data: dict[str, Any] = {}
    if out.exists():
        try:
            data = json.loads(out.read_text())
        except ValueError:
            data = {}
    results = data.setdefault("results", {})
    old = results.get(server)
    if merge and old:
        counts = {s["subscribers"] for s in payload["summary"]}
        payload["summary"] = sorted(
            [s for s in old.get("summary", []) if s["subscribers"] not in counts] + payload["summary"],
            key=lambda s: s["subscribers"],
        )
        payload["runs"] = [r for r in old.get("runs", []) if r["subscribers"] not in counts] + payload["runs"]
        payload["marginal"] = marginal(payload["summary"])
        payload["invocations"] = old.get("invocations", [old.get("args")]) + [payload["args"]]
    else:
        payload["invocations"] = [payload["args"]]
    results[server] = payload
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    return payload


def fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(summary: list[dict[str, Any]]) -> None:
    head = (
        f"{'server':<11}{'subs':>5}{'srvCPU%':>9}{'cliCPU%':>9}{'fwd pps':>9}{'us/pkt':>8}"
        f"{'%core/sub':>10}{'kbps/sub':>9}{'fps':>6}{'loss%':>7}"
    )
    print(head)
    for s in summary:
        print(
            f"{s['server']:<11}{s['subscribers']:>5}{fmt(s.get('server_cpu_pct')):>9}"
            f"{fmt(s.get('client_cpu_pct')):>9}{fmt(s.get('forwarded_pps'), '.0f'):>9}"
            f"{fmt(s.get('server_us_per_forwarded_packet')):>8}"
            f"{fmt(s.get('server_pct_core_per_subscriber'), '.2f'):>10}"
            f"{fmt(s.get('rx_kbps_per_subscriber'), '.0f'):>9}"
            f"{fmt(s.get('video_fps_per_subscriber_mean')):>6}{fmt(s.get('loss_pct'), '.2f'):>7}"
            f"{'  SATURATED' if s.get('saturated') else ''}",
            flush=True,
        )


def quiet_leaked_publish_waiter(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """sfu.client.Participant.publish() leaves a wait_type("error", timeout=30) task behind
    that times out 30 s later; hide that one "never retrieved" TimeoutError, keep the rest."""
    task = context.get("future")
    if (
        isinstance(context.get("exception"), asyncio.TimeoutError)
        and isinstance(task, asyncio.Task)
        and "wait_type" in repr(task.get_coro())
    ):
        return
    loop.default_exception_handler(context)


async def main_async(args: argparse.Namespace) -> int:
    asyncio.get_running_loop().set_exception_handler(quiet_leaked_publish_waiter)
    glue.set_host_addresses([HOST])
    load_clip("audio")
    load_clip("video")  # encode the clips now (once, cached) rather than inside a run
    counts = [int(x) for x in args.subscribers.split(",") if x.strip()]
    all_runs: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    started = time.time()
    info = machine_info()
    for n in counts:
        runs = []
        for k in range(args.repeat):
            cfg = RunConfig(
                server=args.server,
                subscribers=n,
                warmup_s=args.warmup,
                seconds=args.seconds,
                pin=args.pin,
                profile=(f"{args.profile}" if args.profile and n == counts[-1] and k == 0 else None),
                profile_format=args.profile_format,
                log_dir=Path(args.log_dir) if args.log_dir else None,
            )
            if args.settle_below > 0:
                await settle(args.settle_below, args.settle_max)
            t = time.monotonic()
            try:
                r = await asyncio.wait_for(run_once(cfg), timeout=args.warmup + args.seconds + 60)
            except Exception as exc:  # a failed run is recorded, not fatal
                print(f"{args.server} n={n} run {k + 1}: FAILED: {exc!r}", file=sys.stderr, flush=True)
                all_runs.append({"server": args.server, "subscribers": n, "error": repr(exc)})
                continue
            r["run"] = k + 1
            r["wall_s"] = round(time.monotonic() - t, 1)
            runs.append(r)
            all_runs.append(r)
            print(
                f"{args.server} n={n} run {k + 1}/{args.repeat}: server {r['server_cpu_pct']:.1f}% "
                f"client {r['client_cpu_pct']:.1f}% other {r['other_cpu_pct']:.1f}% "
                f"fwd {r['forwarded_pps']:.0f} pkt/s "
                f"{fmt(r['server_us_per_forwarded_packet'])} us/pkt fps {r['video_fps_per_subscriber_mean']:.1f} "
                f"loss {r['loss_pct']:.2f}% ({r['wall_s']} s)",
                flush=True,
            )
            if args.pause:
                await asyncio.sleep(args.pause)
        if runs:
            summary.append(summarize(runs))
    print()
    print_table(summary)
    payload = {
        "args": {k: v for k, v in vars(args).items()},
        "machine": info,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "summary": summary,
        "marginal": marginal(summary),
        "runs": all_runs,
    }
    if args.out:
        payload = save(Path(args.out), args.server, payload, args.merge)
        print(f"wrote {args.out}")
    if payload["marginal"]:
        m = payload["marginal"]
        print(
            f"\nmarginal cost: {m['server_cpu_pct_per_extra_subscriber']:.2f} % core per extra subscriber, "
            f"{m['server_marginal_us_per_forwarded_packet']:.1f} us per extra forwarded packet "
            f"({m['server_marginal_user_us_per_forwarded_packet']:.1f} user + "
            f"{m['server_marginal_sys_us_per_forwarded_packet']:.1f} system; intercept {m['server_cpu_pct_intercept']:.1f} %)"
        )
    return 0 if summary else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", default="1,2,4,8", help="comma-separated subscriber counts, one run each")
    parser.add_argument("--seconds", type=float, default=15.0, help="measurement window (s)")
    parser.add_argument("--warmup", type=float, default=5.0, help="steady-state wait before measuring (s)")
    parser.add_argument("--server", default="sfu", help="sfu | mediarelay | any label when --server-cmd is given")
    parser.add_argument(
        "--server-cmd",
        help="custom server command, e.g. '{python} my_server.py --host {host} --port {port}' "
        "(placeholders: python, host, port, root); it must serve GET /healthz and /ws",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per subscriber count (median reported)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "forward.json"))
    parser.add_argument(
        "--merge", action="store_true", help="keep this server's earlier results for subscriber counts not run now"
    )
    parser.add_argument("--pin", action="store_true", help="pin the server to one CPU and the clients to another")
    parser.add_argument("--pause", type=float, default=1.0, help="pause between runs (s)")
    parser.add_argument(
        "--settle-below",
        type=float,
        default=0.0,
        help="before each run, wait until machine-wide CPU (%% of one core, summed) is below this",
    )
    parser.add_argument("--settle-max", type=float, default=20.0, help="longest such wait (s)")
    parser.add_argument(
        "--profile", help="run the server under py-spy for the first run of the last count; output path"
    )
    parser.add_argument("--profile-format", default="speedscope", choices=["speedscope", "flamegraph", "raw"])
    parser.add_argument("--log-dir", help="keep server stdout/stderr here")
    parser.add_argument(
        "--sfu-root",
        default=str(ROOT),
        help="checkout whose sfu package is benchmarked (server and client); default: this repo",
    )
    parser.add_argument(
        "--sfu-commit", help="benchmark this commit (e.g. HEAD) from a git-archive snapshot in the temp dir"
    )
    parser.add_argument(
        "--resummarize", action="store_true", help="only recompute summaries and fits of --out from its stored runs"
    )
    args = parser.parse_args()
    global SERVER_CMD
    SERVER_CMD = args.server_cmd
    if not SERVER_CMD and args.server not in ("sfu", "mediarelay"):
        parser.error("--server must be sfu or mediarelay unless --server-cmd is given")
    if args.resummarize:
        resummarize(Path(args.out))
        return 0
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())

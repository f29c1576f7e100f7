"""Side by side: the SFU and Janus (VideoRoom) forwarding the same 1 -> N load.

The same publisher (pre-encoded VP8 640x360 30 fps + Opus, aiortc, sfu.client's clips) and
the same non-decoding subscribers (aiortc, counting RTP at the SRTP tap) against three
servers, alternated run by run:

- ``sfu``: ``python -m sfu``;
- ``janus``: Debian's Janus with its default threading (one thread per handle);
- ``janus-1loop``: the same Janus with ``event_loops = 1`` (every handle on one shared loop).

Janus never gathers ICE candidates on loopback interfaces, so every server runs inside a
network namespace this script creates, joined to the host by a veth pair (server side
10.98.<n>.2, clients on the host side 10.98.<n>.1); the SFU runs there too, so both servers
see the same path. Each server is pinned to one core and the clients to the other
(``--no-pin`` to leave them free). Needs root (ip netns); run it under the e2e lock
(``flock /tmp/sfu-e2e.lock``), since it creates a namespace and a veth pair.

Per run: server CPU (user and system apart) over a steady window, packets forwarded (as
received by the subscribers), loss. Per server and round: marginal µs per extra forwarded
packet from the N = 0 and N = max runs of that round; the report gives the medians over the
rounds and the ratio ours/Janus of each round's marginal cost (rounds interleave the servers,
so a ratio compares servers under the same load). Usage: see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import aiohttp  # noqa: E402
import forward_bench as fb  # noqa: E402  (reads --sfu-commit/--sfu-root from argv, imports sfu)
import psutil  # noqa: E402
from aiortc import RTCSessionDescription  # noqa: E402
from aiortc import sdp as aiortc_sdp  # noqa: E402

from sfu.client import PreEncodedTrack, load_clip  # noqa: E402
from sfu.rtc import aiortc_glue as glue  # noqa: E402

SERVERS = ("sfu", "janus", "janus-1loop")
ROOM_ID = 1234
JANUS_PLUGINS = "/usr/lib/x86_64-linux-gnu/janus/plugins"
JANUS_TRANSPORTS = "/usr/lib/x86_64-linux-gnu/janus/transports"


# -- the network namespace ----------------------------------------------------------------


class Namespace:
    """A network namespace with a veth pair to the host (addresses from the pid)."""

    def __init__(self) -> None:
        pid = os.getpid()
        self.name = f"sfu-bench-{pid}"
        self.host_if, self.ns_if = f"sfbh{pid % 100000}", f"sfbs{pid % 100000}"
        subnet = 10 + pid % 200
        self.host_ip, self.ns_ip = f"10.98.{subnet}.1", f"10.98.{subnet}.2"
        self._sh("ip", "netns", "add", self.name)
        try:
            self._sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            self._sh("ip", "link", "set", self.ns_if, "netns", self.name)
            self._sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
            self._sh("ip", "link", "set", self.host_if, "up")
            self.run("ip", "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_if)
            self.run("ip", "link", "set", self.ns_if, "up")
            self.run("ip", "link", "set", "lo", "up")
        except Exception:
            self.close()
            raise

    @staticmethod
    def _sh(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True)

    def run(self, *args: str) -> None:
        self._sh("ip", "netns", "exec", self.name, *args)

    def command(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


# -- Janus --------------------------------------------------------------------------------


def janus_config(directory: Path, port: int, event_loops: int) -> Path:
    """A minimal Janus configuration: VideoRoom over plain HTTP, one room for VP8 + Opus."""
    directory.mkdir(parents=True, exist_ok=True)
    loops = f"\tevent_loops = {event_loops}\n" if event_loops else ""
    (directory / "janus.jcfg").write_text(
        "general: {\n"
        f'\tconfigs_folder = "{directory}"\n'
        f'\tplugins_folder = "{JANUS_PLUGINS}"\n'
        f'\ttransports_folder = "{JANUS_TRANSPORTS}"\n'
        "\tdebug_level = 3\n"
        "\tsession_timeout = 120\n"
        f"{loops}"
        "}\n"
        "media: {\n}\n"
        "nat: {\n\tnice_debug = false\n\tfull_trickle = false\n}\n"
        "plugins: {\n"
        '\tdisable = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,'
        "libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,"
        'libjanus_videocall.so,libjanus_voicemail.so"\n'
        "}\n"
        "transports: {\n"
        '\tdisable = "libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so,'
        'libjanus_websockets.so"\n'
        "}\n"
        "events: {\n\tbroadcast = false\n}\n"
    )
    (directory / "janus.transport.http.jcfg").write_text(
        f'general: {{\n\tjson = "plain"\n\tbase_path = "/janus"\n\thttp = true\n\tport = {port}\n\thttps = false\n}}\n'
        "admin: {\n\tadmin_http = false\n}\n"
    )
    (directory / "janus.plugin.videoroom.jcfg").write_text(
        "general: {\n}\n"
        f"room-{ROOM_ID}: {{\n"
        '\tdescription = "bench"\n'
        "\tpublishers = 1\n"
        "\tbitrate = 2000000\n"
        "\tfir_freq = 10\n"
        '\taudiocodec = "opus"\n'
        '\tvideocodec = "vp8"\n'
        "}\n"
    )
    return directory / "janus.jcfg"


class JanusSession:
    """One Janus session over the HTTP API, its long poll feeding per-handle event queues."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession()
        self.session_id = 0
        self.events: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._poll: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None

    @staticmethod
    def _tx() -> str:
        return f"{random.getrandbits(48):012x}"

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": self._tx()}
        async with self.http.post(self.base + path, json=body) as r:
            reply: dict[str, Any] = await r.json(content_type=None)
        if reply.get("janus") == "error":
            raise RuntimeError(f"Janus: {reply.get('error')}")
        return reply

    async def create(self) -> None:
        reply = await self._post("", {"janus": "create"})
        self.session_id = int(reply["data"]["id"])
        self._poll = asyncio.get_running_loop().create_task(self._long_poll())
        self._keepalive = asyncio.get_running_loop().create_task(self._keep_alive())

    async def attach(self) -> int:
        reply = await self._post(f"/{self.session_id}", {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        handle = int(reply["data"]["id"])
        self.events[handle] = asyncio.Queue()
        return handle

    async def message(self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> None:
        msg: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        await self._post(f"/{self.session_id}/{handle}", msg)

    async def event(self, handle: int, timeout_s: float = 20.0) -> dict[str, Any]:
        """The handle's next plugin event (errors raise)."""
        while True:
            ev = await asyncio.wait_for(self.events[handle].get(), timeout_s)
            if ev.get("janus") != "event":
                continue
            data = ev.get("plugindata", {}).get("data", {})
            if "error" in data:
                raise RuntimeError(f"VideoRoom: {data['error']}")
            return ev

    async def wait_media(self, handle: int, timeout_s: float = 20.0) -> None:
        """Until Janus reports the handle's media flowing (``media`` with receiving true)."""
        deadline = time.monotonic() + timeout_s
        while True:
            ev = await asyncio.wait_for(self.events[handle].get(), max(0.1, deadline - time.monotonic()))
            if ev.get("janus") == "media" and ev.get("receiving"):
                return

    async def _long_poll(self) -> None:
        while True:
            try:
                url = f"{self.base}/{self.session_id}?maxev=10&rid={int(time.time() * 1000)}"
                async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=40)) as r:
                    reply = await r.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.2)
                continue
            for ev in reply if isinstance(reply, list) else [reply]:
                queue = self.events.get(int(ev.get("sender", 0)))
                if queue is not None:
                    queue.put_nowait(ev)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(20)
            with contextlib.suppress(aiohttp.ClientError, RuntimeError):
                await self._post(f"/{self.session_id}", {"janus": "keepalive"})

    async def close(self) -> None:
        for task in (self._poll, self._keepalive):
            if task is not None:
                task.cancel()
        with contextlib.suppress(Exception):
            await self._post(f"/{self.session_id}", {"janus": "destroy"})
        await self.http.close()


class JanusPublisher:
    """The same publisher as forward_bench's (aiortc sends the pre-encoded clips)."""

    def __init__(self, janus: JanusSession) -> None:
        self.janus = janus
        self.pc: Any = None
        self.feed_id = 0

    async def publish(self) -> None:
        handle = await self.janus.attach()
        await self.janus.message(handle, {"request": "join", "ptype": "publisher", "room": ROOM_ID, "display": "pub"})
        joined = await self.janus.event(handle)
        self.feed_id = int(joined["plugindata"]["data"]["id"])
        self.pc = pc = glue.create_peer_connection()
        pc.addTransceiver(PreEncodedTrack(load_clip("audio")), direction="sendonly")
        pc.addTransceiver(PreEncodedTrack(load_clip("video")), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"type": "offer", "sdp": pc.localDescription.sdp}
        await self.janus.message(handle, {"request": "publish", "audio": True, "video": True}, offer)
        while True:
            ev = await self.janus.event(handle)
            if "jsep" in ev:
                break
        await pc.setRemoteDescription(RTCSessionDescription(ev["jsep"]["sdp"], "answer"))
        await self.janus.wait_media(handle)  # subscribers can only join a feed that is up
        self.handle = handle

    async def sent_packets(self) -> int:
        total = 0
        for t in self.pc.getTransceivers():
            for st in (await t.sender.getStats()).values():
                if getattr(st, "type", "") == "outbound-rtp":
                    total += st.packetsSent
        return total

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()


class JanusSubscriber(fb.CountingParticipant):
    """forward_bench's counting subscriber, signalled through Janus's VideoRoom instead."""

    def __init__(self, janus: JanusSession, name: str) -> None:
        super().__init__("", "", name)
        self.janus = janus

    async def subscribe(self, feed_id: int) -> None:
        self.joined_at = time.monotonic()
        handle = await self.janus.attach()
        await self.janus.message(handle, {"request": "join", "ptype": "subscriber", "room": ROOM_ID, "feed": feed_id})
        while True:
            ev = await self.janus.event(handle)
            if "jsep" in ev:
                break
        sdp = ev["jsep"]["sdp"]
        description = aiortc_sdp.SessionDescription.parse(sdp)
        for media in description.media:
            rtx = {int(g.items[1]) for g in media.ssrc_group if g.semantic == "FID" and len(g.items) > 1}
            self.rtx_ssrcs |= rtx
            for s in media.ssrc:
                if s.ssrc not in rtx and s.ssrc not in self.counters:
                    self.counters[s.ssrc] = fb.StreamCounter(media.kind)
        self.subscribe_pc = pc = glue.create_peer_connection()
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        glue.detach_receivers(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        glue.install_tap(pc, self._on_rtp, self._on_rtcp)
        await self.janus.message(handle, {"request": "start"}, {"type": "answer", "sdp": pc.localDescription.sdp})

    async def close(self, leave: bool = True) -> None:
        self.closed = True
        if self.subscribe_pc is not None:
            await self.subscribe_pc.close()


# -- one run --------------------------------------------------------------------------------


def server_command(server: str, ns: Namespace, port: int, workdir: Path) -> list[str]:
    if server == "sfu":
        args = [fb.PYTHON, "-m", "sfu", "--host", ns.ns_ip, "--port", str(port), "--ice-host", ns.ns_ip]
        return ns.command([*args, "--allow-open-rooms", "--log-level", "WARNING"])
    loops = 1 if server == "janus-1loop" else 0
    config = janus_config(workdir / f"janus-{server}-{port}", port, loops)
    return ns.command(["janus", "-C", str(config), "-F", str(config.parent), "-N"])


async def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode}")
            try:
                async with http.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


async def run_once(server: str, n: int, ns: Namespace, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    port = fb.free_port()
    cmd = server_command(server, ns, port, workdir)
    log = (workdir / f"{server}-{n}-{int(time.time())}.log").open("wb")
    env = dict(os.environ, PYTHONPATH=str(fb.SFU_ROOT), SFU_ROOT=str(fb.SFU_ROOT))
    # No core files from a crashing server (ulimit -c 0).
    proc = subprocess.Popen(
        ["sh", "-c", 'ulimit -c 0; exec "$@"', "sh", *cmd],
        cwd=fb.SFU_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    me = psutil.Process()
    closers: list[Any] = []
    janus: JanusSession | None = None
    try:
        if server == "sfu":
            await wait_http(f"http://{ns.ns_ip}:{port}/healthz", proc)
        else:
            await wait_http(f"http://{ns.ns_ip}:{port}/janus/info", proc)
        server_proc = psutil.Process(proc.pid)  # sh, ip netns exec and taskset all exec
        if args.pin and len(os.sched_getaffinity(0)) >= 2:
            cpus = sorted(os.sched_getaffinity(0))
            for p in [server_proc, *server_proc.children(recursive=True)]:
                p.cpu_affinity([cpus[0]])
            # Janus starts threads per handle later: pin every thread as it appears.
            me.cpu_affinity([cpus[1]])
        setup_start = time.monotonic()
        if server == "sfu":
            url = f"ws://{ns.ns_ip}:{port}/ws"
            publisher = fb.CountingParticipant(url, "bench", "publisher")
            closers.append(publisher)
            await publisher.join()
            await publisher.publish(audio=True, video=True)
            subs: list[fb.CountingParticipant] = [fb.CountingParticipant(url, "bench", f"sub{i}") for i in range(n)]
            closers.extend(subs)
            await asyncio.gather(*(s.join() for s in subs))
        else:
            janus = JanusSession(f"http://{ns.ns_ip}:{port}/janus")
            await janus.create()
            jpub = JanusPublisher(janus)
            closers.append(jpub)
            await jpub.publish()
            jsubs = [JanusSubscriber(janus, f"sub{i}") for i in range(n)]
            closers.extend(jsubs)
            for s in jsubs:
                await s.subscribe(jpub.feed_id)
            subs = list(jsubs)
        deadline = time.monotonic() + 30
        while not all(s.receiving() for s in subs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no media after 30 s on {[s.name for s in subs if not s.receiving()]}")
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode}")
            await asyncio.sleep(0.05)
        setup_s = time.monotonic() - setup_start
        await asyncio.sleep(args.warmup)
        if args.pin and len(os.sched_getaffinity(0)) >= 2:
            cpus = sorted(os.sched_getaffinity(0))
            for tid in (t.id for t in server_proc.threads()):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(tid, [cpus[0]])

        async def sent() -> int:
            if server == "sfu":
                total = 0
                for t in closers[0].publish_pc.getTransceivers():
                    for st in (await t.sender.getStats()).values():
                        if getattr(st, "type", "") == "outbound-rtp":
                            total += st.packetsSent
                return total
            return await closers[0].sent_packets()

        pub0 = await sent()
        snaps0 = [s.snapshot() for s in subs]
        psutil.cpu_percent(None)
        t0 = time.monotonic()
        c0, me0 = server_proc.cpu_times(), fb.cpu_seconds(me)
        await asyncio.sleep(args.seconds)
        c1, me1 = server_proc.cpu_times(), fb.cpu_seconds(me)
        t1 = time.monotonic()
        system_pct = psutil.cpu_percent(None) * psutil.cpu_count()
        snaps1 = [s.snapshot() for s in subs]
        pub1 = await sent()
        threads = server_proc.num_threads()
        alive = proc.poll() is None
    finally:
        await asyncio.gather(*(c.close() for c in closers), return_exceptions=True)
        if janus is not None:
            await janus.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
    window = t1 - t0
    pkts = expected = 0
    for a, b in zip(snaps0, snaps1, strict=False):
        for ssrc, (_kind, (p1, _b1, _f1, h1)) in b.items():
            _, (p0, _b0, _f0, h0) = a.get(ssrc, ("", (0, 0, 0, -1)))
            pkts += p1 - p0
            expected += (h1 - h0) if h0 >= 0 else (p1 - p0)
    user_s, sys_s = c1.user - c0.user, c1.system - c0.system
    return {
        "server": server,
        "subscribers": n,
        "window_s": round(window, 3),
        "setup_s": round(setup_s, 2),
        "server_cpu_pct": 100 * (user_s + sys_s) / window,
        "server_user_pct": 100 * user_s / window,
        "server_sys_pct": 100 * sys_s / window,
        "client_cpu_pct": 100 * (me1 - me0) / window,
        "system_cpu_pct": system_pct,
        "other_cpu_pct": system_pct - 100 * (user_s + sys_s + me1 - me0) / window,
        "publisher_sent_pps": (pub1 - pub0) / window,
        "forwarded_pps": pkts / window,
        "packets_expected": expected,
        "packets_received": pkts,
        "loss_pct": 100 * max(0, expected - pkts) / expected if expected else 0.0,
        "server_threads": threads,
        "server_alive_at_end": alive,
    }


# -- rounds, ratios -----------------------------------------------------------------------


def marginal(low: dict[str, Any], high: dict[str, Any]) -> dict[str, float] | None:
    """µs of server CPU per extra forwarded packet between two runs (total, user, system)."""
    dpps = high["forwarded_pps"] - low["forwarded_pps"]
    if dpps <= 0:
        return None
    return {
        key: round(1e4 * (high[f"server_{key}_pct"] - low[f"server_{key}_pct"]) / dpps, 2)
        for key in ("cpu", "user", "sys")
    }


def summarize(runs: list[dict[str, Any]], servers: list[str], low_n: int, high_n: int) -> dict[str, Any]:
    by_round: dict[int, dict[str, dict[int, dict[str, Any]]]] = {}
    for r in runs:
        if "error" not in r:
            by_round.setdefault(r["round"], {}).setdefault(r["server"], {})[r["subscribers"]] = r
    per_round: list[dict[str, Any]] = []
    for rnd, by_server in sorted(by_round.items()):
        entry: dict[str, Any] = {"round": rnd}
        for server, by_n in by_server.items():
            if low_n in by_n and high_n in by_n:
                entry[server] = marginal(by_n[low_n], by_n[high_n])
        for other in servers:
            if other != "sfu" and entry.get("sfu") and entry.get(other):
                entry[f"ratio_sfu_over_{other}"] = {
                    k: round(entry["sfu"][k] / entry[other][k], 3) if entry[other][k] else None
                    for k in ("cpu", "user", "sys")
                }
        per_round.append(entry)
    out: dict[str, Any] = {"per_round": per_round, "median": {}}
    for server in servers:
        vals = [e[server] for e in per_round if e.get(server)]
        if vals:
            out["median"][server] = {k: round(statistics.median(v[k] for v in vals), 2) for k in ("cpu", "user", "sys")}
        fixed = [r for r in runs if r.get("server") == server and r.get("subscribers") == low_n and "error" not in r]
        if fixed:
            out["median"].setdefault(server, {})["fixed_cpu_pct_at_low_n"] = round(
                statistics.median(r["server_cpu_pct"] for r in fixed), 2
            )
        ratios = [e[f"ratio_sfu_over_{server}"] for e in per_round if e.get(f"ratio_sfu_over_{server}")]
        if ratios:
            out["median"][f"ratio_sfu_over_{server}"] = {
                k: round(statistics.median(r[k] for r in ratios if r[k] is not None), 3) for k in ("cpu", "user", "sys")
            }
    return out


async def main_async(args: argparse.Namespace) -> int:
    asyncio.get_running_loop().set_exception_handler(fb.quiet_leaked_publish_waiter)
    load_clip("audio")
    load_clip("video")
    servers = [s for s in args.servers.split(",") if s]
    counts = sorted(int(x) for x in args.subscribers.split(","))
    info = fb.machine_info()
    ns = Namespace()
    runs: list[dict[str, Any]] = []
    started = time.time()
    try:
        glue.set_host_addresses([ns.host_ip])
        with tempfile.TemporaryDirectory(prefix="sfu-janus-bench-") as tmp:
            workdir = Path(args.log_dir) if args.log_dir else Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            for rnd in range(1, args.rounds + 1):
                order = servers if rnd % 2 else servers[::-1]  # alternate who goes first
                for server in order:
                    for n in counts:
                        if args.settle_below > 0:
                            await fb.settle(args.settle_below, args.settle_max)
                        try:
                            r = await asyncio.wait_for(
                                run_once(server, n, ns, args, workdir), args.warmup + args.seconds + 90
                            )
                        except Exception as exc:
                            print(f"{server} n={n} round {rnd}: FAILED: {exc!r}", file=sys.stderr, flush=True)
                            runs.append({"server": server, "subscribers": n, "round": rnd, "error": repr(exc)})
                            continue
                        r["round"] = rnd
                        runs.append(r)
                        print(
                            f"round {rnd} {server:<12} n={n:<3} cpu {r['server_cpu_pct']:5.1f}% "
                            f"(user {r['server_user_pct']:.1f} sys {r['server_sys_pct']:.1f}) "
                            f"fwd {r['forwarded_pps']:.0f} pkt/s loss {r['loss_pct']:.2f}% "
                            f"other {r['other_cpu_pct']:.0f}% threads {r['server_threads']}",
                            flush=True,
                        )
    finally:
        ns.close()
    summary = summarize(runs, servers, counts[0], counts[-1])
    payload = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": vars(args),
        "machine": info,
        "loadavg_at_end": os.getloadavg(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "janus_version": subprocess.run(["janus", "--version"], capture_output=True, text=True).stdout.split("\n")[0],
        "summary": summary,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(summary["median"], indent=2))
    print(f"wrote {args.out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated: sfu, janus, janus-1loop")
    parser.add_argument("--subscribers", default="0,15", help="subscriber counts (the fit uses the lowest and highest)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every server at every count")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server and clients")
    parser.add_argument("--settle-below", type=float, default=0.0)
    parser.add_argument("--settle-max", type=float, default=15.0)
    parser.add_argument("--log-dir", help="keep the servers' output and Janus configurations here")
    parser.add_argument("--out", default=str(BENCH / "results" / "janus_vs_sfu.json"))
    parser.add_argument("--sfu-root", help="checkout whose sfu is benchmarked (read by forward_bench)")
    parser.add_argument("--sfu-commit", help="benchmark this commit from a git-archive snapshot")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root (ip netns)")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())

"""Load test for the SFU: every locust user is a real WebRTC participant.

Each user is an aiortc peer (sfu.client.Participant) that joins a room through the signaling
WebSocket, publishes *pre-encoded* media (VP8, optionally as three RID simulcast layers, and
Opus; clips encoded once with PyAV on first use and cached, nothing downloaded, no encoder
during the run) and subscribes to everyone else *without decoding*: incoming RTP is counted
from the SRTP tap (sequence numbers for loss, the publisher's send-time trailer in each video
frame for forwarding latency).

Locust runs on gevent; aiortc runs on asyncio. All peers of a locust process live on one
uvloop event loop in a real OS thread (not a gevent greenlet). The asyncio side only appends
finished measurements to a deque; the users' greenlets drain it and report through locust's
request events (``events.request.fire``), so everything locust does (stats, CSV, the web UI,
master/worker aggregation) works as for HTTP.

What is reported (request type / name; for the "rx" rows the *response time* columns hold the
value named, per user and interval):

    webrtc  join                   ms from opening the WebSocket to ``joined``
    webrtc  publish                ms from the publish offer to a connected DTLS transport
    webrtc  first remote frame     ms from the first subscribe offer with a remote video (or
                                   from joining, if later) to the first remote keyframe
    rx      packets/s              RTP packets received per second (response_length: bytes)
    rx      kbit/s                 RTP bitrate received
    rx      loss %                 packets missing from the (gapless) forwarded sequence
    rx      latency ms             publisher send -> subscriber receive, per video frame
                                   (a sample of at most --sfu-latency-samples per interval)
    generator  loop lag ms         how late the generator's asyncio loop wakes from a 100 ms
                                   sleep: large values mean the generator itself is saturated

Parameters (locust's own options plus these):

    --host http://127.0.0.1:8080        the server (its /ws is used)
    --sfu-room-size N                   users per room (0: everyone in one room)
    --sfu-publishers N                  publishers per room, the rest only subscribe (-1: all)
    --sfu-simulcast                     publish video as three layers q/h/f
    --sfu-no-audio / --sfu-no-video     publish only one kind
    --sfu-layout grid|speaker|high|low  which layer each subscriber asks for (tile sizes)
    --sfu-json FILE                     write per-user and per-interval measurements as JSON

Headless, with CSV:

    locust -f bench/locustfile.py --headless -u 8 -r 2 -t 60s --host http://127.0.0.1:8080 \\
        --sfu-room-size 4 --csv bench/results/run --sfu-json bench/results/run.json

See bench/README.md ("Load test with locust") for distributed runs and the scenarios.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import random
import time
from collections import deque
from typing import Any

import gevent
from gevent import monkey
from locust import User, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

from sfu.client import (
    SIMULCAST_LAYERS,
    TRAILER,
    TRAILER_MAGIC,
    Participant,
    load_clip,
)
from sfu.media.keyframe import vp8_keyframe_start
from sfu.media.rtp import MalformedPacket, parse_rtp
from sfu.rtc import aiortc_glue as glue

logger = logging.getLogger("sfu.locust")
logging.getLogger("aioice").setLevel(logging.WARNING)  # one INFO line per ICE check otherwise

# The real (unpatched) primitive to start an OS thread: gevent patches threading so that
# Thread.start() would spawn a greenlet, which an asyncio loop must not run on.
_start_os_thread = monkey.get_original("_thread", "start_new_thread")

LAYOUTS = ("grid", "speaker", "high", "low")
VIEWPORT_HEIGHT = 720  # the subscriber's "screen" for the grid layout


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("SFU", "the participants' room layout and media")
    group.add_argument("--sfu-room-size", type=int, default=4, help="users per room; 0: everyone in one room")
    group.add_argument("--sfu-room-prefix", default="load", help="room names are PREFIX-<n>")
    group.add_argument(
        "--sfu-publishers", type=int, default=-1, help="publishers per room (the first users of each room), -1: all"
    )
    group.add_argument(
        "--sfu-simulcast",
        action="store_true",
        default=False,
        help="publish video as three RID layers (160x90, 320x180, 640x360)",
    )
    group.add_argument("--sfu-no-audio", action="store_true", default=False, help="do not publish audio")
    group.add_argument("--sfu-no-video", action="store_true", default=False, help="do not publish video")
    group.add_argument(
        "--sfu-layout",
        choices=LAYOUTS,
        default="grid",
        help="layer choice: grid (tiles of a 720p screen, x1.5 like the browser client), "
        "speaker (first remote full, others smallest), high, low",
    )
    group.add_argument("--sfu-ice-host", default="127.0.0.1", help="address for ICE host candidates")
    group.add_argument("--sfu-report-interval", type=float, default=1.0, help="seconds between reports")
    group.add_argument(
        "--sfu-latency-samples",
        type=int,
        default=50,
        help="latency samples per user and interval given to locust (the JSON keeps all)",
    )
    group.add_argument("--sfu-json", default="", help="write measurements to this JSON file at the end")


# -- the asyncio side ---------------------------------------------------------------------


class Job:
    """A coroutine's outcome, polled from gevent (no cross-thread locks involved)."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def wait(self, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while not self.done:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no result within {timeout_s}s")
            gevent.sleep(0.01)
        if self.error is not None:
            raise self.error
        return self.result


class PeerLoop:
    """One asyncio event loop in a real OS thread per locust process (created lazily, so that
    processes forked by ``--processes`` each get their own)."""

    _instance: PeerLoop | None = None
    _pid = 0

    @classmethod
    def get(cls, ice_host: str) -> PeerLoop:
        if cls._instance is None or cls._pid != os.getpid():
            # Set before waiting for the thread: users spawned meanwhile must share this one.
            cls._instance, cls._pid = cls(ice_host), os.getpid()
        instance = cls._instance
        deadline = time.monotonic() + 10
        while instance.loop is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the asyncio thread did not start")
            gevent.sleep(0.005)
        return instance

    LAG_PERIOD_S = 0.1

    def __init__(self, ice_host: str) -> None:
        glue.set_host_addresses([ice_host])
        self.loop: asyncio.AbstractEventLoop | None = None
        # How late the loop wakes up (ms): if the generator itself were saturated, this grows.
        self.lags: deque[tuple[float, float]] = deque(maxlen=600)  # (time, lag_ms) for the JSON
        self.lag_events: deque[float] = deque(maxlen=600)  # for locust events
        self.thread_id = _start_os_thread(self._run, ())

    async def _watch_lag(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.LAG_PERIOD_S)
            lag_ms = max(0.0, (time.monotonic() - t0 - self.LAG_PERIOD_S) * 1000)
            self.lags.append((time.time(), lag_ms))
            self.lag_events.append(lag_ms)

    def _run(self) -> None:
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            selector = monkey.get_original("selectors", "DefaultSelector")()
            loop = asyncio.SelectorEventLoop(selector)
        asyncio.set_event_loop(loop)
        loop.create_task(self._watch_lag())
        self.loop = loop
        loop.run_forever()

    def submit(self, coro: Any) -> Job:
        job = Job()

        def start() -> None:
            task = asyncio.ensure_future(coro)

            def finished(t: asyncio.Future[Any]) -> None:
                if t.cancelled():
                    job.error = asyncio.CancelledError()
                elif t.exception() is not None:
                    job.error = t.exception()
                else:
                    job.result = t.result()
                job.done = True

            task.add_done_callback(finished)

        assert self.loop is not None
        self.loop.call_soon_threadsafe(start)
        return job


class StreamCounter:
    """Receive statistics of one incoming SSRC: extended sequence numbers for loss."""

    __slots__ = ("base_ext", "bytes", "kind", "max_ext", "packets")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.packets = 0
        self.bytes = 0
        self.base_ext = -1
        self.max_ext = -1

    @property
    def expected(self) -> int:
        return 0 if self.max_ext < 0 else self.max_ext - self.base_ext + 1


class LoadPeer(Participant):
    """A participant that counts what it receives, cheaply (no per-packet sets or logging)."""

    def __init__(self, url: str, room: str, name: str, layout: str) -> None:
        super().__init__(url, room, name, reconnect=True)  # survives a blip: resumes, or rejoins
        self.layout = layout
        self.counters: dict[int, StreamCounter] = {}  # by SSRC
        self.latencies_ms: list[float] = []
        self.first_keyframe_s: float | None = None
        self.first_video_offer_s: float | None = None  # the first subscribe offer with a remote video
        self.subscriptions: dict[str, int | None] = {}  # track -> max_height sent

    async def _on_subscribe_offer(self, msg: dict[str, Any]) -> None:
        if self.first_video_offer_s is None and any(c.get("kind") == "video" for c in msg.get("consumers", ())):
            self.first_video_offer_s = time.time()
        await super()._on_subscribe_offer(msg)

    async def _on_rtp(self, data: bytes, arrival_ms: int) -> None:
        try:
            view = parse_rtp(data)
        except MalformedPacket:
            return
        counter = self.counters.get(view.ssrc)
        if counter is None:
            mid = self._ssrc_mid.get(view.ssrc)
            if mid is None:
                return
            stream = self.streams.get(mid)
            counter = self.counters[view.ssrc] = StreamCounter(stream.kind if stream else "")
        counter.packets += 1
        counter.bytes += len(data)
        seq = view.seq
        if counter.max_ext < 0:
            counter.base_ext = counter.max_ext = seq
        else:
            delta = (seq - counter.max_ext) & 0xFFFF
            if delta < 0x8000:
                counter.max_ext += delta
            elif counter.max_ext - (0x10000 - delta) < counter.base_ext:
                counter.base_ext = counter.max_ext - (0x10000 - delta)  # reordered before the first
        if counter.kind == "video":
            if self.first_keyframe_s is None and vp8_keyframe_start(data[view.payload_start : view.payload_end]):
                self.first_keyframe_s = time.time()
            end = view.payload_end
            if view.marker and end - view.payload_start >= TRAILER.size:
                magic, sent_us = TRAILER.unpack_from(data, end - TRAILER.size)
                if magic == TRAILER_MAGIC:
                    self.latencies_ms.append(time.time() * 1000 - sent_us / 1000)

    def wanted_heights(self) -> dict[str, int | None]:
        """max_height per remote video track, from the layout (tile sizes on a 720p screen)."""
        tracks = sorted({s.track for s in self.streams.values() if s.kind == "video" and s.track})
        if not tracks:
            return {}
        if self.layout == "high":
            return {t: None for t in tracks}
        if self.layout == "low":
            return {t: SIMULCAST_LAYERS[0][2] for t in tracks}
        if self.layout == "speaker":
            return {t: (None if i == 0 else SIMULCAST_LAYERS[0][2]) for i, t in enumerate(tracks)}
        cols = math.ceil(math.sqrt(len(tracks)))
        rows = math.ceil(len(tracks) / cols)
        return {t: int(VIEWPORT_HEIGHT / rows * 1.5) for t in tracks}

    async def update_subscriptions(self) -> None:
        for track, height in self.wanted_heights().items():
            if self.subscriptions.get(track, -1) != height:
                self.subscriptions[track] = height
                await self.send({"type": "subscription", "track": track, "max_height": height, "paused": False})


class PeerSession:
    """A user's peer on the asyncio loop: join, publish, then measure every interval."""

    def __init__(self, url: str, room: str, name: str, publish: bool, opts: Any, loop: PeerLoop) -> None:
        self.peer = LoadPeer(url, room, name, opts.sfu_layout)
        self.peer_loop = loop
        self.room = room
        self.publish = publish
        self.opts = opts
        self.out: deque[tuple[str, str, float, int, str | None]] = deque()  # for locust events
        self.records: deque[dict[str, Any]] = deque()  # for the JSON
        self.info: dict[str, Any] = {"room": room, "name": name, "publisher": publish}
        self.started_s = time.time()
        self.stopping = False
        self._measuring: asyncio.Future[None] | None = None  # the periodic report, once joined

    def event(self, kind: str, name: str, value: float, length: int = 0, error: str | None = None) -> None:
        self.out.append((kind, name, value, length, error))

    async def start(self) -> None:
        p = self.peer
        t0 = time.time()
        self.started_s = t0
        try:
            await p.join()
        except Exception as exc:
            self.info["error"] = f"join: {exc}"
            self.event("webrtc", "join", (time.time() - t0) * 1000, 0, repr(exc))
            raise
        self.info["join_ms"] = (time.time() - t0) * 1000
        self.info["id"] = p.id
        self.event("webrtc", "join", self.info["join_ms"])
        if self.publish:
            t1 = time.time()
            try:
                await p.publish_rtp(
                    audio=not self.opts.sfu_no_audio,
                    video=not self.opts.sfu_no_video,
                    simulcast=self.opts.sfu_simulcast,
                    trailer=True,
                )
                while not (
                    glue.dtls_transports(p.publish_pc) and glue.is_connected(glue.dtls_transports(p.publish_pc)[0])
                ):
                    if p.publish_pc.connectionState in ("failed", "closed") or time.time() - t1 > 20:
                        raise RuntimeError(f"publish connection {p.publish_pc.connectionState}")
                    await asyncio.sleep(0.01)
            except Exception as exc:
                self.info["error"] = f"publish: {exc!r}"
                self.event("webrtc", "publish", (time.time() - t1) * 1000, 0, repr(exc))
                raise
            self.info["publish_ms"] = (time.time() - t1) * 1000
            self.event("webrtc", "publish", self.info["publish_ms"])
        self._measuring = asyncio.ensure_future(self._measure())

    async def _measure(self) -> None:
        p = self.peer
        interval = self.opts.sfu_report_interval
        last: dict[int, tuple[int, int, int]] = {}  # ssrc -> (packets, bytes, expected)
        last_t = time.time()
        while not self.stopping and not p.closed:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):  # the socket may be closing
                await p.update_subscriptions()
            now = time.time()
            if self.info.get("first_frame_ms") is None and p.first_keyframe_s is not None:
                # From the first offer of a remote video (or from joining, if that came first):
                # what a participant waits for a picture, not when the others happened to publish.
                since = max(self.started_s, p.first_video_offer_s or self.started_s)
                self.info["first_frame_ms"] = (p.first_keyframe_s - since) * 1000
                self.info["first_frame_since_join_ms"] = (p.first_keyframe_s - self.started_s) * 1000
                self.event("webrtc", "first remote frame", self.info["first_frame_ms"])
            packets = nbytes = expected = 0
            kinds = {"audio": 0, "video": 0}
            for ssrc, c in list(p.counters.items()):
                lp, lb, le = last.get(ssrc, (0, 0, 0))
                packets += c.packets - lp
                nbytes += c.bytes - lb
                expected += c.expected - le
                kinds[c.kind] = kinds.get(c.kind, 0) + c.packets - lp
                last[ssrc] = (c.packets, c.bytes, c.expected)
            lost = max(0, expected - packets)
            lat, p.latencies_ms = p.latencies_ms, []
            dt = now - last_t
            lags = [lag for t, lag in list(self.peer_loop.lags) if t > last_t]
            last_t = now
            hist: dict[str, int] = {}
            for v in lat:
                key = f"{v:.1f}" if v < 20 else str(int(v))
                hist[key] = hist.get(key, 0) + 1
            self.records.append(
                {
                    "t": round(now, 3),
                    "dt": round(dt, 3),
                    "room": self.room,
                    "user": self.info.get("id"),
                    "publisher": self.publish,
                    "streams": len(p.counters),
                    "packets": packets,
                    "audio_packets": kinds.get("audio", 0),
                    "video_packets": kinds.get("video", 0),
                    "bytes": nbytes,
                    "expected": expected,
                    "lost": lost,
                    "latency_hist": hist,
                    "loop_lag_ms_max": round(max(lags, default=0.0), 1),
                }
            )
            if packets:
                self.event("rx", "packets/s", packets / dt, nbytes)
                self.event("rx", "kbit/s", nbytes * 8 / dt / 1000)
                self.event("rx", "loss %", 100.0 * lost / max(1, expected))
            n = self.opts.sfu_latency_samples
            for v in lat if len(lat) <= n else random.sample(lat, n):
                self.event("rx", "latency ms", v)

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.wait_for(self.peer.close(), 5)


# -- the locust side ----------------------------------------------------------------------


class Collector:
    """Per process: user infos and interval records; workers send theirs to the master."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}  # by user name, the latest version
        self.records: list[dict[str, Any]] = []
        self.pending_users: list[dict[str, Any]] = []
        self.pending_records: list[dict[str, Any]] = []

    def add_user(self, info: dict[str, Any], worker: bool) -> None:
        if worker:
            self.pending_users.append(dict(info))
        else:
            self.users[info["name"]] = dict(info)


COLLECTOR = Collector()
_user_numbers = itertools.count()


@events.init.add_listener
def _on_init(environment: Any, **_kw: Any) -> None:
    opts = environment.parsed_options
    if opts is None or isinstance(environment.runner, MasterRunner):
        return
    # Encode the clips now (first run only; cached), never during the test.
    load_clip("audio")
    if opts.sfu_simulcast:
        for _rid, width, height, bitrate in SIMULCAST_LAYERS:
            load_clip("video", width=width, height=height, bitrate=bitrate)
    else:
        load_clip("video")


@events.report_to_master.add_listener
def _on_report_to_master(client_id: str, data: dict[str, Any]) -> None:
    data["sfu_users"], COLLECTOR.pending_users = COLLECTOR.pending_users, []
    data["sfu_records"], COLLECTOR.pending_records = COLLECTOR.pending_records, []


@events.worker_report.add_listener
def _on_worker_report(client_id: str, data: dict[str, Any]) -> None:
    for info in data.get("sfu_users", []):
        COLLECTOR.users[info["name"]] = info
    COLLECTOR.records.extend(data.get("sfu_records", []))


@events.quitting.add_listener
def _on_quitting(environment: Any, **_kw: Any) -> None:
    opts = environment.parsed_options
    if opts is None or not opts.sfu_json or isinstance(environment.runner, WorkerRunner):
        return
    out = {
        "options": {k: v for k, v in vars(opts).items() if k.startswith("sfu_")}
        | {"users": opts.num_users, "host": opts.host, "run_time": opts.run_time},
        "users": sorted(COLLECTOR.users.values(), key=lambda u: u["name"]),
        "records": sorted(COLLECTOR.records, key=lambda r: r["t"]),
    }
    tmp = opts.sfu_json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, opts.sfu_json)


class SfuParticipant(User):
    """One participant: joins on start, leaves on stop, reports every interval."""

    wait_time = constant(0)  # the task sleeps for the report interval itself

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        runner = self.environment.runner
        self.number = next(_user_numbers)
        worker = runner.worker_index if isinstance(runner, WorkerRunner) else None
        self.worker = worker is not None
        if opts.sfu_room_size > 0:
            # Rooms are filled per process, so that workers never overfill one room.
            tag = "" if worker is None else f"w{worker}-"
            room = f"{opts.sfu_room_prefix}-{tag}{self.number // opts.sfu_room_size}"
            slot = self.number % opts.sfu_room_size
        else:
            room = opts.sfu_room_prefix
            # One room shared by all workers: only worker 0's first users publish.
            slot = self.number if worker in (None, 0) else 1 << 30
        publish = opts.sfu_publishers < 0 or slot < opts.sfu_publishers
        host = (self.host or "http://127.0.0.1:8080").rstrip("/")
        url = host + "/ws" if not host.endswith("/ws") else host
        self.loop = PeerLoop.get(opts.sfu_ice_host)
        self.session = PeerSession(url, room, f"load-{worker or 0}-{self.number}", publish, opts, self.loop)
        self.reported_user = False
        job = self.loop.submit(self.session.start())
        try:
            job.wait(30)
        except Exception as exc:
            self.session.info.setdefault("error", repr(exc))
            logger.warning("user %s: %r", self.number, exc)
        finally:
            COLLECTOR.add_user(self.session.info, self.worker)
            self.flush()

    def flush(self) -> None:
        fire = self.environment.events.request.fire
        out = self.session.out
        while out:
            kind, name, value, length, error = out.popleft()
            fire(
                request_type=kind,
                name=name,
                response_time=value,
                response_length=length,
                exception=RuntimeError(error) if error else None,
                context={},
            )
        lags = self.loop.lag_events
        while lags:
            fire(
                request_type="generator",
                name="loop lag ms",
                response_time=lags.popleft(),
                response_length=0,
                exception=None,
                context={},
            )
        records = self.session.records
        while records:
            rec = records.popleft()
            (COLLECTOR.pending_records if self.worker else COLLECTOR.records).append(rec)

    @task
    def report(self) -> None:
        gevent.sleep(self.environment.parsed_options.sfu_report_interval)
        self.flush()
        if "first_frame_ms" in self.session.info and not self.reported_user:
            self.reported_user = True
            COLLECTOR.add_user(self.session.info, self.worker)

    def on_stop(self) -> None:
        session = getattr(self, "session", None)
        if session is None:
            return
        try:
            self.loop.submit(session.stop()).wait(6)
        except Exception as exc:
            logger.warning("user %s: close: %r", self.number, exc)
        self.flush()

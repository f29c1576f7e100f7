"""Real node processes (``python -m sfu --workers N``, optionally with ``--redis-url``) for the
scale-out tests: started in their own process group, waited for until every worker answers,
killed with their whole group at teardown so that no worker outlives a test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from sfu import auth
from sfu.client import Participant
from tests.conftest import free_port

SECRET = "cluster-test-secret-" + "k" * 40
CLUSTER_SECRET = "cluster-internal-secret-" + "c" * 40
ROOT = Path(__file__).resolve().parent.parent


def admin_headers(room: str = "*") -> dict[str, str]:
    return {"Authorization": "Bearer " + auth.mint(SECRET, "ops", room, {"admin"}, 600)}


class NodeProcess:
    def __init__(
        self, workers: int = 2, redis_url: str = "", node_id: str = "", log_dir: Path | None = None, **env: str
    ) -> None:
        self.port = free_port()
        self.workers = workers
        self.node_id = node_id or f"node-{self.port}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"{self.url}/ws"
        self.env = {
            **os.environ,
            "SFU_AUTH_SECRET": SECRET,
            "SFU_ALLOW_OPEN_ROOMS": "true",
            "SFU_CLUSTER_SECRET": CLUSTER_SECRET,
            "SFU_ICE_HOST_ADDRESSES": "127.0.0.1",
            "SFU_HEARTBEAT_INTERVAL_S": "1.0",
            "SFU_NODE_ID": self.node_id,
            "SFU_ROOM_CAPACITY": "32",
            "SFU_SHUTDOWN_GRACE_S": "2",
            "SFU_LOG_LEVEL": "WARNING",
            **env,
        }
        self.args = [sys.executable, "-m", "sfu", "--port", str(self.port), "--workers", str(workers)]
        if redis_url:
            self.args += ["--redis-url", redis_url]
        self.log_path = (log_dir or Path("/tmp")) / f"sfu-node-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until /healthz says ok with every worker answering."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"node exited with {self.process.returncode}: {self.log_tail()}")
                try:
                    async with http.get(self.url + "/healthz") as r:
                        last = await r.json()
                        if last.get("status") == "ok" and last.get("workers") == self.workers:
                            return
                except (aiohttp.ClientError, OSError, ValueError) as exc:
                    last = exc
                await asyncio.sleep(0.2)
        raise AssertionError(f"node not ready within {timeout_s}s: {last}; {self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def get(self, path: str, **kw: Any) -> Any:
        async with aiohttp.ClientSession() as http, http.get(self.url + path, headers=admin_headers(), **kw) as r:
            return await r.json()

    async def node_view(self) -> dict[str, Any]:
        view: dict[str, Any] = await self.get("/admin/nodes")
        return view

    async def rooms(self) -> dict[str, dict[str, Any]]:
        listed = await self.get("/admin/rooms")
        return {r["name"]: r for r in listed.get("rooms", [])}

    async def worker_pid(self, worker_id: str) -> int:
        view = await self.node_view()
        pid = next(w["pid"] for w in view["workers"] if w["worker"] == worker_id)
        assert pid, view
        return int(pid)

    def kill(self) -> None:
        """SIGKILL the front process alone (its workers die with it)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def group_alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is None:  # (reaps the front once it exited, so the group can empty)
            return True
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def cleanup(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


class TimedParticipant(Participant):
    """A client that notes the arrival time of every RTP packet, by sending participant."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.arrivals: list[tuple[float, str]] = []

    async def _on_rtp(self, data: bytes, arrival_ms: int) -> None:
        await super()._on_rtp(data, arrival_ms)
        if len(data) >= 12:
            ssrc = int.from_bytes(data[8:12], "big")
            mid = self._ssrc_mid.get(ssrc)
            stream = self.streams.get(mid) if mid is not None else None
            if stream is not None:
                self.arrivals.append((time.monotonic(), stream.participant))

    def longest_gap_s(self, participant_id: str, start_s: float, end_s: float) -> float:
        times = [t for t, p in self.arrivals if p == participant_id and start_s <= t <= end_s]
        if len(times) < 2:
            return end_s - start_s
        edges = [times[0] - start_s, end_s - times[-1]]
        return max([b - a for a, b in zip(times, times[1:], strict=False)] + edges)


async def close_all(clients: list[Participant]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def close_code(client: Participant) -> int | None:
    ws = client._ws
    return ws.close_code if ws is not None else None


async def joined(url, room, name, publish=True, cls: type[Participant] = Participant, **kw):
    p = cls(url, room, name)
    await p.join()
    if publish:
        await p.publish(**kw)
    return p


async def placed(node, room, participants):
    """The room's entry in the cluster-wide admin listing once it reports ``participants``."""
    entry = {}

    async def check():
        entry.update((await node.rooms()).get(room, {}))
        return entry.get("participants") == participants

    async def wait():
        while not await check():
            await asyncio.sleep(0.2)

    await asyncio.wait_for(wait(), 20)
    return entry


async def eventually_async(check, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def registered_nodes(nodes: list[NodeProcess]) -> Any:
    """Start the nodes, wait until each is ready and all are in the shared registry; kill them
    (with their whole process groups) on the way out."""
    try:
        for node in nodes:
            node.start()
        await asyncio.gather(*(node.wait_ready() for node in nodes))

        async def registered() -> bool:
            return len((await nodes[0].node_view()).get("nodes", [])) == len(nodes)

        await eventually_async(registered, 20)
        yield nodes
    finally:
        for node in nodes:
            node.cleanup()

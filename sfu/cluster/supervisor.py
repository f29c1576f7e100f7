"""The front process's workers as child processes: started, restarted when they die (with a
backoff), stopped with the node.

Each worker is ``python -m sfu worker``, its settings written as one JSON line on its stdin,
which then stays open: the worker stops when it closes (the front exited) and is killed by
the kernel when the front dies (``PR_SET_PDEATHSIG``, set by the worker itself; see
``sfu.cluster.worker``). A worker keeps its internal port across restarts, so its URL in the
coordinator stays right.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable

from ..tasks import spawn
from .internal import WorkerSpec

logger = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
# A worker that ran this long before dying is restarted after the shortest backoff again.
STABLE_AFTER_S = 30.0


class WorkerProcess:
    """One worker: its process, restarted until ``stop``."""

    def __init__(self, index: int, spec: WorkerSpec, on_exit: Callable[[WorkerProcess], None]) -> None:
        self.index = index
        self.spec = spec
        self.url = f"http://{_url_host(spec.config.host)}:{spec.config.port}"
        self.process: asyncio.subprocess.Process | None = None
        self.ready = False  # answered its last load read
        self.restarts = 0
        self.exits = 0
        self._on_exit = on_exit
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def worker_id(self) -> str:
        return self.spec.worker_id

    @property
    def pid(self) -> int | None:
        process = self.process
        return process.pid if process is not None and process.returncode is None else None

    def start(self) -> None:
        if self._task is None:
            self._task = spawn(self._run(), name=f"worker-{self.index}")

    async def _start_process(self) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sfu", "worker", stdin=asyncio.subprocess.PIPE
        )
        assert process.stdin is not None
        process.stdin.write(json.dumps(self.spec.to_wire()).encode() + b"\n")
        await process.stdin.drain()
        return process

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff_s = BACKOFF_MIN_S
        while not self._stopping:
            started_s = loop.time()
            self.process = await self._start_process()
            logger.info("worker %s started (pid %d, %s)", self.worker_id, self.process.pid, self.url)
            code = await self.process.wait()
            self.ready = False
            self.exits += 1
            self._on_exit(self)
            if self._stopping:
                logger.info("worker %s stopped (exit %s)", self.worker_id, code)
                return
            if loop.time() - started_s > STABLE_AFTER_S:
                backoff_s = BACKOFF_MIN_S
            logger.warning("worker %s died (exit %s): restarting in %.1f s", self.worker_id, code, backoff_s)
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)
            self.restarts += 1

    def terminate(self) -> None:
        """SIGTERM: the worker drains (clients told, calls end or the grace runs out) and exits;
        it is not restarted."""
        self._stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)

    async def wait_stopped(self, timeout_s: float) -> None:
        """After ``terminate``: wait for the exit, SIGKILL past ``timeout_s``."""
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            process = self.process
            if process is not None and process.returncode is None:
                logger.warning("worker %s did not stop within %.0f s: killing it", self.worker_id, timeout_s)
                process.kill()
            await task


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host

"""One timer for the periodic work of every peer of an event loop.

Each peer ticks every TICK_INTERVAL_S (estimation, allocation, upstream NACKs, dynacast) and
sends its RTCP reports about once a second. One asyncio task per peer sleeping and waking for
that costs more than the work itself once there are many peers: every wake-up runs cold code
(the interpreter's caches were evicted by the packets in between) plus a timer, a future and a
task step. So one task per event loop wakes every TICK_INTERVAL_S and runs the due peers one
after the other, where all but the first run warm.

A peer is ``add``-ed once it is connected and ``discard``-ed when it closes; its ``periodic``
is called with no argument (the peer reads its own clock). An exception in one peer's work is
logged and never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol
from weakref import WeakKeyDictionary

from ..tasks import spawn

logger = logging.getLogger(__name__)


class Periodic(Protocol):
    def periodic(self) -> None: ...


class Ticker:
    """Calls ``periodic()`` of every added peer every ``interval_s``, in the order added."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._peers: dict[Periodic, None] = {}  # insertion-ordered set
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # wake-ups that ran at least one peer

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer: Periodic) -> bool:
        return peer in self._peers

    def add(self, peer: Periodic) -> None:
        self._peers[peer] = None
        if self._task is None or self._task.done():
            self._task = spawn(self._run(), name="ticker")

    def discard(self, peer: Periodic) -> None:
        self._peers.pop(peer, None)

    async def _run(self) -> None:
        try:
            while self._peers:
                await asyncio.sleep(self.interval_s)
                peers = list(self._peers)
                if peers:
                    self.rounds += 1
                for peer in peers:
                    if peer not in self._peers:
                        continue  # removed by an earlier peer's work in this round
                    try:
                        peer.periodic()
                    except Exception:
                        logger.exception("periodic work of %s failed", type(peer).__name__)
        except asyncio.CancelledError:
            # The loop is shutting down: keep nothing of it (nor the peers) alive.
            self._peers.clear()
            raise
        finally:
            self._task = None  # the done task would keep its loop, the registry's key, alive


_tickers: WeakKeyDictionary[asyncio.AbstractEventLoop, Ticker] = WeakKeyDictionary()


def ticker(interval_s: float) -> Ticker:
    """The running event loop's ticker (made on first use)."""
    loop = asyncio.get_running_loop()
    found = _tickers.get(loop)
    if found is None:
        found = _tickers[loop] = Ticker(interval_s)
    return found

"""sfu.rtc.ticker: one timer runs every peer's periodic work."""

import asyncio
import gc
import logging
import weakref

from sfu.rtc.ticker import Ticker, ticker


class Peer:
    def __init__(self, log, name, fail=False):
        self.log, self.name, self.fail = log, name, fail

    def periodic(self):
        self.log.append(self.name)
        if self.fail:
            raise RuntimeError("broken peer")


async def wait_for(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_every_added_peer_runs_each_round_in_the_order_added():
    log = []
    t = Ticker(0.01)
    a, b = Peer(log, "a"), Peer(log, "b")
    t.add(a)
    t.add(b)
    await wait_for(lambda: t.rounds >= 3)
    t.discard(a)
    t.discard(b)
    rounds = t.rounds
    assert log[: 2 * rounds] == ["a", "b"] * rounds


async def test_a_failing_peer_is_logged_and_the_others_still_run(caplog):
    log = []
    t = Ticker(0.01)
    broken, good = Peer(log, "broken", fail=True), Peer(log, "good")
    t.add(broken)
    t.add(good)
    with caplog.at_level(logging.ERROR, logger="sfu.rtc.ticker"):
        await wait_for(lambda: log.count("good") >= 3)
    assert log.count("broken") >= 3
    assert "periodic work of Peer failed" in caplog.text
    t.discard(broken)
    t.discard(good)


async def test_a_discarded_peer_is_not_called_again_and_the_timer_stops_when_none_is_left():
    log = []
    t = Ticker(0.01)
    a = Peer(log, "a")
    t.add(a)
    await wait_for(lambda: len(log) >= 2)
    t.discard(a)
    await wait_for(lambda: t._task is None)
    calls = len(log)
    await asyncio.sleep(0.05)
    assert len(log) == calls and a not in t and len(t) == 0
    t.add(a)  # the timer starts again
    await wait_for(lambda: len(log) > calls)
    t.discard(a)


async def test_a_peer_discarded_by_an_earlier_peer_in_the_same_round_is_skipped():
    log = []
    t = Ticker(0.01)
    victim = Peer(log, "victim")

    class Closer(Peer):
        def periodic(self):
            super().periodic()
            t.discard(victim)

    t.add(Closer(log, "closer"))
    t.add(victim)
    await wait_for(lambda: log.count("closer") >= 2)
    assert "victim" not in log
    t.discard(next(iter(t._peers)))


async def test_one_ticker_per_event_loop():
    assert ticker(0.2) is ticker(0.2)


def test_a_finished_event_loop_leaves_neither_its_ticker_nor_its_peers_alive():
    log = []

    async def main():
        peer = Peer(log, "left")
        ticker(0.01).add(peer)  # never discarded: the loop ends with the peer still on it
        await wait_for(lambda: log)
        return weakref.ref(peer), weakref.ref(asyncio.get_running_loop())

    peer, loop = asyncio.run(main())
    gc.collect()
    assert peer() is None and loop() is None

"""The in-memory coordinator: one host's shared state, the embedded default (no external
service).

``MemoryCoordinator`` keeps the registry, the placements and the participants in a
``MemoryState``; several coordinators may share one state (the front process of a host and,
in tests, several simulated nodes), each reading the time from its own clock. The TTL
semantics are those of ``RedisCoordinator``: a record written with ``ttl_s`` at time ``t`` is
live while ``now() < t + ttl_s``, and a record that is not live is as good as absent.

``choose_worker`` is the placement decision itself, pure; the Redis implementation runs the
same rule inside its Lua script (``redis_coordinator.py``), and the one test suite of
``tests/integration/test_coordinator.py`` holds both to it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from sfu.cluster.coordinator import (
    CoordinatorUnavailable,
    NoCapacity,
    NodeInfo,
    ParticipantEntry,
    Placement,
    RoomEntry,
    WorkerLoad,
)

# A room placed and not yet reported by its worker's node (set_room_participants) is kept this
# long, then forgotten; a report sets its own TTL.
ROOM_TTL_S = 30.0
# What a new room counts against its worker's tracks until the next heartbeat reports the real
# figure: one participant publishing audio and video. So a burst of new rooms spreads over the
# workers (and reaches their max_tracks) before any heartbeat.
NEW_ROOM_TRACKS = 2
# Refused placements of new rooms while the shared state is being written again.
RECOVERING = "recovering: the shared state was lost and the running rooms are being reported again"


def check_load(node: NodeInfo) -> None:
    """A heartbeat's figures must be finite numbers (a NaN CPU would make every comparison of
    the placement rule false); ``ValueError`` otherwise."""
    for w in node.workers:
        if not (math.isfinite(w.cpu_percent) and math.isfinite(w.max_cpu_percent)):
            raise ValueError(f"worker {w.worker_id}: CPU figures must be finite")


def placement_order(worker: WorkerLoad, prefer_node: str | None) -> tuple[int, int, int, str]:
    """The key that ``choose_worker`` minimises: fewest tracks, then the preferred node, then
    the fewest rooms, then the worker id (so the choice is deterministic)."""
    return (worker.tracks, 0 if worker.node_id == prefer_node else 1, worker.rooms, worker.worker_id)


def choose_worker(
    candidates: Iterable[tuple[NodeInfo, WorkerLoad]], prefer_node: str | None = None
) -> WorkerLoad | None:
    """The worker a new room goes to: among non-draining workers of non-draining nodes that are
    under their limit, the least-loaded one (``placement_order``); None when none qualifies.
    The caller passes live records only."""
    eligible = [w for node, w in candidates if not node.draining and not w.draining and w.under_limit()]
    if not eligible:
        return None
    return min(eligible, key=lambda w: placement_order(w, prefer_node))


@dataclass(slots=True)
class _NodeRecord:
    info: NodeInfo  # without its workers: they are records of their own
    worker_ids: tuple[str, ...]
    expires_s: float


@dataclass(slots=True)
class _WorkerRecord:
    load: WorkerLoad
    expires_s: float


@dataclass(slots=True)
class _RoomRecord:
    placement: Placement
    participants: tuple[ParticipantEntry, ...]
    expires_s: float


@dataclass(slots=True)
class MemoryState:
    """What a host's coordinators share: the records, each with its expiry time."""

    nodes: dict[str, _NodeRecord] = field(default_factory=dict)
    workers: dict[str, _WorkerRecord] = field(default_factory=dict)
    rooms: dict[str, _RoomRecord] = field(default_factory=dict)
    # The state lives while heartbeats come (until this time); a heartbeat that finds it gone
    # while its node runs rooms, or from a node that saw an earlier epoch, starts a recovery,
    # until recovering_until_s.
    epoch_expires_s: float = float("-inf")
    epoch: int = 0
    recovering_until_s: float = float("-inf")


class MemoryCoordinator:
    """The ``Coordinator`` of one host. Every method runs without awaiting, so each is one
    atomic step on the event loop; ``now`` is the clock (seconds) that TTLs are measured on."""

    def __init__(
        self,
        now: Callable[[], float] = time.monotonic,
        *,
        state: MemoryState | None = None,
        room_ttl_s: float = ROOM_TTL_S,
        new_room_tracks: int = NEW_ROOM_TRACKS,
    ) -> None:
        self._now = now
        self.state = state if state is not None else MemoryState()
        self._room_ttl_s = room_ttl_s
        self._new_room_tracks = new_room_tracks
        self._closed = False
        self._seen_epoch = 0  # the epoch of the state this coordinator last wrote into (0: none)

    async def start(self) -> None:
        self._check_open()

    async def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise CoordinatorUnavailable("the coordinator is closed")

    # -- liveness ---------------------------------------------------------------------------

    def _prune(self, now_s: float, *, rooms: bool = False) -> None:
        """Forget the nodes and workers that have expired, as Redis does, and the rooms too
        when asked (a heartbeat, the room list): single rooms are checked by ``_room``."""
        state = self.state
        tables: tuple[dict[str, _NodeRecord] | dict[str, _WorkerRecord] | dict[str, _RoomRecord], ...] = (
            (state.nodes, state.workers, state.rooms) if rooms else (state.nodes, state.workers)
        )
        for table in tables:
            for key in [k for k, rec in table.items() if rec.expires_s <= now_s]:
                del table[key]

    def _room(self, room: str, now_s: float) -> _RoomRecord | None:
        """The room's record unless it has expired (then it is forgotten)."""
        record = self.state.rooms.get(room)
        if record is not None and record.expires_s <= now_s:
            del self.state.rooms[room]
            return None
        return record

    def _live_worker(self, worker_id: str) -> tuple[NodeInfo, WorkerLoad] | None:
        """The worker and its node if both are live (call after ``_prune``)."""
        worker = self.state.workers.get(worker_id)
        if worker is None:
            return None
        node = self.state.nodes.get(worker.load.node_id)
        if node is None:
            return None
        return node.info, worker.load

    # -- registry ---------------------------------------------------------------------------

    async def heartbeat(self, node: NodeInfo, ttl_s: float) -> None:
        self._check_open()
        check_load(node)
        now_s = self._now()
        self._prune(now_s, rooms=True)
        state = self.state
        expires_s = now_s + ttl_s
        lost = False
        if state.epoch_expires_s <= now_s:
            state.epoch += 1
            lost = any(w.rooms > 0 for w in node.workers)
        if self._seen_epoch and self._seen_epoch != state.epoch:
            lost = True
        if lost and state.recovering_until_s <= now_s:
            state.recovering_until_s = expires_s
        state.epoch_expires_s = max(state.epoch_expires_s, expires_s)
        self._seen_epoch = state.epoch
        previous = state.nodes.get(node.node_id)
        reported = {w.worker_id for w in node.workers}
        if previous is not None:
            for worker_id in previous.worker_ids:
                if worker_id not in reported:
                    state.workers.pop(worker_id, None)
        state.nodes[node.node_id] = _NodeRecord(
            replace(node, workers=()), tuple(w.worker_id for w in node.workers), expires_s
        )
        for worker in node.workers:
            state.workers[worker.worker_id] = _WorkerRecord(replace(worker, node_id=node.node_id), expires_s)

    async def remove_node(self, node_id: str) -> None:
        self._check_open()
        state = self.state
        record = state.nodes.pop(node_id, None)
        if record is not None:
            for worker_id in record.worker_ids:
                state.workers.pop(worker_id, None)
        for worker_id in [k for k, w in state.workers.items() if w.load.node_id == node_id]:
            del state.workers[worker_id]
        for room in [k for k, r in state.rooms.items() if r.placement.node_id == node_id]:
            del state.rooms[room]

    async def nodes(self) -> list[NodeInfo]:
        self._check_open()
        self._prune(self._now())
        state = self.state
        listed = []
        for node_id in sorted(state.nodes):
            record = state.nodes[node_id]
            workers = tuple(state.workers[w].load for w in record.worker_ids if w in state.workers)
            listed.append(replace(record.info, workers=workers))
        return listed

    # -- placement --------------------------------------------------------------------------

    async def place_room(self, room: str, *, prefer_node: str | None = None) -> Placement:
        self._check_open()
        now_s = self._now()
        self._prune(now_s)
        state = self.state
        current = self._room(room, now_s)
        if current is not None and self._live_worker(current.placement.worker_id) is not None:
            current.expires_s = max(current.expires_s, now_s + self._room_ttl_s)
            return current.placement
        if now_s < state.recovering_until_s:
            raise CoordinatorUnavailable(RECOVERING)
        candidates = [live for w in state.workers if (live := self._live_worker(w)) is not None]
        chosen = choose_worker(candidates, prefer_node)
        if chosen is None:
            raise NoCapacity(f"no live worker under its limit for room {room!r}")
        placement = Placement(room=room, worker_id=chosen.worker_id, node_id=chosen.node_id, url=chosen.url)
        state.rooms[room] = _RoomRecord(placement, (), now_s + self._room_ttl_s)
        record = state.workers[chosen.worker_id]
        record.load = replace(
            record.load, rooms=record.load.rooms + 1, tracks=record.load.tracks + self._new_room_tracks
        )
        return placement

    async def placement(self, room: str) -> Placement | None:
        self._check_open()
        now_s = self._now()
        self._prune(now_s)
        current = self._room(room, now_s)
        if current is None or self._live_worker(current.placement.worker_id) is None:
            return None
        return current.placement

    async def release_room(self, room: str, worker_id: str) -> None:
        self._check_open()
        current = self._room(room, self._now())
        if current is not None and current.placement.worker_id == worker_id:
            del self.state.rooms[room]

    async def set_room_participants(
        self, room: str, placement: Placement, participants: tuple[ParticipantEntry, ...], ttl_s: float
    ) -> None:
        """Writes the placement back if it is gone (expired, or the shared state was lost) or
        if it names a worker that is not live; leaves it alone if another live worker holds
        the room (that worker won the room; the caller sees it in ``placement``)."""
        self._check_open()
        now_s = self._now()
        self._prune(now_s)
        current = self._room(room, now_s)
        if (
            current is not None
            and current.placement.worker_id != placement.worker_id
            and self._live_worker(current.placement.worker_id) is not None
        ):
            return
        unique = tuple({p.participant_id: p for p in participants}.values())
        self.state.rooms[room] = _RoomRecord(placement, unique, now_s + ttl_s)

    async def rooms(self) -> list[RoomEntry]:
        self._check_open()
        self._prune(self._now(), rooms=True)
        listed = []
        for room in sorted(self.state.rooms):
            record = self.state.rooms[room]
            if self._live_worker(record.placement.worker_id) is None:
                continue
            participants = tuple(sorted(record.participants, key=lambda p: p.participant_id))
            listed.append(RoomEntry(room=room, placement=record.placement, participants=participants))
        return listed

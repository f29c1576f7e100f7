"""The coordination interface: what the processes of a deployment share, and nothing else.

A *node* is one host's ``python -m sfu`` (its front process and its workers); a *worker* is one
process that owns rooms' media. Every record here is written by its owner and carries a TTL
that its owner refreshes (``heartbeat``), so nothing outlives a process that died: a node whose
heartbeat stops is gone from ``nodes()`` after ``ttl_s`` and its workers are never chosen
again; a room placed on such a worker is placed anew by the next ``place_room``.

Two implementations behave the same and are tested by one suite: ``MemoryCoordinator`` (one
host, the embedded default, no external service) and ``RedisCoordinator`` (a cluster of hosts
sharing one Redis server). Pure data types only here: no aiohttp, no aiortc.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class CoordinatorError(Exception):
    """Base of the coordinator's errors."""


class CoordinatorUnavailable(CoordinatorError):
    """The shared state cannot be reached (Redis down or timing out), or ``place_room`` was
    asked for a new room while the state recovers (docs/scaling.md, "Shared state"). Rooms
    already placed keep running; a join that needs a placement is refused with
    ``unavailable``."""


class NoCapacity(CoordinatorError):
    """No live, non-draining worker is under its limit."""


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """One worker as its node reports it at each heartbeat."""

    worker_id: str  # unique in the cluster: "<node_id>/<index>"
    node_id: str
    url: str  # internal base URL of the worker's HTTP/WebSocket server, e.g. http://10.0.0.2:9101
    tracks: int = 0  # producers in + consumers out
    rooms: int = 0
    participants: int = 0
    cpu_percent: float = 0.0  # of one core, over the last heartbeat interval
    max_tracks: int = 0  # its placement limit (max_tracks_per_worker); 0: no limit
    max_cpu_percent: float = 0.0  # its CPU ceiling for new rooms; 0: no ceiling
    draining: bool = False  # takes no new room; the rooms placed on it stay there

    def under_limit(self) -> bool:
        if self.max_tracks and self.tracks >= self.max_tracks:
            return False
        return not (self.max_cpu_percent and self.cpu_percent >= self.max_cpu_percent)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    public_url: str  # where clients reach this node's front (http(s)://host:port)
    draining: bool = False  # SIGTERM received: no new room is placed here
    workers: tuple[WorkerLoad, ...] = ()


@dataclass(frozen=True, slots=True)
class Placement:
    room: str
    worker_id: str
    node_id: str
    url: str  # the worker's internal base URL


@dataclass(frozen=True, slots=True)
class ParticipantEntry:
    participant_id: str
    name: str


@dataclass(frozen=True, slots=True)
class RoomEntry:
    """A room as the admin API lists it cluster-wide."""

    room: str
    placement: Placement
    participants: tuple[ParticipantEntry, ...] = field(default=())


class Coordinator(Protocol):
    """Shared state of a deployment. Every method may raise ``CoordinatorUnavailable``."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def heartbeat(self, node: NodeInfo, ttl_s: float) -> None:
        """Write (or refresh) the node and its workers with their load; they expire after
        ``ttl_s`` without another heartbeat."""
        ...

    async def remove_node(self, node_id: str) -> None:
        """A clean stop: the node, its workers and its rooms' placements go at once."""
        ...

    async def nodes(self) -> list[NodeInfo]:
        """The live nodes (heartbeat within their TTL), with their workers."""
        ...

    async def place_room(self, room: str, *, prefer_node: str | None = None) -> Placement:
        """One atomic step: the room's placement if its worker is live, otherwise the
        least-loaded live worker of a non-draining node that is under its limit (ties: the
        preferred node, then the fewest rooms), recorded for the room and counted against that
        worker's load at once (so a burst of new rooms spreads before the next heartbeat).
        Concurrent calls for one room, from any number of nodes, all return the same placement.
        Raises ``NoCapacity`` when no worker qualifies."""
        ...

    async def placement(self, room: str) -> Placement | None:
        """The room's placement if its worker is live, else None (nothing is placed)."""
        ...

    async def release_room(self, room: str, worker_id: str) -> None:
        """The room ended on ``worker_id``: forget its placement and participants, but only if
        it is still placed there (a room placed anew elsewhere is left alone)."""
        ...

    async def set_room_participants(
        self, room: str, placement: Placement, participants: tuple[ParticipantEntry, ...], ttl_s: float
    ) -> None:
        """The owner worker's node reports who is in the room (refreshes the placement's TTL
        too); expires after ``ttl_s`` without another report."""
        ...

    async def rooms(self) -> list[RoomEntry]:
        """Every placed room on a live worker, cluster-wide, with its participants."""
        ...

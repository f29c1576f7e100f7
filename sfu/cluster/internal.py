"""What a node's front process and its workers agree on: the headers of the internal hops,
the settings a worker is started with, and the load report it answers with. Pure values."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from ..config import Config, from_mapping, to_mapping

# Every internal request carries the deployment's secret; a worker refuses any other
# (except /healthz, which says nothing).
SECRET_HEADER = "X-SFU-Cluster-Secret"
# The client's own address, so that a worker's per-address limits and logs see it.
CLIENT_ADDRESS_HEADER = "X-SFU-Client-Address"
LOAD_PATH = "/internal/load"


def worker_id(node_id: str, index: int) -> str:
    return f"{node_id}/{index}"


def participant_id_prefix(worker: str) -> str:
    """A short prefix that makes a worker's participant ids unique in the cluster (and keeps
    them to URL-safe characters: the admin API puts them in paths)."""
    return "w" + hashlib.sha256(worker.encode()).hexdigest()[:6] + "-"


def ice_port_slice(config: Config, index: int, count: int) -> tuple[int, int]:
    """Worker ``index``'s share of ice_port_min..ice_port_max ((0, 0): any port)."""
    if not config.ice_port_min:
        return 0, 0
    span = (config.ice_port_max - config.ice_port_min + 1) // count
    low = config.ice_port_min + index * span
    high = config.ice_port_max if index == count - 1 else low + span - 1
    return low, high


def worker_config(config: Config, index: int, count: int, port: int) -> Config:
    """The settings of worker ``index``: the node's, listening on the internal address, with its
    slice of the ICE port range, as one plain process (never a node of its own)."""
    low, high = ice_port_slice(config, index, count)
    return replace(
        config,
        host=config.cluster_host,
        port=port,
        ice_port_min=low,
        ice_port_max=high,
        workers=1,
        redis_url="",
        tls_cert_file=None,
        tls_key_file=None,
        tls_self_signed=False,
        # The front decided who may join: the worker decides the same (open rooms on the node
        # are open rooms on the worker, whatever its internal address).
        allow_open_rooms=config.open_rooms,
        # The front checks the token of a scrape and adds the node's labels.
        metrics_public=True,
    )


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker process is started with (one JSON line on its stdin)."""

    worker_id: str
    secret: str
    parent_pid: int
    config: Config

    @property
    def worker_id_prefix(self) -> str:
        return participant_id_prefix(self.worker_id)

    def validated(self) -> WorkerSpec:
        self.config.validate()
        if not self.secret:
            raise ValueError("a worker needs the cluster secret")
        return self

    def to_wire(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "secret": self.secret,
            "parent_pid": self.parent_pid,
            "config": to_mapping(self.config),
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> WorkerSpec:
        return cls(
            worker_id=str(data["worker_id"]),
            secret=str(data["secret"]),
            parent_pid=int(data["parent_pid"]),
            config=from_mapping(dict(data["config"]), "worker settings"),
        )


@dataclass(frozen=True, slots=True)
class RoomReport:
    room: str
    participants: tuple[tuple[str, str], ...]  # (id, name)


@dataclass(frozen=True, slots=True)
class LoadReport:
    """A worker's answer on /internal/load."""

    worker_id: str
    pid: int
    tracks: int
    participants: int
    cpu_percent: float  # of one core, since the previous report
    draining: bool
    rooms: tuple[RoomReport, ...]

    def to_wire(self) -> dict[str, Any]:
        return {
            "worker": self.worker_id,
            "pid": self.pid,
            "tracks": self.tracks,
            "participants": self.participants,
            "cpu_percent": self.cpu_percent,
            "draining": self.draining,
            "rooms": [
                {"room": r.room, "participants": [{"id": i, "name": n} for i, n in r.participants]} for r in self.rooms
            ],
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> LoadReport:
        return cls(
            worker_id=str(data["worker"]),
            pid=int(data["pid"]),
            tracks=int(data["tracks"]),
            participants=int(data["participants"]),
            cpu_percent=float(data["cpu_percent"]),
            draining=bool(data["draining"]),
            rooms=tuple(
                RoomReport(str(r["room"]), tuple((str(p["id"]), str(p["name"])) for p in r["participants"]))
                for r in data["rooms"]
            ),
        )

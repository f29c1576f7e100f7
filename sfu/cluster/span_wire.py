"""What a front and its workers agree on about rooms that span workers (sfu/cluster/span.py):
the headers of a client's socket to a worker that is not its room's home, and the internal
paths. Pure values, so that a front (which holds no room) need not import the room code."""

from __future__ import annotations

from .coordinator import Placement

SPAN_PATH = "/internal/span/{room}"  # the home's end of a shard's control channel
LINKS_PATH = "/internal/links"  # a worker's media links and spanning rooms (JSON)
# A client's socket to a worker that is not its room's home: the room, and its home worker.
ROOM_HEADER = "X-SFU-Room"
HOME_URL_HEADER = "X-SFU-Room-Home"
HOME_WORKER_HEADER = "X-SFU-Room-Home-Worker"


def spanning_headers(room: str, home: Placement) -> dict[str, str]:
    """The headers of a client's socket to a worker that is not the room's home (``home``: the
    room's placement)."""
    return {ROOM_HEADER: room, HOME_URL_HEADER: home.url, HOME_WORKER_HEADER: home.worker_id}

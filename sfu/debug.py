"""Memory diagnostics for an operator: ``GET /admin/debug/memory`` (a token for every room
with the admin grant, like the rest of the admin API).

The answer counts the live objects of the server's own classes and of aiortc's connection
objects (a full ``gc`` pass, so a few tens of milliseconds: not for frequent scraping), the
event loop's tasks, and the bytes the C allocator holds. With ``SFU_TRACEMALLOC=<frames>`` in
the environment the server traces Python allocations from start-up (this costs CPU and memory;
off by default) and the answer adds the traced total and the allocation sites that grew most
since the previous request (``?top=N``, default 15). ``?trim=1`` first returns the C allocator's
free memory to the system (glibc ``malloc_trim``) and reports the RSS before and after: what
comes back was free memory the allocator had kept, not live data.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import tracemalloc
from collections import Counter
from typing import Any

from aiohttp import web

from .errors import SignalingError
from .forwarding import Consumer, Producer
from .room import Participant, Room
from .rtc.publish import PublishPeer
from .rtc.subscribe import SubscribePeer
from .signaling.http import _fail, admin_claims
from .signaling.ws import Session

TRACEMALLOC_ENV = "SFU_TRACEMALLOC"

# Classes whose instances live as long as a participant, a connection or a stream.
# Our own are named from the classes themselves, so that a class that moves stays counted.
TRACKED = (
    *(f"{cls.__module__}.{cls.__qualname__}" for cls in (Participant, Room, Session, Producer, Consumer)),
    *(f"{cls.__module__}.{cls.__qualname__}" for cls in (PublishPeer, SubscribePeer)),
    "aiortc.rtcpeerconnection.RTCPeerConnection",
    "aiortc.rtcdtlstransport.RTCDtlsTransport",
    "aiortc.rtcicetransport.RTCIceTransport",
    "aiortc.rtcrtpsender.RTCRtpSender",
    "aiortc.rtcrtpreceiver.RTCRtpReceiver",
    "aioice.ice.Connection",
)

_previous: tracemalloc.Snapshot | None = None


def start_tracing() -> None:
    """Start tracemalloc if ``SFU_TRACEMALLOC`` asks for it (its value: frames per trace)."""
    frames = os.environ.get(TRACEMALLOC_ENV, "")
    if frames and not tracemalloc.is_tracing():
        tracemalloc.start(max(1, int(frames)) if frames.isdigit() else 1)


def object_counts() -> dict[str, int]:
    """Live instances of the TRACKED classes, after a full collection."""
    gc.collect()
    wanted = set(TRACKED)
    counts: Counter[str] = Counter({name: 0 for name in TRACKED})
    for obj in gc.get_objects():
        cls = type(obj)
        name = f"{cls.__module__}.{cls.__qualname__}"
        if name in wanted:
            counts[name] += 1
    return dict(counts)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def _malloc_trim() -> bool:
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


def report(top: int, trim: bool) -> dict[str, Any]:
    global _previous
    out: dict[str, Any] = {"objects": object_counts(), "tasks": len(asyncio.all_tasks())}
    out["rss_bytes"] = _rss_bytes()
    if trim:
        out["trimmed"] = _malloc_trim()
        out["rss_after_trim_bytes"] = _rss_bytes()
    if tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            (
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            )
        )
        growth = []
        if _previous is not None:
            for stat in snapshot.compare_to(_previous, "lineno")[:top]:
                frame = stat.traceback[0]
                growth.append(
                    {
                        "where": f"{frame.filename}:{frame.lineno}",
                        "size_diff_bytes": stat.size_diff,
                        "count_diff": stat.count_diff,
                        "size_bytes": stat.size,
                    }
                )
        _previous = snapshot
        out["tracemalloc"] = {"traced_bytes": current, "peak_bytes": peak, "growth_since_previous": growth}
    return out


async def memory(request: web.Request) -> web.Response:
    try:
        admin_claims(request, None)
        top = int(request.query.get("top", "15"))
    except SignalingError as exc:
        return _fail(request, exc)
    except ValueError:
        return _fail(request, SignalingError("bad-message", "top must be an integer"))
    return web.json_response(report(max(0, min(top, 200)), request.query.get("trim") == "1"))

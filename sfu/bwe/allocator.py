"""Fitting one subscriber's videos into its downlink estimate.

Order of service: audio first (always), then screen shares, then the videos the subscriber
pinned, then the active speaker's, then the others by requested height (a bigger tile first). Each video gets its
lowest layer if it fits, else it is paused for bandwidth; then videos are raised, in the same
order, towards the layer they asked for while the budget lasts.

Against flapping (the anchors' users' top complaint) the decisions have hysteresis:
- down fast: when the current estimate no longer carries the current allocation, step down now;
- up slowly: step up only to what the *lowest* estimate of the last UPGRADE_HOLD_MS carries,
  with UPGRADE_HEADROOM to spare, so one good sample never raises a layer; an estimate a
  completed bandwidth probe has just shown to get through counts as held (``confirm``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from enum import IntEnum, StrEnum

UPGRADE_HOLD_MS = 1500
UPGRADE_HEADROOM = 0.85  # use at most 85 % of the held estimate when stepping up
AUDIO_BPS = 50_000

PAUSED = -1  # the layer "index" of a video that gets no layer at all


class Reason(StrEnum):
    """Why a video got the layer it got (told to clients in ``track-quality``, and logged)."""

    FITS = "fits"  # what it asked for (or the best the publisher sends) fits the estimate
    REQUESTED = "requested"  # the subscriber paused it (or it is muted)
    BANDWIDTH = "bandwidth"  # held back (or paused) for lack of downlink bandwidth
    UNCONSTRAINED = "unconstrained"  # no estimate yet: nothing limits


REASON_FITS = Reason.FITS
REASON_REQUESTED = Reason.REQUESTED
REASON_BANDWIDTH = Reason.BANDWIDTH
REASON_UNCONSTRAINED = Reason.UNCONSTRAINED


class Priority(IntEnum):
    """Order of service when bandwidth is short (lowest value first)."""

    SCREEN = 0
    PINNED = 1
    SPEAKER = 2
    NORMAL = 3

    @property
    def label(self) -> str:
        """How the priority is shown in logs and describe()."""
        return PRIORITY_NAMES[self]


PRIORITY_SCREEN, PRIORITY_PINNED, PRIORITY_SPEAKER, PRIORITY_NORMAL = (
    Priority.SCREEN,
    Priority.PINNED,
    Priority.SPEAKER,
    Priority.NORMAL,
)
PRIORITY_NAMES = {
    Priority.SCREEN: "screen",
    Priority.PINNED: "pinned",
    Priority.SPEAKER: "active-speaker",
    Priority.NORMAL: "normal",
}


@dataclass(frozen=True)
class VideoDemand:
    key: Hashable
    priority: int  # a Priority
    wanted_layer: int  # highest layer the subscriber wants (PAUSED: wants none)
    layer_bps: tuple[int, ...]  # measured bitrate of each layer, lowest first (0: not sent)
    requested_height: int = 0  # for ordering within a priority


@dataclass(frozen=True, slots=True)
class Allocation:
    """The allocator's decision for one video, handed to its consumer as is."""

    layer: int  # PAUSED or a layer index
    reason: Reason

    @property
    def paused_for_bandwidth(self) -> bool:
        return self.layer == PAUSED and self.reason is Reason.BANDWIDTH

    @property
    def layer_cap(self) -> int | None:
        """The highest layer the downlink carries (None: the downlink sets no cap)."""
        if self.layer < 0 or self.reason is Reason.UNCONSTRAINED:
            return None
        return self.layer


def allocate(
    budget_bps: float,
    audio_streams: int,
    demands: list[VideoDemand],
    may_pause: bool = True,
    audio_bps: float | None = None,
) -> dict[Hashable, Allocation]:
    """One allocation for one budget, without history.

    ``may_pause`` False keeps every video at least at its lowest layer (used when only the
    delay-based estimate is low, which on a busy host can be scheduling noise, not the network).
    """
    remaining = budget_bps - (audio_bps if audio_bps is not None else audio_streams * AUDIO_BPS)
    order = sorted(demands, key=lambda d: (d.priority, -d.requested_height))
    out: dict[Hashable, Allocation] = {}
    chosen: dict[Hashable, int] = {}
    for d in order:
        if d.wanted_layer == PAUSED:
            out[d.key] = Allocation(PAUSED, REASON_REQUESTED)
            continue
        lowest = _lowest_sent(d)
        cost = d.layer_bps[lowest] if lowest is not None else 0
        if lowest is None or cost <= remaining or not may_pause:
            chosen[d.key] = lowest if lowest is not None else 0
            remaining -= cost
        else:
            out[d.key] = Allocation(PAUSED, REASON_BANDWIDTH)
    for d in order:
        if d.key not in chosen:
            continue
        layer = chosen[d.key]
        for candidate in range(layer + 1, min(d.wanted_layer, len(d.layer_bps) - 1) + 1):
            extra = d.layer_bps[candidate] - d.layer_bps[layer]
            if d.layer_bps[candidate] == 0:
                continue  # not sent by the publisher now
            if extra <= remaining:
                remaining -= extra
                layer = candidate
            else:
                break
        chosen[d.key] = layer
        reason = REASON_FITS if layer >= min(d.wanted_layer, _highest_sent(d)) else REASON_BANDWIDTH
        out[d.key] = Allocation(layer, reason)
    return out


def _lowest_sent(d: VideoDemand) -> int | None:
    for i, bps in enumerate(d.layer_bps):
        if bps > 0:
            return i
    return None


def _highest_sent(d: VideoDemand) -> int:
    sent = [i for i, bps in enumerate(d.layer_bps) if bps > 0]
    return max(sent) if sent else 0


class StreamAllocator:
    """Allocation with hysteresis for one subscriber."""

    def __init__(self) -> None:
        self._estimates: deque[tuple[float, float]] = deque()
        self._confirmed = False  # the oldest estimate kept is a probe's confirmed one
        self.current: dict[Hashable, Allocation] = {}

    def confirm(self, now_ms: float, estimate_bps: int) -> None:
        """A probe has just carried ``estimate_bps`` without congestion: treat it as held."""
        self._estimates = deque([(now_ms, estimate_bps)])
        self._confirmed = True

    def update(
        self,
        now_ms: float,
        estimate_bps: int | None,
        audio_streams: int,
        demands: list[VideoDemand],
        may_pause: bool = True,
        audio_bps: float | None = None,
    ) -> dict[Hashable, Allocation]:
        """New allocations; also kept in ``current``. estimate None: nothing limits."""
        if estimate_bps is None:
            self._estimates.clear()
            self.current = {
                d.key: Allocation(
                    d.wanted_layer, REASON_REQUESTED if d.wanted_layer == PAUSED else REASON_UNCONSTRAINED
                )
                for d in demands
            }
            return self.current
        self._estimates.append((now_ms, estimate_bps))
        while self._estimates and self._estimates[0][0] < now_ms - UPGRADE_HOLD_MS:
            self._estimates.popleft()
        held = min(e for _, e in self._estimates)
        held_long_enough = self._confirmed or now_ms - self._estimates[0][0] >= UPGRADE_HOLD_MS * 0.8
        self._confirmed = False
        now_alloc = allocate(estimate_bps, audio_streams, demands, may_pause, audio_bps)
        up_alloc = allocate(held * UPGRADE_HEADROOM, audio_streams, demands, may_pause, audio_bps)
        result: dict[Hashable, Allocation] = {}
        for d in demands:
            fresh = now_alloc[d.key]
            previous = self.current.get(d.key)
            if previous is None or d.wanted_layer == PAUSED:
                result[d.key] = fresh if previous is None else now_alloc[d.key]
                continue
            if fresh.layer < previous.layer:
                result[d.key] = fresh  # down fast
            elif held_long_enough and min(up_alloc[d.key].layer, fresh.layer) > previous.layer:
                # Up only on a held estimate, and never above what the current one carries (with
                # priorities the two orders can differ: stepping up there would step down next).
                result[d.key] = min(up_alloc[d.key], fresh, key=lambda a: a.layer)
            elif previous.layer > min(d.wanted_layer, _highest_sent(d)):
                result[d.key] = fresh  # the subscriber asked for less, or the layer is gone
            else:
                result[d.key] = Allocation(
                    previous.layer, fresh.reason if fresh.layer == previous.layer else REASON_BANDWIDTH
                )
        self.current = result
        return result

"""Dynacast: ask publishers to send only the simulcast layers some subscriber needs.

A publisher's encoder spends CPU and uplink on every layer it sends, yet a layer that no
consumer forwards is thrown away by the server. So, per published video, the server works out
how many of the lowest layers are needed (layers are ordered low → high, and a consumer that
wants layer i also needs every layer below it, see ``needed_layers``) and tells the publisher
when that changes (``layers`` message, docs/protocol.md).

The need follows what subscribers *request* (their ``subscription``: height cap, paused), not
what their downlink carries right now: a subscriber held back by its bandwidth estimate still
needs the layers it asked for running, so that it can climb back to them as soon as its
estimate allows (the allocator only moves between layers that arrive, and probing for more
bandwidth is pointless if the layer it would lead to is switched off).

Against toggling encoders on and off (a tile being resized, a tab hidden for a moment) a layer
is switched off only when it has not been needed for ``HOLD_MS``; it is switched on at once.
A new producer starts with everything on, and the hold counts from its creation, so it is not
stopped before its first subscribers had a chance to arrive.

Pure: no I/O, time is an argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

HOLD_MS = 3000


class _Layer(Protocol):
    height: int


class _Consumer(Protocol):
    closed: bool
    paused: bool
    max_height: int | None


def wanted_layer(max_height: int | None, layers: Sequence[_Layer]) -> int:
    """The highest layer a subscriber capped at ``max_height`` may receive.

    Unlike the consumer's own choice, a layer whose height is not known yet counts as fitting
    (its height is learnt from its keyframes, so it must run to be measured), unless a lower
    layer is already too tall (heights grow with the layer index).
    """
    if max_height is None:
        return len(layers) - 1
    best = 0
    for index in range(1, len(layers)):
        height = layers[index].height
        if height > max_height:
            break
        best = index
    return best


def needed_layers(consumers: Sequence[_Consumer], layers: Sequence[_Layer]) -> tuple[int, str]:
    """How many of the lowest layers the consumers need (0: none at all), and why."""
    live = [c for c in consumers if not c.closed]
    if not live:
        return 0, "no subscribers"
    wanting = [c for c in live if not c.paused]
    if not wanting:
        return 0, f"all {len(live)} subscribers paused it"
    top = max(wanted_layer(c.max_height, layers) for c in wanting)
    return top + 1, f"{len(wanting)} subscriber(s) want up to layer {top}"


class LayerNeed:
    """What one producer's publisher is asked to send: the lowest ``active`` layers.

    ``update`` raises ``active`` at once and lowers it only to the highest layer needed at some
    moment of the last ``hold_ms``.
    """

    def __init__(self, layer_count: int, now_ms: int, hold_ms: int = HOLD_MS) -> None:
        self.layer_count = layer_count
        self.hold_ms = hold_ms
        self.active = layer_count  # a publisher starts sending every layer
        self._needed_at_ms = [now_ms] * layer_count  # when each layer was last needed
        self._needed = 0  # the need at the previous update

    def update(self, now_ms: int, needed: int) -> bool:
        """Take the current need into account; True when ``active`` changed."""
        needed = max(0, min(needed, self.layer_count))
        # A layer needed at the previous update was needed until now.
        for index in range(max(needed, self._needed)):
            self._needed_at_ms[index] = now_ms
        self._needed = needed
        active = needed
        for index in range(needed, self.layer_count):
            if now_ms - self._needed_at_ms[index] < self.hold_ms:
                active = index + 1
        if active == self.active:
            return False
        self.active = active
        return True

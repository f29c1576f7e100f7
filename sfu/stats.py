"""Counters kept as plain integers where things happen, and the totals of objects that are
gone (``RetiredTotals``), so that /metrics (sfu/metrics.py) never goes backwards.

Nothing here imports the room or the peers: the walkers read what they count through the
``Counted*`` shapes below.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


class CountedParticipant(Protocol):
    """What the totals read of a participant: its two peers (each may be absent)."""

    @property
    def publisher(self) -> Any: ...

    @property
    def subscriber(self) -> Any: ...


@dataclass
class ServerStats:
    """Counters of the signaling layer (plain integers, bumped where things happen)."""

    joins: int = 0
    auth_failures: int = 0
    kicks: int = 0
    errors_by_code: Counter[str] = field(default_factory=Counter)
    started_at_s: float = field(default_factory=time.time)

    # Signaling limits that refused or dropped something, by limit (docs/protocol.md, Limits).
    limited: Counter[str] = field(default_factory=Counter)

    def count_error(self, code: str) -> None:
        self.errors_by_code[code] += 1

    def count_limit(self, limit: str) -> None:
        self.limited[limit] += 1


@dataclass
class DataStats:
    """Data channel messages (sfu/data_relay.py), for the process: plain integers."""

    received: int = 0  # messages that arrived on publish connections' channels
    relayed: int = 0  # ... that were accepted and relayed
    relayed_bytes: int = 0  # frame bytes of those
    deliveries: int = 0  # copies sent to subscribers
    delivered_bytes: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # by reason (data_relay.DROP_REASONS)


@dataclass
class Totals:
    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    packets_dropped: int = 0
    keyframe_requests: int = 0
    malformed_packets: int = 0
    unroutable_packets: int = 0
    ssrcs_over_limit: int = 0
    layer_changes: int = 0
    twcc_feedback_sent: int = 0
    nacks_received: int = 0
    retransmitted: int = 0
    upstream_nacks: int = 0
    packets_repaired: int = 0

    def add(self, other: Totals) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def producer_totals(producer: Any, into: Totals) -> None:
    layers = getattr(producer, "layers", None)
    stats = [layer.stats for layer in layers] if layers else [producer.stats]
    for s in stats:
        into.packets_in += s.packets
        into.bytes_in += s.bytes
    into.packets_dropped += producer.packets_dropped
    into.keyframe_requests += producer.keyframe_requests_sent
    for layer in layers or ():
        nack = getattr(layer, "nack", None)
        if nack is not None:
            into.upstream_nacks += nack.nacks_sent
            into.packets_repaired += nack.packets_repaired


def subscriber_totals(subscriber: Any, into: Totals) -> None:
    for slot in subscriber.slots:
        into.packets_out += slot.out.packets_sent
        into.bytes_out += slot.out.octets_sent
        consumer = slot.consumer
        if consumer is not None and not consumer.closed:
            into.packets_dropped += consumer.packets_dropped
            into.nacks_received += consumer.nacks_received
            into.retransmitted += consumer.retransmitted
    into.malformed_packets += subscriber.malformed_packets


def participant_totals(participant: CountedParticipant, into: Totals) -> None:
    """Everything a participant's connections counted (its live producers included)."""
    if participant.publisher is not None:
        for producer in participant.publisher.producers.values():
            producer_totals(producer, into)
        into.malformed_packets += participant.publisher.malformed_packets
        into.unroutable_packets += participant.publisher.unroutable_packets
        into.ssrcs_over_limit += participant.publisher.router.ssrcs_over_limit
        into.layer_changes += participant.publisher.layer_changes_sent
        into.twcc_feedback_sent += participant.publisher.feedback.packets_sent
    if participant.subscriber is not None:
        subscriber_totals(participant.subscriber, into)


class RetiredTotals(Totals):
    """What closed objects had counted; kept by the RoomManager."""

    def retire_participant(self, participant: CountedParticipant) -> None:
        participant_totals(participant, self)

    def retire_producers(self, producers: Iterable[Any]) -> None:
        for producer in producers:
            producer_totals(producer, self)

"""The data relay of a room: each data channel message from a participant's publish
connection goes to the others' subscribe connections, or is refused, with the reason told.

Per message, in order (docs/protocol.md, Data channels):

1. the sender's rate (a token bucket of ``messages_per_s`` with ``burst``): ``rate-limited``;
2. binary frames only (a text message is no frame): ``bad-message``;
3. at most ``max_message_bytes``: ``too-large``;
4. the frame (sfu/data_frame.py): ``bad-message``;
5. ``to`` names only participants of the room: the others get it, and ``unknown-participant``
   names the missing ones;
6. delivered on the same kind of channel (reliable or lossy) to every other participant (or
   those named) with a subscribe connection, with the sender's id and the topic.

Refusals reach the sender as ``data-error`` messages, at most one per code each
``report_interval_s`` with the count of messages it covers (a flood gets a few messages, not
one per frame). Receivers that cannot take a message now (channel not open yet, over its
buffer) are counted, not reported. Every outcome is counted in ``DataStats`` (/metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .data_frame import MalformedFrame, decode, peek_ref, relayed
from .errors import SignalingError
from .signaling.limits import TokenBucket
from .signaling.server_messages import DataError
from .stats import DataStats

SENDER_REASONS = ("rate-limited", "bad-message", "too-large", "unknown-participant")
RECEIVER_REASONS = ("not-open", "backlog", "send-failed")
DROP_REASONS = SENDER_REASONS + RECEIVER_REASONS

Report = Callable[[DataError], None]
Schedule = Callable[[float, Callable[[], None]], Any]  # loop.call_later


class DataReceiver(Protocol):
    """A subscribe connection's channels (sfu/rtc/datachannels.py ``ServerChannels``)."""

    def send(self, reliable: bool, frame: bytes) -> str | None: ...


@dataclass(slots=True)
class _Pending:
    """Refusals of one code not yet reported (inside the report interval)."""

    last_report_s: float
    count: int = 0
    message: str = ""
    reliable: bool = True
    ref: str | None = None
    scheduled: bool = False


@dataclass(slots=True)
class _Sender:
    bucket: TokenBucket
    pending: dict[str, _Pending] = field(default_factory=dict)


class DataRelay:
    """One room's relay; the time comes in (``now_s``), reports are scheduled with ``schedule``."""

    def __init__(
        self,
        max_message_bytes: int,
        messages_per_s: float,
        burst: int,
        stats: DataStats | None = None,
        schedule: Schedule | None = None,
        report_interval_s: float = 1.0,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.messages_per_s = messages_per_s
        self.burst = burst
        self.stats = stats if stats is not None else DataStats()
        self._schedule = schedule
        self.report_interval_s = report_interval_s
        self._senders: dict[str, _Sender] = {}

    def relay(
        self,
        sender_id: str,
        reliable: bool,
        data: bytes | str,
        receivers: Mapping[str, DataReceiver | None],
        report: Report,
        now_s: float,
    ) -> int:
        """Relay one message; returns how many receivers it was sent to.

        ``receivers``: every other participant of the room by id, with its channels (None: it
        has no subscribe connection). ``report`` posts a ``data-error`` to the sender."""
        stats = self.stats
        stats.received += 1
        sender = self._senders.get(sender_id)
        if sender is None:
            sender = self._senders[sender_id] = _Sender(TokenBucket.full(self.messages_per_s, self.burst, now_s))
        if not sender.bucket.take(now_s):
            self._refuse(
                sender,
                "rate-limited",
                f"more than {self.messages_per_s:g} data messages per second (burst {self.burst})",
                reliable,
                None,
                report,
                now_s,
            )
            return 0
        if isinstance(data, str):
            self._refuse(
                sender, "bad-message", "data channel messages must be binary frames", reliable, None, report, now_s
            )
            return 0
        if len(data) > self.max_message_bytes:
            self._refuse(
                sender,
                "too-large",
                f"a data message of {len(data)} bytes; at most {self.max_message_bytes} are relayed",
                reliable,
                peek_ref(data),
                report,
                now_s,
            )
            return 0
        try:
            frame = decode(data)
        except MalformedFrame as exc:
            self._refuse(sender, "bad-message", f"not a data frame: {exc}", reliable, None, report, now_s)
            return 0
        targets: list[DataReceiver | None]
        if frame.to is None:
            targets = list(receivers.values())
        else:
            unknown = [pid for pid in frame.to if pid not in receivers and pid != sender_id]
            if unknown:
                self._refuse(
                    sender,
                    "unknown-participant",
                    f"no participant {', '.join(unknown)[:200]} in the room can receive it",
                    reliable,
                    frame.ref,
                    report,
                    now_s,
                )
            targets = [receivers[pid] for pid in frame.to if pid in receivers]
        out = relayed(frame, sender_id)
        stats.relayed += 1
        stats.relayed_bytes += len(data)
        sent = 0
        for receiver in targets:
            reason = "not-open" if receiver is None else receiver.send(reliable, out)
            if reason is None:
                sent += 1
            else:
                stats.dropped[reason] += 1
        stats.deliveries += sent
        stats.delivered_bytes += sent * len(out)
        return sent

    def _refuse(
        self,
        sender: _Sender,
        code: str,
        message: str,
        reliable: bool,
        ref: str | None,
        report: Report,
        now_s: float,
    ) -> None:
        self.stats.dropped[code] += 1
        pending = sender.pending.get(code)
        if pending is None or now_s - pending.last_report_s >= self.report_interval_s:
            count = 1 + (pending.count if pending is not None else 0)
            if pending is None:
                pending = sender.pending[code] = _Pending(now_s)
            pending.last_report_s, pending.count = now_s, 0
            report(DataError(SignalingError(code, message), reliable, count, ref))
            return
        pending.count += 1
        pending.message, pending.reliable, pending.ref = message, reliable, ref
        if not pending.scheduled and self._schedule is not None:
            pending.scheduled = True
            delay_s = max(0.0, pending.last_report_s + self.report_interval_s - now_s)
            self._schedule(delay_s, lambda: self._flush(pending, code, report))

    def _flush(self, pending: _Pending, code: str, report: Report) -> None:
        """The refusals the interval held back, in one ``data-error``."""
        pending.scheduled = False
        if pending.count == 0:
            return
        count, pending.count = pending.count, 0
        pending.last_report_s += self.report_interval_s
        report(DataError(SignalingError(code, pending.message), pending.reliable, count, pending.ref))

    def forget(self, sender_id: str) -> None:
        """A participant left: its rate and pending reports go (nothing more is reported)."""
        sender = self._senders.pop(sender_id, None)
        if sender is not None:
            for pending in sender.pending.values():
                pending.count = 0

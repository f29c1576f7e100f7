"""What a datagram on an ICE socket is, and the counts of what was dropped before aiortc.

One ICE socket carries STUN, DTLS and SRTP/SRTCP; RFC 7983 tells them apart by the first
byte:

  0-3 STUN;
  20-63 DTLS (a record header is 13 bytes);
  128-191 SRTP/SRTCP (an RTP header is 12 bytes; SRTCP is longer still: 8 + index + tag);
  anything else (ZRTP, TURN channels, the gaps, empty datagrams): not ours.

``classify`` makes that call, with the shortest header each kind can have; the glue
(``aiortc_glue.datagrams``) then checks where a datagram came from, against aioice's state,
and hands it on or drops it. Every drop is counted by reason, per ICE connection
(``DropCounter``) and for the process (``drop_totals``, in /metrics as
``sfu_transport_drops_total{reason}``). Pure: no aiortc or aioice here.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily

DROP_REASONS = (
    "empty",  # a datagram of no bytes
    "unknown-type",  # a first byte outside STUN, DTLS and RTP/RTCP (RFC 7983)
    "malformed-stun",  # STUN's first byte but not STUN that aioice can parse
    "too-short",  # shorter than a DTLS record header or an RTP/RTCP header
    "unknown-address",  # DTLS or SRTP from an address that is no candidate pair's remote
    "srtp-auth",  # SRTP that failed authentication or the replay check
    "srtcp-auth",  # SRTCP likewise
    "handler-error",  # our RTP/RTCP handler raised on a decrypted packet (logged)
    "rtcp-rate",  # RTCP over the connection's rate limit (``limit_rtcp``)
    "backlog",  # DTLS/SRTP arriving faster than it is handled: the queue is full
)

# What ``classify`` finds a datagram to be, when it is not a reason to drop it.
STUN = "stun"
DTLS = "dtls"
SRTP = "srtp"  # SRTP or SRTCP

DTLS_MIN_BYTES = 13  # a DTLS record header
RTP_MIN_BYTES = 12  # an RTP header (SRTCP is longer still: 8 + index + tag)
# Datagrams waiting for the DTLS transport (aioice's queue has no bound): about 2 s of a
# 5 Mbit/s publisher. Past it a flood is dropped rather than held in memory and delaying
# everything behind it.
MAX_BACKLOG = 1000


def classify(data: bytes) -> str:
    """``STUN``, ``DTLS`` or ``SRTP`` by the first byte (RFC 7983), or the reason to drop the
    datagram: "empty", "too-short" (for its kind) or "unknown-type". Per packet: no allocation."""
    if not data:
        return "empty"
    first = data[0]
    if 127 < first < 192:  # RTP/RTCP: the hot path
        return SRTP if len(data) >= RTP_MIN_BYTES else "too-short"
    if first < 4:
        return STUN
    if 19 < first < 64:
        return DTLS if len(data) >= DTLS_MIN_BYTES else "too-short"
    return "unknown-type"


def is_rtcp(data: bytes) -> bool:
    """An SRTP-range datagram (``classify``: ``SRTP``) that is RTCP, told from RTP as aiortc
    does: by a second byte (RTCP packet type) of 192-208."""
    return 191 < data[1] < 209


_drop_totals: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)


class DropCounter:
    """What one ICE connection dropped, by reason; each drop also counts for the process."""

    __slots__ = ("drops",)

    def __init__(self) -> None:
        self.drops = dict.fromkeys(DROP_REASONS, 0)

    def drop(self, reason: str) -> None:
        self.drops[reason] += 1
        _drop_totals[reason] += 1


def count_drop(reason: str) -> None:
    """A drop that belongs to no ICE connection (a TURN client's socket): the process's count."""
    _drop_totals[reason] += 1


def sum_drops(counters: Iterable[DropCounter]) -> dict[str, int]:
    """The drops of these connections together, by reason (every reason present)."""
    totals = dict.fromkeys(DROP_REASONS, 0)
    for counter in counters:
        for reason, count in counter.drops.items():
            totals[reason] += count
    return totals


def drop_totals() -> dict[str, int]:
    """What every transport of the process dropped, by reason (never decreases)."""
    return dict(_drop_totals)


def transport_drops_metric() -> CounterMetricFamily:
    """``sfu_transport_drops_total{reason}`` for /metrics: ``drop_totals`` as a counter."""
    family = CounterMetricFamily(
        "sfu_transport_drops",
        "Datagrams and SRTP/SRTCP packets dropped before aiortc, by reason",
        labels=["reason"],
    )
    for reason, count in _drop_totals.items():
        family.add_metric([reason], count)
    return family

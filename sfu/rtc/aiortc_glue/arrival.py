"""When each datagram arrived: the kernel's receive time, carried to the tap (transport-cc)."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import aioice.ice
from aiortc import RTCPeerConnection
from aiortc.rtcdtlstransport import RTCDtlsTransport

from ..kernel_stamp import kernel_stamp_reader
from .compat import TAPPED, missing_attributes, missing_names
from .peer_connection import dtls_transports


def track_arrival_times(pc: RTCPeerConnection) -> None:
    """Note when each datagram of ``pc`` arrived, for ``arrival_us``.

    aiortc's arrival time is taken after an asyncio.Queue hop and a few awaits per packet,
    and even the moment the event loop reads a datagram is late by however long the loop
    was busy: a burst (Chrome's bandwidth probes) is then read in one go, its spacing lost,
    and transport-cc feedback built on that reports our process's stalls as the network's.
    So the time is the kernel's receive timestamp of the datagram (``SIOCGSTAMP`` on the
    candidate's socket, read in ``datagram_received`` right after the event loop's
    ``recvfrom``; the loop's clock when the kernel has none). aioice passes each datagram on
    to ``Connection.data_received`` and the DTLS transport takes them back one at a time
    with ``Connection.recvfrom``; each returned datagram is matched (by identity) to its
    stamp, which stays on the DTLS transport while aiortc decrypts it and calls our tap. An
    SRTP datagram that the guard decrypts and delivers at once (datagrams.py) is stamped on
    the transport before the guard sees it.
    Wall-clock microseconds. Idempotent; call after the local description is set (the
    candidate sockets exist).
    """
    for transport in dtls_transports(pc):
        connection = transport.transport._connection
        if getattr(connection, TAPPED, False):
            continue
        _stamp_arrivals(transport, connection)
        setattr(connection, TAPPED, True)


def _stamp_arrivals(transport: RTCDtlsTransport, connection: aioice.ice.Connection) -> None:
    stamps: deque[tuple[bytes, int]] = deque()
    clock = time.time_ns
    current: list[int | None] = [None]  # set by a socket's datagram_received, used just below
    original_received = connection.data_received
    original_recvfrom = connection.recvfrom

    for protocol in connection._protocols:
        socket_transport = getattr(protocol, "transport", None)
        if socket_transport is None or getattr(protocol, TAPPED, False):
            continue
        try:  # a TURN-relayed candidate's transport has no socket of its own
            sock = socket_transport.get_extra_info("socket")
        except Exception:
            sock = None
        kernel_stamp = kernel_stamp_reader(sock)
        original_datagram = protocol.datagram_received

        def datagram_received(
            data: bytes | str, addr: tuple[Any, ...], original: Any = original_datagram, stamp: Any = kernel_stamp
        ) -> None:
            at_us = current[0] = stamp()
            # For a datagram the guard delivers at once (datagrams.py), read by arrival_us
            # below; one that takes aioice's queue gets its own stamp back in recvfrom.
            transport._sfu_arrival_us = at_us if at_us is not None else clock() // 1000  # type: ignore[attr-defined]
            try:
                original(data, addr)
            finally:
                current[0] = None

        protocol.datagram_received = datagram_received  # type: ignore[method-assign]
        setattr(protocol, TAPPED, True)

    def data_received(data: bytes, component: int) -> None:
        if len(stamps) > 10_000:  # nobody reads: do not grow without bound
            stamps.clear()
        at_us = current[0]
        stamps.append((data, at_us if at_us is not None else clock() // 1000))
        original_received(data, component)

    async def recvfrom() -> tuple[bytes, int]:
        result = await original_recvfrom()
        data = result[0]
        while stamps:
            item, at_us = stamps.popleft()
            if item is data:
                transport._sfu_arrival_us = at_us  # type: ignore[attr-defined]
                break
        return result

    connection.data_received = data_received  # type: ignore[method-assign]
    connection.recvfrom = recvfrom  # type: ignore[method-assign]


def arrival_us(transport: RTCDtlsTransport) -> int:
    """When the datagram being handled now arrived (wall-clock µs, see
    ``track_arrival_times``); now if arrival times are not tracked."""
    at_us: int | None = getattr(transport, "_sfu_arrival_us", None)
    return at_us if at_us is not None else time.time_ns() // 1000


def problems() -> list[str]:
    """What of aioice this module relies on and is missing."""
    found = missing_attributes(
        [
            (aioice.ice.Connection, "data_received"),
            (aioice.ice.Connection, "recvfrom"),
            (aioice.ice.StunProtocol, "datagram_received"),
        ]
    )
    return found + missing_names([aioice.ice.Connection.__init__], ["_protocols"], "Connection.{} is missing")

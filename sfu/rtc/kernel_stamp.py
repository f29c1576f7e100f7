"""The kernel's receive time of the last datagram read from a UDP socket (Linux ``SIOCGSTAMP``).

An event loop reads a datagram late by however long it was busy; transport-cc feedback needs
when the datagram arrived. Pure: no aiortc or aioice here (the glue's ``track_arrival_times``
reads it for every ICE socket).
"""

from __future__ import annotations

import fcntl
import struct
import sys
from collections.abc import Callable
from typing import Any

_SIOCGSTAMP = 0x8906  # Linux: the receive time of the last datagram read from a socket
_TIMEVAL = struct.Struct("@ll")


def kernel_stamp_reader(sock: Any) -> Callable[[], int | None]:
    """A function returning the kernel's receive time (µs) of the last datagram, or None."""
    try:
        fd = sock.fileno() if sock is not None and sys.platform == "linux" else -1
    except (AttributeError, OSError):
        fd = -1
    if fd < 0:
        return lambda: None
    buffer = bytes(_TIMEVAL.size)
    ioctl = fcntl.ioctl
    unpack = _TIMEVAL.unpack

    def read() -> int | None:
        try:
            seconds, micros = unpack(ioctl(fd, _SIOCGSTAMP, buffer))
        except OSError:  # ENOENT until the kernel stamps this socket's datagrams
            return None
        return int(seconds) * 1_000_000 + int(micros)

    read()  # switches stamping on
    return read

"""A fixed-size cache of recently sent packets, for answering NACKs without the publisher."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .compiled import twin


class PyPacketCache:
    """The reference implementation; ``PacketCache`` is its compiled twin when built (compiled.py)."""

    __slots__ = ("_packets", "_resent_ms", "_size")

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._packets: list[tuple[int, bytes] | None] = [None] * size
        self._resent_ms: list[float] = [-1e18] * size

    def put(self, seq: int, packet: bytes) -> None:
        i = seq % self._size
        self._packets[i] = (seq, packet)
        self._resent_ms[i] = -1e18

    def get(self, seq: int) -> bytes | None:
        entry = self._packets[seq % self._size]
        if entry is not None and entry[0] == seq:
            return entry[1]
        return None

    def resent_ms(self, seq: int) -> float:
        """When the cached packet ``seq`` was last resent (very negative if never)."""
        return self._resent_ms[seq % self._size]

    def mark_resent(self, seq: int, now_ms: float) -> None:
        self._resent_ms[seq % self._size] = now_ms


# The compiled twin (sfu/rtc/_media.c) when the extension is built and not switched off.
if TYPE_CHECKING:
    PacketCache = PyPacketCache
else:
    PacketCache = twin("PacketCache") or PyPacketCache

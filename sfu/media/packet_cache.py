"""A fixed-size cache of recently sent packets, for answering NACKs without the publisher."""

from __future__ import annotations


class PacketCache:
    __slots__ = ("_size", "_packets")

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._packets: list[tuple[int, bytes] | None] = [None] * size

    def put(self, seq: int, packet: bytes) -> None:
        self._packets[seq % self._size] = (seq, packet)

    def get(self, seq: int) -> bytes | None:
        entry = self._packets[seq % self._size]
        if entry is not None and entry[0] == seq:
            return entry[1]
        return None

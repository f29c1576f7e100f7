"""WHIP and WHEP sessions: the HTTP resources of publishers and players without a socket.

A WHIP session is an ordinary participant of its room that publishes and never receives; a
WHEP session is a viewer of its room (``Room.add_viewer``). Each has an unguessable id (its
resource URL), an entity tag, the ICE credentials of its offer (a PATCH with others would be
an ICE restart) and, when it was opened with a token, the identity that may change or end it.
A session ends with a DELETE, when its connection fails, when it has not connected within
its deadline, or with its room.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote

from .room import Participant, Room
from .rtc.peer import PeerBase
from .tasks import spawn

logger = logging.getLogger(__name__)

Kind = Literal["whip", "whep"]


@dataclass(eq=False)
class MediaSession:
    kind: Kind
    room: Room
    participant: Participant
    ice_ufrag: str | None
    ice_pwd: str | None
    identity: str | None  # the token's identity; None: opened without a token (open rooms)
    id: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    etag: str = field(default_factory=lambda: '"' + secrets.token_hex(12) + '"')
    ended: bool = False
    _deadline: asyncio.Task[None] | None = None

    @property
    def location(self) -> str:
        """The session's resource, relative to the server (RFC 9725: the Location header)."""
        return f"/{self.kind}/{quote(self.room.name, safe='')}/sessions/{self.id}"

    @property
    def peer(self) -> PeerBase | None:
        participant = self.participant
        return participant.publisher if self.kind == "whip" else participant.subscriber

    @property
    def alive(self) -> bool:
        return not self.ended and not self.participant.closed and not self.room.closed


class MediaSessions:
    """The open WHIP and WHEP sessions of the server, by id."""

    def __init__(self) -> None:
        self._by_id: dict[str, MediaSession] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, session: MediaSession, connect_timeout_s: float) -> None:
        """Register a session; it ends if its connection fails or is not up within
        ``connect_timeout_s``."""
        # Forget sessions whose participant went otherwise (an administrator, its room closed).
        for stale in [s for s in self._by_id.values() if not s.alive]:
            self._by_id.pop(stale.id, None)
        self._by_id[session.id] = session
        session.participant.on_transport_failed = lambda _p: self._end_soon(session, "disconnected")
        session._deadline = spawn(self._connect_deadline(session, connect_timeout_s), name=f"{session.kind}-deadline")

    def get(self, kind: Kind, room: str, session_id: str) -> MediaSession | None:
        """The live session of this kind, room and id (None: none, or it has ended)."""
        session = self._by_id.get(session_id)
        if session is None or session.kind != kind or session.room.name != room:
            return None
        if not session.alive:  # removed by an administrator, or its room closed
            self._by_id.pop(session.id, None)
            return None
        return session

    def sessions(self) -> list[MediaSession]:
        return list(self._by_id.values())

    async def end(self, session: MediaSession, reason: str = "left") -> None:
        """End a session (idempotent): the publisher leaves the room, the viewer goes."""
        if session.ended:
            return
        session.ended = True
        self._by_id.pop(session.id, None)
        deadline = session._deadline
        if deadline is not None and deadline is not asyncio.current_task():
            deadline.cancel()
        if session.kind == "whip":
            await session.room.leave(session.participant, reason)
        else:
            await session.room.remove_viewer(session.participant)

    def _end_soon(self, session: MediaSession, reason: str) -> None:
        if not session.ended:
            logger.info("%s session %s: connection failed", session.kind, session.id)
            spawn(self.end(session, reason), name=f"{session.kind}-end")

    async def _connect_deadline(self, session: MediaSession, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)
        peer = session.peer
        if not session.ended and (peer is None or not peer.connected):
            logger.info("%s session %s: not connected within %g s; ended", session.kind, session.id, timeout_s)
            await self.end(session, "disconnected")

    async def close(self) -> None:
        for session in list(self._by_id.values()):
            await self.end(session, "left")

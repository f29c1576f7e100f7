"""Resume tokens: what lets a participant whose socket was lost take its session back.

A token is issued with ``joined`` (and a new one with ``resumed``); it is bound to one room and
one participant, is used at most once, and is honoured only while the participant exists: from
the moment its socket is lost, for ``grace_s``. Using a token revokes it, so a stolen copy is
worth nothing once the rightful client has resumed. Pure: no I/O, the time is an argument.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from .errors import NotAuthorised

TOKEN_BYTES = 24  # 192 random bits, URL-safe base64: 32 characters


@dataclass(slots=True)
class _Grant:
    room: str
    participant_id: str
    expires_at_s: float | None  # None: the participant is connected, no deadline yet


class ResumeTokens:
    """The live resume tokens of one server: one per participant at most."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._grants: dict[str, _Grant] = {}  # token -> grant
        self._tokens: dict[str, str] = {}  # participant id -> its current token

    def __len__(self) -> int:
        return len(self._grants)

    def issue(self, room: str, participant_id: str) -> str:
        """A new token for the participant (its previous one, if any, is revoked)."""
        self.revoke(participant_id)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        self._grants[token] = _Grant(room, participant_id, None)
        self._tokens[participant_id] = token
        return token

    def lost(self, participant_id: str, now_s: float) -> None:
        """The participant's socket is gone: its token now expires ``grace_s`` from now."""
        token = self._tokens.get(participant_id)
        if token is not None:
            self._grants[token].expires_at_s = now_s + self.grace_s

    def take(self, token: str, room: str, now_s: float, participant_id: str | None = None) -> str:
        """Use a token: the participant id it resumes. The token is gone afterwards, whatever
        the outcome (a refused guess cannot be retried). NotAuthorised ``resume-failed`` when
        it is unknown (never issued, used, revoked), expired, for another room or, when the
        client names its participant, for another participant."""
        grant = self._grants.pop(token, None)
        if grant is None:
            raise NotAuthorised("resume-failed", "unknown or already used resume token")
        if self._tokens.get(grant.participant_id) == token:
            del self._tokens[grant.participant_id]
        if grant.expires_at_s is not None and now_s >= grant.expires_at_s:
            raise NotAuthorised("resume-failed", "the resume token has expired (the session is over)")
        if grant.room != room:
            raise NotAuthorised("resume-failed", f"the resume token is not for room {room!r}")
        if participant_id is not None and participant_id != grant.participant_id:
            raise NotAuthorised("resume-failed", "the resume token belongs to another participant")
        return grant.participant_id

    def revoke(self, participant_id: str) -> None:
        """The participant is gone (or got a new token): its token is worth nothing."""
        token = self._tokens.pop(participant_id, None)
        if token is not None:
            self._grants.pop(token, None)

    def expire(self, now_s: float) -> int:
        """Forget expired tokens; how many were dropped."""
        dead = [t for t, g in self._grants.items() if g.expires_at_s is not None and now_s >= g.expires_at_s]
        for token in dead:
            grant = self._grants.pop(token)
            if self._tokens.get(grant.participant_id) == token:
                del self._tokens[grant.participant_id]
        return len(dead)

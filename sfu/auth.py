"""Access tokens: JWTs (HS256, signed with the server's ``auth_secret``) naming an identity,
a room and grants.

Claims::

    {"sub": "alice",            identity (1-128 chars)
     "room": "standup",         the one room the token is for; "*" means every room
     "grants": ["publish", "subscribe"],   any of publish, subscribe, admin
     "name": "Alice",           optional: display name, overrides the join message's name
     "iat": ..., "nbf": ..., "exp": ...,   expiry is required
     "iss": "sfu"}

A token is checked once, when it is presented (``join``, ``?token=`` on /ws, an admin request);
a participant already in a room stays when its token expires.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from .errors import SignalingError

ALGORITHM = "HS256"
ISSUER = "sfu"
GRANTS = ("publish", "subscribe", "admin")
ANY_ROOM = "*"
LEEWAY_S = 5
MAX_TOKEN_CHARS = 4096

# What a join without a token gets when rooms are open.
OPEN_GRANTS = frozenset({"publish", "subscribe"})


@dataclass(frozen=True)
class Claims:
    identity: str
    room: str
    grants: frozenset[str]
    name: str | None = None
    expires_at: int | None = None

    def covers(self, room: str) -> bool:
        return self.room == ANY_ROOM or self.room == room

    def can(self, grant: str) -> bool:
        return grant in self.grants


def open_claims(identity: str = "") -> Claims:
    return Claims(identity=identity, room=ANY_ROOM, grants=OPEN_GRANTS)


def parse_grants(text: str) -> frozenset[str]:
    grants = frozenset(g.strip() for g in text.split(",") if g.strip())
    unknown = grants - set(GRANTS)
    if unknown:
        raise ValueError(f"unknown grant(s) {', '.join(sorted(unknown))}; grants are {', '.join(GRANTS)}")
    return grants


def mint(
    secret: str,
    identity: str,
    room: str,
    grants: frozenset[str] | set[str] | list[str],
    ttl_s: float,
    name: str | None = None,
    now_s: float | None = None,
) -> str:
    """A signed token. ``room`` may be "*" (every room)."""
    grants = frozenset(grants)
    unknown = grants - set(GRANTS)
    if unknown:
        raise ValueError(f"unknown grant(s): {sorted(unknown)}")
    if not identity or len(identity) > 128:
        raise ValueError("identity must be 1-128 characters")
    if not room:
        raise ValueError("room must not be empty")
    now = int(time.time() if now_s is None else now_s)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": identity,
        "room": room,
        "grants": sorted(grants),
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl_s),
    }
    if name:
        claims["name"] = name
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: str, token: object) -> Claims:
    """The token's claims, or SignalingError("unauthorized") saying what is wrong."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise SignalingError("unauthorized", "token must be a non-empty string")
    try:
        data = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            leeway=LEEWAY_S,
            options={"require": ["exp", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise SignalingError("unauthorized", "token expired") from None
    except jwt.ImmatureSignatureError:
        raise SignalingError("unauthorized", "token not valid yet") from None
    except jwt.InvalidSignatureError:
        raise SignalingError("unauthorized", "token signature is invalid") from None
    except jwt.InvalidTokenError as exc:
        raise SignalingError("unauthorized", f"token is invalid: {exc}") from None
    identity, room, grants = data.get("sub"), data.get("room"), data.get("grants", [])
    if not isinstance(identity, str) or not 1 <= len(identity) <= 128:
        raise SignalingError("unauthorized", "token 'sub' must be an identity of 1-128 characters")
    if not isinstance(room, str) or not room:
        raise SignalingError("unauthorized", "token has no 'room'")
    if not isinstance(grants, list) or not all(isinstance(g, str) for g in grants):
        raise SignalingError("unauthorized", "token 'grants' must be a list of strings")
    name = data.get("name")
    return Claims(
        identity=identity,
        room=room,
        grants=frozenset(g for g in grants if g in GRANTS),
        name=name if isinstance(name, str) and 1 <= len(name.strip()) <= 64 else None,
        expires_at=int(data["exp"]),
    )


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()

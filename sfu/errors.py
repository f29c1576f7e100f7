"""Errors that reach clients, split by who is at fault, each code with its HTTP status.

Every wire error code of docs/protocol.md belongs to exactly one class:

- ``BadRequest``: the client sent something wrong (bad JSON, a bad field, a message out of
  turn, an SDP that cannot be negotiated, too many messages);
- ``NotAuthorised``: the client may not do this (no or a bad token, a missing grant, kicked);
- ``Conflict``: the request is fine but the server's state refuses it now (room full, room
  closed, shutting down, too many connections);
- ``ServerError``: a bug on our side.

``SignalingError(code, message)`` builds the instance of the class that owns ``code`` (so
``except BadRequest`` catches every bad request whoever raised it); a subclass can be built
directly with a code it owns. The one wire body is ``to_wire()``; the HTTP status is
``status``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Self


class SignalingError(Exception):
    """A client-visible error: ``{"type": "error", "code", "message"}``; the server goes on."""

    # code -> HTTP status, for the codes this class owns
    CODES: ClassVar[Mapping[str, int]] = {}

    code: str
    message: str

    def __new__(cls, code: str, message: str) -> Self:
        owner = _OWNER.get(code)
        if owner is None:
            raise ValueError(f"unknown error code {code!r}")
        if not issubclass(owner, cls):
            raise ValueError(f"error code {code!r} belongs to {owner.__name__}, not {cls.__name__}")
        return super().__new__(owner)

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # The type of the client message that failed, when the parser knew it.
        self.request: str | None = None

    def __reduce__(self) -> tuple[type[SignalingError], tuple[str, str]]:
        return (SignalingError, (self.code, self.message))

    @property
    def status(self) -> int:
        """The HTTP status of this error (the admin API and refusals before the upgrade)."""
        return _OWNER[self.code].CODES[self.code]

    def to_wire(self, request: str | None = None) -> dict[str, object]:
        """The error's one wire body; ``request`` is the type of the message that failed."""
        msg: dict[str, object] = {"type": "error", "code": self.code, "message": self.message}
        if request is not None:
            msg["request"] = request
        return msg


class BadRequest(SignalingError):
    """The client sent something wrong; sending it again will not help."""

    CODES: ClassVar[Mapping[str, int]] = {
        "bad-json": 400,
        "too-large": 413,
        "unknown-type": 400,
        "bad-message": 400,
        "not-joined": 400,
        "already-joined": 400,
        "bad-sdp": 400,
        "wrong-state": 400,
        "unknown-track": 400,
        "not-found": 404,
        "rate-limited": 429,
        "too-many-tracks": 400,
        "too-many-m-sections": 400,
        "unknown-participant": 400,
        # WHIP/WHEP (HTTP only): a body that is not application/sdp (or trickle-ice-sdpfrag),
        # a PATCH without If-Match, a PATCH that would restart ICE.
        "unsupported-media-type": 415,
        "precondition-required": 428,
        "ice-restart-unsupported": 422,
    }


class NotAuthorised(SignalingError):
    """The client may not do this (token, grants, an administrator's decision)."""

    CODES: ClassVar[Mapping[str, int]] = {
        "unauthorized": 401,
        "forbidden": 403,
        "kicked": 403,
        "resume-failed": 401,
    }


class Conflict(SignalingError):
    """A valid request the server's state refuses now (another room, later, may work)."""

    CODES: ClassVar[Mapping[str, int]] = {
        "room-full": 409,
        "room-closed": 409,
        "shutting-down": 503,
        "too-many-connections": 503,
        "join-timeout": 408,
        "negotiation-timeout": 408,
        "unavailable": 503,
        "no-capacity": 503,
        # WHIP/WHEP: a PATCH whose If-Match names another version of the session (RFC 9725).
        "precondition-failed": 412,
    }


class ServerError(SignalingError):
    """A bug on the server's side; logged with details."""

    CODES: ClassVar[Mapping[str, int]] = {"internal": 500}


_OWNER: dict[str, type[SignalingError]] = {
    code: cls for cls in (BadRequest, NotAuthorised, Conflict, ServerError) for code in cls.CODES
}
ERROR_CODES = frozenset(_OWNER)

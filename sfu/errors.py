"""Errors that reach clients, each with its wire code (docs/protocol.md)."""

from __future__ import annotations

ERROR_CODES = {
    "bad-json",
    "too-large",
    "unknown-type",
    "bad-message",
    "not-joined",
    "already-joined",
    "room-full",
    "bad-sdp",
    "wrong-state",
    "unknown-track",
    "internal",
    # deployment and security (docs/protocol.md)
    "unauthorized",
    "forbidden",
    "kicked",
    "room-closed",
    "shutting-down",
    "not-found",  # HTTP admin API only
    # limits on what one participant may negotiate
    "too-many-tracks",
    "too-many-m-sections",
    "negotiation-timeout",
}


class SignalingError(Exception):
    """A client error: answered with {"type": "error", "code", "message"}; the server goes on."""

    def __init__(self, code: str, message: str) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    def to_wire(self, request: str | None = None) -> dict[str, object]:
        msg: dict[str, object] = {"type": "error", "code": self.code, "message": self.message}
        if request is not None:
            msg["request"] = request
        return msg

"""The per-session limits of the signaling surface, as pure values (the time is passed in).

Close codes the server uses on the signaling socket (docs/protocol.md, Close codes).
"""

from __future__ import annotations

from dataclasses import dataclass

CLOSE_GOING_AWAY = 1001  # shutdown
CLOSE_POLICY_VIOLATION = 1008  # kicked, room closed
CLOSE_MESSAGE_TOO_BIG = 1009  # a frame over 4 x max_message_bytes (the WebSocket reader's own)
CLOSE_SERVICE_RESTART = 1012  # the worker process hosting the room went away: join again
CLOSE_TRY_AGAIN_LATER = 1013  # no placement for the room now (unavailable, no-capacity)
CLOSE_JOIN_TIMEOUT = 4000  # no join within join_timeout_s
CLOSE_SEND_QUEUE_FULL = 4001  # more than max_queued_bytes waiting for a client that does not read


@dataclass(slots=True)
class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved up; one token per message."""

    rate_per_s: float
    burst: float
    tokens: float
    last_s: float

    @classmethod
    def full(cls, rate_per_s: float, burst: float, now_s: float) -> TokenBucket:
        return cls(rate_per_s, burst, burst, now_s)

    def take(self, now_s: float) -> bool:
        """Spend one token if there is one; False: over the rate."""
        elapsed = now_s - self.last_s
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate_per_s)
            self.last_s = now_s
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

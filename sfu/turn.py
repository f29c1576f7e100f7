"""Time-limited TURN credentials, coturn's shared-secret scheme ("TURN REST API").

coturn with ``use-auth-secret`` and ``static-auth-secret=S`` accepts
``username = "<expiry unix time>:<identity>"`` with
``credential = base64(HMAC-SHA1(S, username))`` until the expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from .config import Config


def credentials(secret: str, identity: str, ttl_s: int, now_s: float | None = None) -> tuple[str, str]:
    """(username, credential) valid for ``ttl_s`` seconds."""
    expiry = int(time.time() if now_s is None else now_s) + int(ttl_s)
    # ':' separates the expiry; keep the identity part free of it.
    username = f"{expiry}:{identity.replace(':', '_')}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers_for(config: Config, identity: str, now_s: float | None = None) -> list[dict[str, Any]]:
    """The RTCIceServer list a participant gets in ``joined``: the static ``ice_servers``
    plus, with ``turn_secret``, one entry with fresh credentials for all ``turn_urls``."""
    servers: list[dict[str, Any]] = [dict(s) for s in config.ice_servers]
    if config.turn_secret and config.turn_urls:
        username, credential = credentials(config.turn_secret, identity, config.turn_ttl_s, now_s)
        servers.append({"urls": list(config.turn_urls), "username": username, "credential": credential})
    return servers

"""Server configuration: defaults that run on a laptop, overridable from the environment."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

CLIENT_DIR = Path(__file__).resolve().parent.parent / "client"


class ConfigError(ValueError):
    """An invalid option, with the option's name in the message."""


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    room_capacity: int = 16
    max_message_bytes: int = 65536
    # WebSocket ping interval; a client that misses a pong for half of it is removed.
    heartbeat_interval_s: float = 2.0
    # Addresses to gather ICE host candidates on; empty means every interface but loopback.
    ice_host_addresses: tuple[str, ...] = ()
    # RTCIceServer dicts handed to clients and used by the server's own peer connections.
    ice_servers: tuple[dict[str, Any], ...] = ()
    # The REMB the server sends publishers for their video (0: none).
    publisher_bitrate_bps: int = 2_500_000
    client_dir: Path = field(default=CLIENT_DIR)
    log_level: str = "INFO"

    def validate(self) -> Config:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1..65535, got {self.port}")
        if self.room_capacity < 1:
            raise ConfigError(f"room_capacity must be at least 1, got {self.room_capacity}")
        if self.max_message_bytes < 1024:
            raise ConfigError(f"max_message_bytes must be at least 1024, got {self.max_message_bytes}")
        if not 0 < self.heartbeat_interval_s <= 60:
            raise ConfigError(f"heartbeat_interval_s must be in (0, 60], got {self.heartbeat_interval_s}")
        if self.publisher_bitrate_bps < 0:
            raise ConfigError("publisher_bitrate_bps must not be negative")
        for server in self.ice_servers:
            if not isinstance(server, dict) or "urls" not in server:
                raise ConfigError(f"ice_servers entries need 'urls': {server!r}")
        return self


ENV_PREFIX = "SFU_"


def _convert(name: str, raw: str, current: Any) -> Any:
    try:
        if isinstance(current, bool):
            return raw.lower() in ("1", "true", "yes", "on")
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, Path):
            return Path(raw)
        if name == "ice_host_addresses":
            return tuple(a.strip() for a in raw.split(",") if a.strip())
        if name == "ice_servers":
            value = json.loads(raw)
            if not isinstance(value, list):
                raise ValueError("expected a JSON list")
            return tuple(value)
        return raw
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}: {exc}") from exc


def from_env(base: Config | None = None, environ: dict[str, str] | None = None) -> Config:
    """Apply SFU_<OPTION> environment variables (e.g. SFU_PORT=9000) on top of ``base``."""
    env = os.environ if environ is None else environ
    config = base or Config()
    changes: dict[str, Any] = {}
    for f in fields(Config):
        key = ENV_PREFIX + f.name.upper()
        if key in env:
            changes[f.name] = _convert(f.name, env[key], getattr(config, f.name))
    return replace(config, **changes).validate()

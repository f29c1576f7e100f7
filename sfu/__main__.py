"""python -m sfu: run the server."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

from aiohttp import web

from .app import create_app
from .config import ConfigError, from_env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sfu", description="Run the SFU server.")
    parser.add_argument("--host", help="address to listen on (SFU_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (SFU_PORT, default 8080)")
    parser.add_argument(
        "--ice-host",
        action="append",
        dest="ice_hosts",
        help="gather ICE host candidates only on this address; repeatable (SFU_ICE_HOST_ADDRESSES)",
    )
    parser.add_argument("--room-capacity", type=int, help="participants per room (SFU_ROOM_CAPACITY, default 16)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING (SFU_LOG_LEVEL)")
    args = parser.parse_args(argv)
    try:
        config = from_env()
        changes = {
            k: v
            for k, v in {
                "host": args.host,
                "port": args.port,
                "room_capacity": args.room_capacity,
                "log_level": args.log_level,
                "ice_host_addresses": tuple(args.ice_hosts) if args.ice_hosts else None,
            }.items()
            if v is not None
        }
        config = replace(config, **changes).validate()
    except ConfigError as exc:
        print(f"sfu: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    app = create_app(config)
    print(f"SFU listening on http://{config.host}:{config.port}/", flush=True)
    web.run_app(app, host=config.host, port=config.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())

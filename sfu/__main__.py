"""python -m sfu: run the server; ``python -m sfu token ...`` mints access tokens;
``python -m sfu config`` prints the effective configuration."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from . import auth
from .config import ConfigError, is_loopback, load

COMMANDS = ("serve", "token", "config", "healthcheck", "worker")


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file (SFU_CONFIG); see docs/configuration.md")


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sfu",
        description="Run the SFU server. Other commands: `sfu token --help`, `sfu config`, `sfu healthcheck`.",
        epilog="Every option: docs/configuration.md. Precedence: defaults < --config file < SFU_* env < flags.",
    )
    _config_args(parser)
    parser.add_argument("--host", help="address to listen on (SFU_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (SFU_PORT, default 8080)")
    parser.add_argument(
        "--ice-host",
        action="append",
        dest="ice_hosts",
        help="gather ICE host candidates only on this address; repeatable (SFU_ICE_HOST_ADDRESSES)",
    )
    parser.add_argument("--room-capacity", type=int, help="participants per room (SFU_ROOM_CAPACITY, default 16)")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain for HTTPS/WSS (SFU_TLS_CERT_FILE)")
    parser.add_argument("--tls-key", type=Path, help="PEM private key (SFU_TLS_KEY_FILE)")
    parser.add_argument(
        "--self-signed",
        action="store_const",
        const=True,
        help="development HTTPS with a self-signed certificate, e.g. for phones on the LAN (SFU_TLS_SELF_SIGNED)",
    )
    parser.add_argument(
        "--allow-open-rooms",
        action="store_const",
        const=True,
        help="accept joins without a token on a non-loopback address (SFU_ALLOW_OPEN_ROOMS)",
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING (SFU_LOG_LEVEL)")
    parser.add_argument(
        "--workers",
        type=_workers,
        help='worker processes on this host, or "auto" for one per core (SFU_WORKERS, default 1)',
    )
    parser.add_argument("--redis-url", help="Redis shared by the nodes of a cluster (SFU_REDIS_URL)")
    return parser


def _workers(raw: str) -> int:
    if raw.strip().lower() == "auto":
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number or "auto", got {raw!r}') from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _serve_cli(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "host": args.host,
        "port": args.port,
        "room_capacity": args.room_capacity,
        "log_level": args.log_level,
        "ice_host_addresses": tuple(args.ice_hosts) if args.ice_hosts else None,
        "tls_cert_file": args.tls_cert,
        "tls_key_file": args.tls_key,
        "tls_self_signed": args.self_signed,
        "allow_open_rooms": args.allow_open_rooms,
        "workers": args.workers,
        "redis_url": args.redis_url,
    }


def _fail(message: str) -> int:
    print(f"sfu: configuration error: {message}", file=sys.stderr)
    return 2


def serve(argv: list[str]) -> int:
    args = _serve_parser().parse_args(argv)
    try:
        config = load(args.config, _serve_cli(args))
    except ConfigError as exc:
        return _fail(str(exc))
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from .tls import ssl_context

    try:
        ssl = ssl_context(config)
    except (OSError, ValueError) as exc:
        return _fail(f"TLS: {exc}")
    if config.clustered:
        from .cluster.node import run_node

        return run_node(config, ssl)
    from .app import create_app

    app = create_app(config)
    scheme = "https" if ssl else "http"
    shown_host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"SFU listening on {scheme}://{shown_host}:{config.port}/", flush=True)
    if not config.auth_enabled:
        where = "loopback only" if is_loopback(config.host) and not config.allow_open_rooms else "allow_open_rooms"
        print(f"rooms are open (no auth_secret; {where})", flush=True)
    from .rtc.aiortc_glue import log_send_path

    log_send_path()  # which SRTP path: compiled, or pure Python and why
    asyncio.run(_run(app, config, ssl))
    return 0


async def _run(app: Any, config: Any, ssl: Any) -> None:
    """Serve until SIGTERM/SIGINT; then drain while the sockets are still read (clients are
    told and may finish or leave), and only then stop the server."""
    from aiohttp import web

    from .app import ACCESS_LOGGER, drain

    runner = web.AppRunner(
        app, handle_signals=False, access_log_class=ACCESS_LOGGER, shutdown_timeout=config.shutdown_grace_s + 5
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port, ssl_context=ssl).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await drain(app)
    finally:
        await runner.cleanup()


def token(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sfu token",
        description="Mint an access token signed with auth_secret (from --config, SFU_CONFIG or SFU_AUTH_SECRET).",
    )
    _config_args(parser)
    parser.add_argument("--room", required=True, help='the room the token is for; "*" for every room')
    parser.add_argument("--identity", required=True, help="who the token is for (the JWT sub)")
    parser.add_argument(
        "--grants",
        default="publish,subscribe",
        help="comma-separated: publish, subscribe, admin (default publish,subscribe)",
    )
    parser.add_argument("--name", help="display name, overrides the name in join")
    parser.add_argument("--ttl", type=int, help="lifetime in seconds (default token_ttl_s, 6 hours)")
    parser.add_argument("--url", help="print a join link for this server URL instead, e.g. https://sfu.example.com")
    args = parser.parse_args(argv)
    try:
        # Minting needs only the secret: the listening options may be anything here.
        config = load(args.config, {"allow_open_rooms": True})
    except ConfigError as exc:
        return _fail(str(exc))
    if not config.auth_secret:
        return _fail("no auth_secret: set SFU_AUTH_SECRET or auth_secret in the config file")
    try:
        grants = auth.parse_grants(args.grants)
        value = auth.mint(
            config.auth_secret, args.identity, args.room, grants, args.ttl or config.token_ttl_s, name=args.name
        )
    except ValueError as exc:
        print(f"sfu token: {exc}", file=sys.stderr)
        return 2
    if args.url:
        query = {"room": args.room, "token": value}
        print(f"{args.url.rstrip('/')}/?{urlencode(query)}")
    else:
        print(value)
    return 0


def show_config(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sfu config", description="Print the effective configuration (secrets masked)."
    )
    _config_args(parser)
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    print(json.dumps(config.public_view(), indent=2, default=str))
    return 0


def healthcheck(argv: list[str]) -> int:
    """GET /healthz on this machine with the configured port and scheme; exit 0 if ok
    (the Dockerfile's HEALTHCHECK)."""
    import ssl
    import urllib.request

    parser = argparse.ArgumentParser(prog="sfu healthcheck", description="Exit 0 if the local server is healthy.")
    _config_args(parser)
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    try:
        config = load(args.config, {"allow_open_rooms": True})
    except ConfigError as exc:
        return _fail(str(exc))
    host = config.host if config.host not in ("0.0.0.0", "::") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if config.tls_enabled else "http"
    context = ssl._create_unverified_context() if config.tls_enabled else None  # our own cert, on this machine
    try:
        with urllib.request.urlopen(
            f"{scheme}://{host}:{config.port}/healthz", timeout=args.timeout, context=context
        ) as r:
            body = json.loads(r.read())
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(body))
    return 0 if body.get("status") == "ok" else 1


def worker(argv: list[str]) -> int:
    """One worker process of a node, started by its front process (never by hand): its
    settings come on stdin, and it ends when stdin does (the front is gone)."""
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from .cluster.worker import run_worker

    return run_worker(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "worker":
        return worker(argv[1:])
    if argv and argv[0] == "healthcheck":
        return healthcheck(argv[1:])
    if argv and argv[0] == "token":
        return token(argv[1:])
    if argv and argv[0] == "config":
        return show_config(argv[1:])
    if argv and argv[0] == "serve":
        argv = argv[1:]
    return serve(argv)


if __name__ == "__main__":
    sys.exit(main())

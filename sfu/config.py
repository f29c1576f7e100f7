"""Server configuration: defaults that run on a laptop, a TOML file, environment overrides.

Precedence, lowest first: the defaults below < the TOML file (``--config FILE`` or
``SFU_CONFIG``) < ``SFU_<OPTION>`` environment variables < command-line flags. Every option
is listed with its default and meaning in docs/configuration.md (a test keeps the two in
step); ``python -m sfu config`` prints the effective configuration.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


def _client_dir() -> Path:
    """The browser client: the repository's client/ (source checkout, editable install),
    else the copy docker/install.sh puts in <prefix>/share/sfu/client."""
    repo = Path(__file__).resolve().parent.parent / "client"
    installed = Path(sys.prefix) / "share" / "sfu" / "client"
    return repo if repo.is_dir() or not installed.is_dir() else installed


CLIENT_DIR = _client_dir()
MIN_SECRET_BYTES = 32


class ConfigError(ValueError):
    """An invalid option, with the option's name in the message."""


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


# What an SDP answer takes per m-section, with room to spare: aiortc's answers to the server's
# subscribe offers take about 1.2 KB (65,536 bytes ran out at about 55 m-sections, in a room
# of 32 from bench/scenarios.py).
SDP_BYTES_PER_M_SECTION = 2048


@dataclass(frozen=True)
class Config:
    # -- listening ----------------------------------------------------------------------
    host: str = field(default="127.0.0.1", metadata=_doc("address to listen on for HTTP(S) and WebSocket"))
    port: int = field(default=8080, metadata=_doc("HTTP(S)/WebSocket port"))
    # -- TLS ----------------------------------------------------------------------------
    tls_cert_file: Path | None = field(
        default=None, metadata=_doc("PEM certificate chain; with tls_key_file, serves HTTPS/WSS")
    )
    tls_key_file: Path | None = field(default=None, metadata=_doc("PEM private key of tls_cert_file"))
    tls_self_signed: bool = field(
        default=False,
        metadata=_doc(
            "development: serve HTTPS with a self-signed certificate made (once) for this host's "
            "names and addresses, so phones on the LAN get a secure context for the camera"
        ),
    )
    tls_self_signed_dir: Path = field(
        default=Path.home() / ".cache" / "sfu" / "tls",
        metadata=_doc("where the self-signed certificate and key are kept between runs"),
    )
    # -- auth ---------------------------------------------------------------------------
    auth_secret: str = field(
        default="",
        metadata=_doc(
            f"HS256 key that access tokens are signed with (at least {MIN_SECRET_BYTES} bytes). "
            "Empty: no tokens, rooms are open (allowed only on a loopback host or with allow_open_rooms)"
        ),
    )
    allow_open_rooms: bool = field(
        default=False,
        metadata=_doc(
            "accept joins without a token (publish and subscribe granted) even when not on loopback "
            "or when auth_secret is set"
        ),
    )
    token_ttl_s: int = field(default=6 * 3600, metadata=_doc("lifetime of tokens minted by `python -m sfu token`"))
    # -- rooms and signaling ------------------------------------------------------------
    room_capacity: int = field(
        default=16,
        metadata=_doc("participants per room (above 16, raise max_m_sections_per_sdp and max_message_bytes too)"),
    )
    max_message_bytes: int = field(
        default=65536,
        metadata=_doc(
            "largest signaling message; an answer to a subscribe offer takes up to 2 KB per m-section, so at least 2048 x max_m_sections_per_sdp (the log points out less at start)"
        ),
    )
    heartbeat_interval_s: float = field(
        default=2.0,
        metadata=_doc(
            "WebSocket ping interval; a client whose pong has not come by the next ping has lost its socket "
            "(it is kept for resume_grace_s)"
        ),
    )
    resume_grace_s: float = field(
        default=15.0,
        metadata=_doc(
            "how long a participant whose socket or connections were lost is kept (its tracks stay, the "
            "others see it reconnecting) for it to come back with `resume`; then it leaves (reason timeout). "
            "0: removed at once"
        ),
    )
    publisher_bitrate_bps: int = field(
        default=2_500_000, metadata=_doc("REMB the server sends publishers for their video (0: none)")
    )
    dynacast: bool = field(
        default=True,
        metadata=_doc(
            "tell publishers to stop sending simulcast layers (and videos) that no subscriber needs, "
            "and to restart them when one does (`layers` message)"
        ),
    )
    transport_cc: bool = field(
        default=True,
        metadata=_doc(
            "negotiate transport-wide congestion control both ways: feedback to publishers (their "
            "browser's send-side estimate, capped by publisher_bitrate_bps) and from subscribers (the "
            "server's estimate). false: publishers get REMB only, subscribers are estimated from REMB "
            "and receiver-report loss"
        ),
    )
    # -- signaling limits (docs/protocol.md, Limits) -------------------------------------
    max_connections: int = field(
        default=2000, metadata=_doc("signaling WebSockets open at once; more are refused (HTTP 503)")
    )
    max_connections_per_address: int = field(
        default=64, metadata=_doc("signaling WebSockets open at once from one IP address; more are refused (HTTP 503)")
    )
    join_timeout_s: float = field(
        default=10.0,
        metadata=_doc(
            "a socket that has not joined this long after it opened is closed (code 4000); a WHIP or "
            "WHEP session whose connection is not up this long after its POST ends"
        ),
    )
    messages_per_s: float = field(
        default=50.0, metadata=_doc("signaling frames a socket may send per second, sustained; more get `rate-limited`")
    )
    message_burst: int = field(
        default=200, metadata=_doc("signaling frames a socket may send at once above messages_per_s")
    )
    max_queued_bytes: int = field(
        default=4 * 1024 * 1024,
        metadata=_doc("bytes waiting for a client that does not read them; past this it is dropped (code 4001)"),
    )
    # -- limits on what one participant may negotiate and send -------------------------
    max_tracks_per_publisher: int = field(
        default=8, metadata=_doc("sending audio/video m-sections one publish offer may have (`too-many-tracks`)")
    )
    max_m_sections_per_sdp: int = field(
        default=32,
        metadata=_doc(
            "m-sections in one SDP: publish offers with more are refused (`too-many-m-sections`); a "
            "subscribe offer never has more, its data channels' m-section included (tracks beyond it "
            "are not offered to that subscriber, and the log says so); at least 2 x (room_capacity - 1) + 1 "
            "for everyone to receive everyone's audio and video, which the log points out at start"
        ),
    )
    negotiation_timeout_s: float = field(
        default=10.0,
        metadata=_doc(
            "longest a publish offer, subscribe answer or ICE candidate may take to be applied; past it "
            "the step is abandoned (`negotiation-timeout`). After an offer or an answer the connection is "
            "closed: a publish connection with its tracks, a subscribe connection with the participant; a "
            "candidate only gets the error. Also bounds how long closing a peer connection may take"
        ),
    )
    max_rtcp_bps: int = field(
        default=500_000,
        metadata=_doc(
            "RTCP data rate accepted from each connection (bits/s, bursts of one second's worth); "
            "the excess is dropped and counted"
        ),
    )
    # -- data channels (docs/protocol.md, Data channels) ------------------------------
    max_data_message_bytes: int = field(
        default=65536,
        metadata=_doc(
            "largest data channel frame relayed (header included); larger ones get a `data-error` (`too-large`)"
        ),
    )
    data_messages_per_s: float = field(
        default=50.0,
        metadata=_doc(
            "data channel messages one participant may send per second, sustained (both channels "
            "together); more get a `data-error` (`rate-limited`)"
        ),
    )
    data_message_burst: int = field(
        default=100, metadata=_doc("data channel messages a participant may send at once above data_messages_per_s")
    )
    # -- ICE ----------------------------------------------------------------------------
    ice_host_addresses: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "addresses to gather ICE host candidates on; empty: every interface but loopback. "
            "0.0.0.0 binds the wildcard and needs ice_announced_address"
        ),
    )
    ice_announced_address: str = field(
        default="",
        metadata=_doc(
            "public IP advertised instead of the host candidates' own address (1:1 NAT, containers); "
            "applies to host candidates of the same IP family"
        ),
    )
    ice_keep_private_host: bool = field(
        default=False, metadata=_doc("with ice_announced_address, also advertise the private host candidates")
    )
    ice_port_min: int = field(default=0, metadata=_doc("lowest UDP port for ICE host candidates (0: any port)"))
    ice_port_max: int = field(default=0, metadata=_doc("highest UDP port for ICE host candidates (0: any port)"))
    ice_servers: tuple[dict[str, Any], ...] = field(
        default=(),
        metadata=_doc("RTCIceServer objects (STUN, static TURN) handed to clients and used by the server"),
    )
    turn_urls: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "TURN URLs handed to clients with per-participant time-limited credentials "
            "(coturn use-auth-secret); e.g. turn:turn.example.com:3478, turns:turn.example.com:443?transport=tcp"
        ),
    )
    turn_secret: str = field(default="", metadata=_doc("coturn static-auth-secret for turn_urls"))
    turn_ttl_s: int = field(default=86400, metadata=_doc("lifetime of the TURN credentials in `joined`"))
    # -- operations ---------------------------------------------------------------------
    metrics_enabled: bool = field(default=True, metadata=_doc("serve Prometheus metrics at /metrics"))
    metrics_public: bool = field(
        default=False,
        metadata=_doc(
            "serve /metrics without a token even when auth_secret is set (otherwise it needs an "
            'admin token for every room, room "*", as Authorization: Bearer)'
        ),
    )
    shutdown_grace_s: float = field(
        default=5.0,
        metadata=_doc("on SIGTERM/SIGINT: how long participants may stay after being told before sockets close"),
    )
    client_dir: Path = field(default=CLIENT_DIR, metadata=_doc("the browser client served at /"))
    log_level: str = field(default="INFO", metadata=_doc("DEBUG, INFO, WARNING or ERROR"))
    # -- recording ----------------------------------------------------------------------
    recording_dir: Path = field(
        default=Path("recordings"),
        metadata=_doc(
            "where recordings are written (one file per publisher and source, a JSON sidecar per room); "
            "started and stopped through the admin API"
        ),
    )
    record_all_rooms: bool = field(
        default=False, metadata=_doc("record every room from its creation, everyone who publishes in it")
    )
    # -- media routing limits -----------------------------------------------------------
    max_ssrcs_per_transport: int = field(
        default=256,
        metadata=_doc(
            "RTP streams (SSRCs, media and RTX) learnt per publish connection; packets of further "
            "streams are dropped and counted (publisher.routing.ssrcs_over_limit in the admin view)"
        ),
    )

    # -- scale-out (docs/scaling.md) ---------------------------------------------------
    workers: int = field(
        default=1,
        metadata=_doc(
            'worker processes on this host, each with its own rooms and media; 0 or "auto": one per '
            "core. 1 with no redis_url: one process, as a plain server"
        ),
    )
    redis_url: str = field(
        default="",
        metadata=_doc(
            "Redis shared by the nodes of a cluster (redis://host:6379/0); empty: this host alone, "
            "state in the front process"
        ),
    )
    node_id: str = field(default="", metadata=_doc("this node's name in the cluster, unique; empty: <hostname>-<port>"))
    public_url: str = field(
        default="", metadata=_doc("where clients reach this node (http(s)://host:port); empty: from host and port")
    )
    cluster_host: str = field(
        default="127.0.0.1",
        metadata=_doc(
            "address the workers listen on for the front processes' relayed signaling (internal); "
            "in a cluster, one the other nodes can reach"
        ),
    )
    cluster_secret: str = field(
        default="",
        metadata=_doc(
            "shared by every process of the deployment, required on the workers' internal "
            "endpoints; needed with redis_url, made up at start on one host"
        ),
    )
    node_ttl_s: float = field(
        default=6.0,
        metadata=_doc("a node whose heartbeat is older than this is gone: none of its workers is chosen for a room"),
    )
    node_heartbeat_s: float = field(
        default=1.0, metadata=_doc("how often a node reads its workers' load and writes its heartbeat")
    )
    max_tracks_per_worker: int = field(
        default=1152,
        metadata=_doc(
            "no new room is placed on a worker forwarding this many tracks (in plus out; 0: no limit); "
            "1152 is 144 participants in rooms of four x (2 in + 6 out), 81 % of one core in the small-rooms benchmark"
        ),
    )
    max_worker_cpu_percent: float = field(
        default=85.0,
        metadata=_doc("no new room is placed on a worker busier than this (percent of one core; 0: no ceiling)"),
    )
    participant_placement: str = field(
        default="gather",
        metadata=_doc(
            "where a participant of a running room goes: gather (on the room's worker, wherever the "
            "client connected) or local (on a worker of the node it connected to; the room then spans "
            "workers and nodes, its producers relayed over media links)"
        ),
    )
    link_srtp: bool = field(
        default=True,
        metadata=_doc(
            "encrypt media links between nodes with SRTP (keys exchanged over the internal endpoints); "
            "false only on a trusted network (links inside one node are always plain)"
        ),
    )
    link_drop_every: int = field(
        default=0,
        metadata=_doc("testing: drop every Nth RTP packet a media link sends (0: none), to exercise NACK repair"),
    )

    # -- derived ------------------------------------------------------------------------

    @property
    def tls_enabled(self) -> bool:
        return self.tls_self_signed or self.tls_cert_file is not None

    @property
    def auth_enabled(self) -> bool:
        return bool(self.auth_secret)

    @property
    def open_rooms(self) -> bool:
        """Whether a join without a token is accepted."""
        return self.allow_open_rooms or not self.auth_enabled

    @property
    def worker_count(self) -> int:
        """How many worker processes: ``workers``, or one per core for 0 ("auto")."""
        return self.workers or (os.cpu_count() or 1)

    @property
    def clustered(self) -> bool:
        """Whether this host runs a front process and workers (not one plain process)."""
        return self.worker_count > 1 or bool(self.redis_url)

    def advisories(self) -> list[str]:
        """Settings that are valid but probably not what was meant, logged at start."""
        out = []
        needed = 2 * (self.room_capacity - 1) + 1  # audio and video of every other one, data channels
        if needed > self.max_m_sections_per_sdp:
            out.append(
                f"room_capacity {self.room_capacity} with max_m_sections_per_sdp {self.max_m_sections_per_sdp}: "
                f"a subscriber is offered at most {self.max_m_sections_per_sdp - 1} tracks, so in a full room "
                f"not everyone receives everyone's audio and video; max_m_sections_per_sdp = {needed} "
                "(more for screen shares) covers it"
            )
        # A subscriber's answer takes about 1.2 KB per m-section (aiortc; a browser's is
        # similar); one that does not fit in a signaling frame is refused (too-large) and that
        # subscriber gets no further tracks.
        sdp_bytes = SDP_BYTES_PER_M_SECTION * self.max_m_sections_per_sdp
        if sdp_bytes > self.max_message_bytes:
            out.append(
                f"max_m_sections_per_sdp {self.max_m_sections_per_sdp} with max_message_bytes {self.max_message_bytes}: "
                f"an answer to a full subscribe offer can take {sdp_bytes} bytes, more than a signaling frame may "
                f"hold; max_message_bytes = {sdp_bytes} covers it"
            )
        return out

    def validate(self) -> Config:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1..65535, got {self.port}")
        if self.room_capacity < 1:
            raise ConfigError(f"room_capacity must be at least 1, got {self.room_capacity}")
        if self.max_message_bytes < 1024:
            raise ConfigError(f"max_message_bytes must be at least 1024, got {self.max_message_bytes}")
        if not 0 < self.heartbeat_interval_s <= 60:
            raise ConfigError(f"heartbeat_interval_s must be in (0, 60], got {self.heartbeat_interval_s}")
        if not 0 <= self.resume_grace_s <= 3600:
            raise ConfigError(f"resume_grace_s must be in [0, 3600], got {self.resume_grace_s}")
        if self.max_connections < 1 or self.max_connections_per_address < 1:
            raise ConfigError("max_connections and max_connections_per_address must be at least 1")
        if not 0 < self.join_timeout_s <= 3600:
            raise ConfigError(f"join_timeout_s must be in (0, 3600], got {self.join_timeout_s}")
        if self.messages_per_s <= 0 or self.message_burst < 1:
            raise ConfigError("messages_per_s must be positive and message_burst at least 1")
        if self.max_queued_bytes < self.max_message_bytes:
            raise ConfigError("max_queued_bytes must be at least max_message_bytes")
        if self.publisher_bitrate_bps < 0:
            raise ConfigError("publisher_bitrate_bps must not be negative")
        if self.max_tracks_per_publisher < 1 or self.max_m_sections_per_sdp < 2:
            raise ConfigError("max_tracks_per_publisher must be at least 1 and max_m_sections_per_sdp at least 2")
        if not 0 < self.negotiation_timeout_s <= 300:
            raise ConfigError(f"negotiation_timeout_s must be in (0, 300], got {self.negotiation_timeout_s}")
        if self.max_rtcp_bps < 8_000:
            raise ConfigError(f"max_rtcp_bps must be at least 8000, got {self.max_rtcp_bps}")
        if not 64 <= self.max_data_message_bytes <= 262144:
            raise ConfigError(f"max_data_message_bytes must be 64..262144, got {self.max_data_message_bytes}")
        if self.data_messages_per_s <= 0 or self.data_message_burst < 1:
            raise ConfigError("data_messages_per_s must be positive and data_message_burst at least 1")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
        for server in self.ice_servers:
            if not isinstance(server, dict) or "urls" not in server:
                raise ConfigError(f"ice_servers entries need 'urls': {server!r}")
        # TLS
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.tls_self_signed and self.tls_cert_file is not None:
            raise ConfigError("tls_self_signed and tls_cert_file exclude each other")
        for name in ("tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{name}: no such file: {path}")
        # Auth
        if self.auth_secret and len(self.auth_secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"auth_secret must be at least {MIN_SECRET_BYTES} bytes")
        if not self.auth_secret and not self.allow_open_rooms and not is_loopback(self.host):
            raise ConfigError(
                f"listening on {self.host} with no auth_secret would let anyone in: set auth_secret "
                "(SFU_AUTH_SECRET) or, to really run open rooms, allow_open_rooms = true"
            )
        if self.token_ttl_s <= 0:
            raise ConfigError("token_ttl_s must be positive")
        # ICE
        for address in self.ice_host_addresses:
            _check_ip("ice_host_addresses", address)
        wildcard = [a for a in self.ice_host_addresses if ipaddress.ip_address(a).is_unspecified]
        if wildcard and not self.ice_announced_address:
            raise ConfigError(f"ice_host_addresses {wildcard[0]} (wildcard) needs ice_announced_address")
        if self.ice_announced_address:
            announced = _check_ip("ice_announced_address", self.ice_announced_address)
            if announced.is_unspecified:
                raise ConfigError("ice_announced_address must be a concrete address, not a wildcard")
        if (self.ice_port_min == 0) != (self.ice_port_max == 0):
            raise ConfigError("ice_port_min and ice_port_max go together: set both or neither")
        if self.ice_port_min and not 1024 <= self.ice_port_min <= self.ice_port_max <= 65535:
            raise ConfigError(
                f"ice port range must satisfy 1024 <= ice_port_min <= ice_port_max <= 65535, "
                f"got {self.ice_port_min}..{self.ice_port_max}"
            )
        if self.turn_urls and not self.turn_secret:
            raise ConfigError("turn_urls needs turn_secret (coturn's static-auth-secret)")
        if self.turn_secret and not self.turn_urls:
            raise ConfigError("turn_secret is set but turn_urls is empty")
        for url in self.turn_urls:
            if not url.startswith(("turn:", "turns:")):
                raise ConfigError(f"turn_urls entries must start with turn: or turns:, got {url!r}")
        if self.turn_ttl_s <= 0:
            raise ConfigError("turn_ttl_s must be positive")
        if self.shutdown_grace_s < 0:
            raise ConfigError("shutdown_grace_s must not be negative")
        if self.max_ssrcs_per_transport < 1:
            raise ConfigError(f"max_ssrcs_per_transport must be at least 1, got {self.max_ssrcs_per_transport}")
        if self.workers < 0:
            raise ConfigError(f'workers must be a positive number or "auto" (0), got {self.workers}')
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"redis_url must start with redis://, rediss:// or unix://, got {self.redis_url!r}")
        if self.redis_url and len(self.cluster_secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"redis_url needs cluster_secret (at least {MIN_SECRET_BYTES} bytes), the same on every node"
            )
        if self.cluster_secret and len(self.cluster_secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"cluster_secret must be at least {MIN_SECRET_BYTES} bytes")
        if not 0 < self.node_ttl_s <= 60:
            raise ConfigError(f"node_ttl_s must be in (0, 60], got {self.node_ttl_s}")
        if not 0 < self.node_heartbeat_s <= self.node_ttl_s / 2:
            raise ConfigError(
                f"node_heartbeat_s must be positive and at most half of node_ttl_s, got {self.node_heartbeat_s}"
            )
        if self.max_tracks_per_worker < 0 or self.max_worker_cpu_percent < 0:
            raise ConfigError("max_tracks_per_worker and max_worker_cpu_percent must not be negative")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError(f"public_url must start with http:// or https://, got {self.public_url!r}")
        if self.clustered and _is_wildcard(self.cluster_host):
            raise ConfigError(
                f"cluster_host {self.cluster_host} is a wildcard: the workers' URLs need an address the "
                "front processes reach (127.0.0.1 on one host; this host's cluster address otherwise)"
            )
        if self.participant_placement not in ("gather", "local"):
            raise ConfigError(f"participant_placement must be gather or local, got {self.participant_placement!r}")
        if self.link_drop_every < 0:
            raise ConfigError(f"link_drop_every must not be negative, got {self.link_drop_every}")
        workers = self.worker_count
        if workers > 1 and self.ice_port_min and (self.ice_port_max - self.ice_port_min + 1) < 2 * workers:
            raise ConfigError(
                f"ice port range {self.ice_port_min}..{self.ice_port_max} is too small for {workers} workers"
            )
        return self

    def public_view(self) -> dict[str, Any]:
        """Every option with secrets masked, for printing."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_OPTIONS and value:
                value = "***"
            out[f.name] = value
        return out


SECRET_OPTIONS = {"auth_secret", "turn_secret", "cluster_secret", "redis_url"}  # a URL may carry a password
OPTION_NAMES = [f.name for f in fields(Config)]
ENV_PREFIX = "SFU_"
CONFIG_ENV = "SFU_CONFIG"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _check_ip(name: str, value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not an IP address") from None


def _kind(name: str) -> str:
    """The type of an option, as one of: bool int float str path optpath strs servers."""
    default = next(f for f in fields(Config) if f.name == name).default
    if name in ("tls_cert_file", "tls_key_file"):
        return "optpath"
    if name == "ice_servers":
        return "servers"
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, Path):
        return "path"
    if isinstance(default, tuple):
        return "strs"
    return "str"


def _from_string(name: str, raw: str, source: str) -> Any:
    """An option from an environment variable or a command-line string."""
    kind = _kind(name)
    try:
        if kind == "bool":
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"expected true or false, got {raw!r}")
        if kind == "int":
            if name == "workers" and raw.strip().lower() == "auto":
                return 0
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind in ("path", "optpath"):
            return Path(raw) if raw else None if kind == "optpath" else Path(".")
        if kind == "strs":
            return tuple(a.strip() for a in raw.split(",") if a.strip())
        if kind == "servers":
            value = json.loads(raw)
            if not isinstance(value, list):
                raise ValueError("expected a JSON list")
            return tuple(value)
        return raw
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def _from_toml(name: str, value: Any, source: str) -> Any:
    """An option from a TOML value, type-checked."""
    kind = _kind(name)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {name} must be {expected}, got {type(value).__name__} {value!r}")

    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "int":
        if name == "workers" and value == "auto":
            return 0
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("an integer")
        return value
    if kind == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise bad("a number")
        return float(value)
    if kind in ("path", "optpath"):
        if not isinstance(value, str):
            raise bad("a path string")
        return Path(value).expanduser()
    if kind == "strs":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    if kind == "servers":
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise bad("a list of tables ({urls = ..., username = ..., credential = ...})")
        return tuple(dict(v) for v in value)
    if not isinstance(value, str):
        raise bad("a string")
    return value


def from_file(path: Path | str, base: Config | None = None) -> Config:
    """Apply a TOML file on top of ``base`` (not validated yet). Unknown keys are errors."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(OPTION_NAMES))
    if unknown:
        raise ConfigError(f"{path}: unknown option(s): {', '.join(unknown)} (see docs/configuration.md)")
    changes = {name: _from_toml(name, value, str(path)) for name, value in data.items()}
    return replace(base or Config(), **changes)


def env_changes(environ: dict[str, str] | os._Environ[str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    changes: dict[str, Any] = {}
    for name in OPTION_NAMES:
        key = ENV_PREFIX + name.upper()
        if key in env:
            changes[name] = _from_string(name, env[key], key)
    return changes


def from_env(base: Config | None = None, environ: dict[str, str] | None = None) -> Config:
    """Apply SFU_<OPTION> environment variables (e.g. SFU_PORT=9000) on top of ``base``."""
    return replace(base or Config(), **env_changes(environ)).validate()


def load(
    config_file: Path | str | None = None,
    cli: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """defaults < file (``config_file`` or SFU_CONFIG) < SFU_* environment < ``cli``; validated."""
    env = os.environ if environ is None else environ
    config = Config()
    path = config_file or env.get(CONFIG_ENV) or None
    if path:
        config = from_file(path, config)
    config = replace(config, **env_changes(env))
    config = replace(config, **{k: v for k, v in (cli or {}).items() if v is not None})
    return config.validate()


def option_docs() -> list[tuple[str, str, str, str]]:
    """(name, environment variable, default as TOML-ish text, meaning) for every option."""
    rows = []
    for f in fields(Config):
        default = f.default
        if f.name == "client_dir":
            shown = "the repository's client/"
        elif f.name == "tls_self_signed_dir":
            shown = '"~/.cache/sfu/tls"'
        elif default is None:
            shown = "unset"
        elif isinstance(default, bool):
            shown = "true" if default else "false"
        elif isinstance(default, (str, Path)):
            shown = json.dumps(str(default))
        elif isinstance(default, tuple):
            shown = "[]"
        else:
            shown = str(default)
        rows.append((f.name, ENV_PREFIX + f.name.upper(), shown, f.metadata.get("doc", "")))
    return rows


def to_mapping(config: Config) -> dict[str, Any]:
    """Every option as TOML-like plain values (paths as strings, tuples as lists, unset paths
    left out): what ``from_mapping`` reads back, e.g. to hand a worker process its settings."""
    out: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if value is None:
            continue
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = [dict(v) if isinstance(v, dict) else v for v in value]
        out[f.name] = value
    return out


def from_mapping(data: dict[str, Any], source: str = "settings") -> Config:
    """A Config from ``to_mapping``'s output (type-checked like a file; not validated yet)."""
    unknown = sorted(set(data) - set(OPTION_NAMES))
    if unknown:
        raise ConfigError(f"{source}: unknown option(s): {', '.join(unknown)}")
    return Config(**{name: _from_toml(name, value, source) for name, value in data.items()})

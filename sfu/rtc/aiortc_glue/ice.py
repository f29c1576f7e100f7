"""ICE: which addresses host candidates are gathered on, bound to and advertised, and a close
at any moment of gathering or connecting.

- ``set_host_addresses`` pins the host candidate addresses, which aioice cannot do.
- ``guard_ice_close`` makes aioice's ``connect`` fail when the connection was closed while it
  ran, instead of starting consent checks that never end.

aioice binds each host candidate with ``create_datagram_endpoint(local_addr=(address, 0))``
in ``Connection.get_component_candidates`` and advertises the bound address. A server in a
container or behind 1:1 NAT needs two things aioice cannot do:

- a UDP port range (so the range can be published/forwarded): host sockets are bound to a
  free port of [port_min, port_max] instead of port 0; server-reflexive candidates are then
  queried over those sockets with aioice's own ``server_reflexive_candidate``, and TURN
  (whose client socket only talks to the TURN server) is left to aioice;
- an announced address (what mediasoup calls ``announcedAddress``, LiveKit ``node_ip`` and
  Janus ``nat_1_1_mapping``): the host candidate keeps its socket but advertises the public
  address (same port: 1:1 NAT maps ports unchanged). ``keep_private_host`` also keeps the
  private candidate, like Janus' ``keep_private_host``, for clients on the same LAN.

Both are process-wide, like ``set_host_addresses`` (aioice has no per-connection hook and
the server is one process); ``create_app`` sets them from its Config every time.

The replacement also closes what a gather opened when the connection was closed meanwhile
(a participant leaving while its offer or answer is made): aioice's ``close()`` only closes
the sockets it already knows of, and a later one would stay open, registered in the event
loop and keeping its connection alive, for as long as the process runs.
"""

from __future__ import annotations

import asyncio
import errno as _errno
import inspect as _inspect
import logging
import random as _random
import socket as _socket
from collections.abc import Sequence

import aioice.candidate
import aioice.ice
import aioice.turn

from ..ice_addresses import NetworkSettings, announces, is_ipv4, keeps_private, pinned_for, port_order
from .compat import GlueError, missing_attributes, missing_names

logger = logging.getLogger(__name__)

# -- host candidate addresses -------------------------------------------------------------

_original_get_host_addresses = aioice.ice.get_host_addresses


def set_host_addresses(addresses: Sequence[str] | None) -> None:
    """Pin the addresses aioice gathers host candidates on (None: every interface).

    aioice never gathers 127.0.0.1; pinning it makes loopback calls possible, and pinning
    one interface is what a server with several interfaces needs.
    """
    if not addresses:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return
    pinned = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return pinned_for(pinned, use_ipv4, use_ipv6)

    aioice.ice.get_host_addresses = get_host_addresses


# -- a close while connecting -------------------------------------------------------------

_original_connect = aioice.ice.Connection.connect


async def _connect(self: aioice.ice.Connection) -> None:
    """aioice's ``connect``, failing if the connection was closed while it checked.

    Closed after its check list completed but before ``connect`` resumed, aioice's method
    would return as if connected and start consent checks on the closed connection: a task
    that nothing cancels any more and that never ends (the connection has no nominated pair
    left whose consent could expire), keeping the connection alive for as long as the
    process runs.
    """
    await _original_connect(self)
    if self._closing:
        consent, self._query_consent_task = self._query_consent_task, None
        if consent is not None:
            consent.cancel()
        raise ConnectionError("ICE connection closed while connecting")


def guard_ice_close() -> None:
    """Make closing an ICE connection at any moment of connecting end it (idempotent)."""
    aioice.ice.Connection.connect = _connect  # type: ignore[method-assign]


# -- port range and announced address -----------------------------------------------------

_original_get_component_candidates = aioice.ice.Connection.get_component_candidates
# What our replacement assumes of aioice's method; checked by check_network_compatibility.
_GATHER_MARKERS = ("local_addr=(address, 0)", "self._protocols += host_protocols", "server_reflexive_candidate")


_network = NetworkSettings()


def _network_problems() -> list[str]:
    found = missing_attributes(
        [
            (aioice.ice, "server_reflexive_candidate"),
            (aioice.ice, "StunProtocol"),
            (aioice.ice.Connection, "get_component_candidates"),
            (aioice.candidate, "candidate_foundation"),
            (aioice.candidate, "candidate_priority"),
            (aioice.turn, "UDP_SOCKET_BUFFER_SIZE"),
        ]
    )
    try:
        source = _inspect.getsource(_original_get_component_candidates)
    except (OSError, TypeError):
        source = ""
    found += [f"get_component_candidates no longer has {m!r}" for m in _GATHER_MARKERS if m not in source]
    found += missing_names([aioice.ice.Connection.__init__], ["_protocols", "_closing"], "Connection.{} is missing")
    params = list(_inspect.signature(aioice.candidate.Candidate).parameters)
    if params[:7] != ["foundation", "component", "transport", "priority", "host", "port", "type"]:
        found.append(f"Candidate() takes {params}")
    return found


def check_network_compatibility() -> None:
    """Raise GlueError unless the aioice internals of the port range and announced address
    are present (``configure_network`` checks before it replaces aioice's gathering)."""
    found = _network_problems()
    if found:
        raise GlueError("aioice internals changed: " + "; ".join(found))


def configure_network(
    port_min: int | None = None,
    port_max: int | None = None,
    announced_address: str | None = None,
    keep_private_host: bool = False,
) -> None:
    """Bind ICE host candidates in [port_min, port_max] and/or advertise ``announced_address``
    for them. All None: aioice's own gathering (sockets opened after a close still closed)."""
    global _network
    _network = NetworkSettings(port_min, port_max, announced_address, keep_private_host)
    check_network_compatibility()
    aioice.ice.Connection.get_component_candidates = _get_component_candidates  # type: ignore[method-assign]


def network_settings() -> NetworkSettings:
    return _network


async def _bind_in_range(
    connection: aioice.ice.Connection, address: str, port_min: int, port_max: int
) -> tuple[asyncio.DatagramTransport, aioice.ice.StunProtocol] | None:
    """A UDP endpoint on ``address`` at a free port of the range (random start), or None."""
    loop = asyncio.get_running_loop()
    for port in port_order(port_min, port_max, _random.randrange(port_max - port_min + 1)):
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: aioice.ice.StunProtocol(connection), local_addr=(address, port)
            )
        except OSError as exc:
            if exc.errno in (_errno.EADDRINUSE, _errno.EACCES):
                continue
            raise
        return transport, protocol
    return None


async def _gather_in_port_range(
    connection: aioice.ice.Connection,
    component: int,
    addresses: list[str],
    timeout: int,
    net: NetworkSettings,
) -> list[aioice.candidate.Candidate]:
    assert net.port_min is not None and net.port_max is not None
    candidates: list[aioice.candidate.Candidate] = []
    host_protocols: list[aioice.ice.StunProtocol] = []
    for address in addresses:
        try:
            bound = await _bind_in_range(connection, address, net.port_min, net.port_max)
        except OSError as exc:
            logger.warning("ICE: could not bind to %s: %s", address, exc)
            continue
        if bound is None:
            logger.warning("ICE: no free UDP port in %d-%d on %s", net.port_min, net.port_max, address)
            continue
        transport, protocol = bound
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, aioice.turn.UDP_SOCKET_BUFFER_SIZE)
        host, port = transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = aioice.candidate.Candidate(
            foundation=aioice.candidate.candidate_foundation("host", "udp", host),
            component=component,
            transport="udp",
            priority=aioice.candidate.candidate_priority(component, "host"),
            host=host,
            port=port,
            type="host",
        )
        candidates.append(protocol.local_candidate)
        host_protocols.append(protocol)
    connection._protocols += host_protocols
    # Server-reflexive candidates over our sockets; TURN exactly as aioice does it (called
    # with no addresses, aioice's method gathers nothing but the relayed candidate).
    tasks = []
    if connection.stun_server:
        for protocol in host_protocols:
            if is_ipv4(protocol.local_candidate.host):
                tasks.append(
                    asyncio.ensure_future(aioice.ice.server_reflexive_candidate(protocol, connection.stun_server))
                )
    relayed = asyncio.ensure_future(_original_get_component_candidates(connection, component, [], timeout))
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in done:
            if task.exception() is None:
                candidates.append(task.result()[0])
        for task in pending:
            task.cancel()
    candidates += await relayed
    return candidates


def _announce(
    connection: aioice.ice.Connection, candidates: list[aioice.candidate.Candidate], net: NetworkSettings
) -> list[aioice.candidate.Candidate]:
    """Advertise the announced address for every host candidate of its IP family."""
    announced = net.announced_address
    assert announced is not None
    out: list[aioice.candidate.Candidate] = []
    for candidate in candidates:
        if candidate.type != "host" or not announces(candidate.host, announced):
            out.append(candidate)
            continue
        public = aioice.candidate.Candidate(
            foundation=aioice.candidate.candidate_foundation("host", "udp", announced),
            component=candidate.component,
            transport=candidate.transport,
            priority=candidate.priority,
            host=announced,
            port=candidate.port,
            type="host",
        )
        for protocol in connection._protocols:
            if protocol.local_candidate is candidate:
                protocol.local_candidate = public
        out.append(public)
        if keeps_private(candidate.host, announced, net.keep_private_host):
            candidate.priority -= 1  # same socket: prefer the public one
            out.append(candidate)
    return out


async def _get_component_candidates(
    self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5
) -> list[aioice.candidate.Candidate]:
    net = _network
    if net.port_min is not None:
        candidates = await _gather_in_port_range(self, component, addresses, timeout, net)
    else:
        candidates = await _original_get_component_candidates(self, component, addresses, timeout)
    if self._closing:
        # Closed while gathering: close() has already closed the sockets it knew of, and the
        # ones opened since would stay registered in the event loop (keeping this connection
        # alive) for good.
        protocols, self._protocols = self._protocols, []
        for protocol in protocols:
            await protocol.close()
        return []
    if net.announced_address:
        candidates = _announce(self, candidates, net)
    return candidates


def problems() -> list[str]:
    """What of aioice this module relies on and is missing."""
    found = missing_attributes([(aioice.ice, "get_host_addresses")])
    found += missing_names(
        [aioice.ice.Connection.__init__], ["_closing", "_query_consent_task"], "Connection.{} is missing"
    )
    found += missing_names([_original_connect], ["_query_consent_task"], "Connection.connect no longer starts {}")
    return found + _network_problems()

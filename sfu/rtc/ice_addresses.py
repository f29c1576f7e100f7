"""Where ICE host candidates are bound and what they advertise: the pure decisions.

The glue (``aiortc_glue.ice``) replaces aioice's gathering to pin host addresses, bind in a
UDP port range and advertise an announced address (1:1 NAT); what of that needs no aioice
object is here: which pinned addresses a gather uses, the settings and their checks, the
order ports of the range are tried in, and which host candidates get the announced address.
Pure: no aiortc or aioice here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


def pinned_for(pinned: Sequence[str], use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """The pinned addresses of the IP families a gather asks for."""
    return [a for a in pinned if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


@dataclass(frozen=True)
class NetworkSettings:
    """A UDP port range for host candidates and/or the address they advertise (all None:
    aioice's own choice); ``keep_private_host`` also advertises the bound address."""

    port_min: int | None = None
    port_max: int | None = None
    announced_address: str | None = None
    keep_private_host: bool = False

    def __post_init__(self) -> None:
        if (self.port_min is None) != (self.port_max is None):
            raise ValueError("port_min and port_max go together")
        if self.port_min is not None and self.port_max is not None and not 0 < self.port_min <= self.port_max < 65536:
            raise ValueError(f"bad port range {self.port_min}-{self.port_max}")


def port_order(port_min: int, port_max: int, start: int) -> Iterator[int]:
    """Every port of [port_min, port_max] once, from the ``start``-th on (wrapping around):
    a random start spreads connections over the range."""
    span = port_max - port_min + 1
    for i in range(span):
        yield port_min + (start + i) % span


def is_ipv4(host: str) -> bool:
    return ipaddress.ip_address(host).version == 4


def announces(host: str, announced: str) -> bool:
    """Whether a host candidate on ``host`` advertises ``announced`` (same IP family)."""
    return ipaddress.ip_address(host).version == ipaddress.ip_address(announced).version


def keeps_private(host: str, announced: str, keep_private_host: bool) -> bool:
    """Whether the host candidate on ``host`` is advertised too, next to the announced one:
    if asked for, and unless it is the wildcard or the announced address itself."""
    return keep_private_host and not ipaddress.ip_address(host).is_unspecified and host != announced

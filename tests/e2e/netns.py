"""A network namespace for a confined Chromium, joined to the host by a veth pair.

`tc tbf` on the host side of the pair caps what the server sends into the namespace (the
kernels we test on have neither netem nor gact); nftables' `numgen random` drops a share of
the UDP packets in either direction at random. Names and addresses are fixed: run the
tests that use it under the e2e lock only (stale `sfu-e2e-*` namespaces are deleted). The `lab`
fixture (tests/e2e/conftest.py) gives a test a namespace and a server that listens on both sides.
"""

import os
import subprocess
import tempfile

from tests.e2e.chromium import CHROMIUM

NS = f"sfu-e2e-{os.getpid()}"
HOST_IF, NS_IF = f"sfuh{os.getpid() % 100000}", f"sfus{os.getpid() % 100000}"
HOST_IP, NS_IP = "10.99.0.1", "10.99.0.2"
LOSS_TABLE = "sfu_e2e_loss"  # nftables table (in the namespace, or on the host for uplink loss)
CUT_TABLE = "sfu_e2e_cut"  # nftables table of cut(): everything dropped, both ways
NS_IP_2 = "10.99.0.3"  # the address move_address() moves the namespace's interface to


def _random_drop(percent: int) -> list[str]:
    return ["meta", "l4proto", "udp", "numgen", "random", "mod", "100", "<", str(percent), "counter", "drop"]


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


class Namespace:
    def __init__(self) -> None:
        self.remove_stale()
        sh("ip", "netns", "add", NS)
        sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        sh("ip", "link", "set", NS_IF, "netns", NS)
        sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", HOST_IF)
        sh("ip", "link", "set", HOST_IF, "up")
        sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NS_IP}/24", "dev", NS_IF)
        sh("ip", "netns", "exec", NS, "ip", "link", "set", NS_IF, "up")
        sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
        with tempfile.NamedTemporaryFile("w", suffix="-chromium", delete=False) as wrapper:
            wrapper.write(f'#!/bin/sh\nexec ip netns exec {NS} {CHROMIUM} "$@"\n')
        self.wrapper = wrapper
        os.chmod(wrapper.name, 0o755)

    @staticmethod
    def remove_stale() -> None:
        """Namespaces and links left by a run that was killed before it could clean up."""
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        for line in links.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith("sfuh"):
                subprocess.run(["ip", "link", "del", name], capture_output=True)
        subprocess.run(["nft", "delete", "table", "inet", LOSS_TABLE], capture_output=True)
        subprocess.run(["nft", "delete", "table", "inet", CUT_TABLE], capture_output=True)
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in namespaces.splitlines():
            if line.startswith("sfu-e2e-"):
                subprocess.run(["ip", "netns", "del", line.split()[0]], capture_output=True)

    def shape(self, *qdisc: str) -> None:
        """Replace the downlink shaping (what the host sends into the namespace)."""
        self.unshape()
        sh("tc", "qdisc", "add", "dev", HOST_IF, "root", *qdisc)

    def unshape(self) -> None:
        subprocess.run(["tc", "qdisc", "del", "dev", HOST_IF, "root"], capture_output=True)

    def lose(self, percent: int, direction: str) -> None:
        """Drop ``percent`` % of the UDP packets going into the namespace ("down") or coming
        out of it ("up"), at random. Both are dropped where they arrive (a drop on the
        sender's own output path would fail its sendto() instead of losing the packet)."""
        if direction == "down":
            self._nft_ns("add", "table", "inet", LOSS_TABLE)
            self._nft_ns("add", "chain", "inet", LOSS_TABLE, "c", "{ type filter hook input priority 0; }")
            self._nft_ns("add", "rule", "inet", LOSS_TABLE, "c", *_random_drop(percent))
        else:
            sh("nft", "add", "table", "inet", LOSS_TABLE)
            sh("nft", "add", "chain", "inet", LOSS_TABLE, "c", "{ type filter hook input priority 0; }")
            sh("nft", "add", "rule", "inet", LOSS_TABLE, "c", "iifname", HOST_IF, *_random_drop(percent))

    def _nft_ns(self, *args: str) -> None:
        sh("ip", "netns", "exec", NS, "nft", *args)

    def dropped_packets(self) -> int:
        """UDP packets dropped by ``lose`` so far."""
        total = 0
        for prefix in (["ip", "netns", "exec", NS], []):
            out = subprocess.run(
                [*prefix, "nft", "list", "table", "inet", LOSS_TABLE], capture_output=True, text=True
            ).stdout.split()
            total += sum(int(out[i + 1]) for i, w in enumerate(out) if w == "packets" and i + 1 < len(out))
        return total

    def cut(self) -> None:
        """The network goes away: every packet into or out of the namespace (TCP too) is dropped
        where it arrives, both ways; restore() brings it back."""
        self._nft_ns("add", "table", "inet", CUT_TABLE)
        self._nft_ns("add", "chain", "inet", CUT_TABLE, "c", "{ type filter hook input priority -10; }")
        self._nft_ns("add", "rule", "inet", CUT_TABLE, "c", "iifname", NS_IF, "drop")
        sh("nft", "add", "table", "inet", CUT_TABLE)
        sh("nft", "add", "chain", "inet", CUT_TABLE, "c", "{ type filter hook input priority -10; }")
        sh("nft", "add", "rule", "inet", CUT_TABLE, "c", "iifname", HOST_IF, "drop")

    def restore(self) -> None:
        subprocess.run(["ip", "netns", "exec", NS, "nft", "delete", "table", "inet", CUT_TABLE], capture_output=True)
        subprocess.run(["nft", "delete", "table", "inet", CUT_TABLE], capture_output=True)

    def reset_tcp(self, server_port: int) -> list[int]:
        """Reset the namespace's established TCP connections to ``server_port`` (the signaling
        WebSockets) and nothing else: their next segments from the namespace are answered with a
        TCP reset by the host. Returns the local ports cut; unreset() lifts the rule (new
        connections from other ports are never affected)."""
        out = subprocess.run(
            ["ip", "netns", "exec", NS, "ss", "-tnH", "state", "established", "dst", f"{HOST_IP}:{server_port}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        ports = sorted({int(line.split()[-2].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()})
        sh("nft", "add", "table", "inet", CUT_TABLE)
        sh("nft", "add", "chain", "inet", CUT_TABLE, "r", "{ type filter hook input priority -10; }")
        for port in ports:
            sh(
                "nft", "add", "rule", "inet", CUT_TABLE, "r", "iifname", HOST_IF,
                "tcp", "sport", str(port), "tcp", "dport", str(server_port), "reject", "with", "tcp", "reset",
            )  # fmt: skip
        return ports

    def unreset(self) -> None:
        subprocess.run(["nft", "delete", "table", "inet", CUT_TABLE], capture_output=True)

    def move_address(self) -> None:
        """The namespace's interface changes address (as on a switch of network): the new one
        added, then the old one removed (secondaries promoted, so the new one stays)."""
        for conf in ("all", NS_IF):
            sh("ip", "netns", "exec", NS, "sysctl", "-qw", f"net.ipv4.conf.{conf}.promote_secondaries=1")
        sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NS_IP_2}/24", "dev", NS_IF)
        sh("ip", "netns", "exec", NS, "ip", "addr", "del", f"{NS_IP}/24", "dev", NS_IF)

    def close(self) -> None:
        subprocess.run(["nft", "delete", "table", "inet", LOSS_TABLE], capture_output=True)
        subprocess.run(["nft", "delete", "table", "inet", CUT_TABLE], capture_output=True)
        subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)
        os.unlink(self.wrapper.name)

"""A peer connection closed while its ICE candidates are being gathered (a participant leaves
while its offer or answer is being made) must not leave the gathered UDP sockets open: an open
socket stays registered in the event loop, which keeps its aioice connection alive for good."""

import asyncio
import gc
import os

import aioice.ice
import pytest

from sfu.rtc import aiortc_glue as glue


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def live_connections() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is aioice.ice.Connection)


@pytest.fixture
def loopback_ice():
    glue.set_host_addresses(["127.0.0.1"])
    yield
    glue.set_host_addresses(None)
    glue.configure_network()


@pytest.mark.parametrize(
    "network",
    [{}, {"port_min": 40000, "port_max": 40999}, {"announced_address": "192.0.2.7"}],
    ids=["default", "port-range", "announced"],
)
async def test_closing_an_ice_connection_at_any_point_of_gathering_closes_its_sockets(loopback_ice, network):
    glue.configure_network(**network)
    fds_before = open_fds()
    assert live_connections() == 0
    for steps in range(12):  # close after 0, 1, 2, ... turns of the event loop
        connection = aioice.ice.Connection(ice_controlling=True)
        gathering = asyncio.ensure_future(connection.gather_candidates())
        for _ in range(steps):
            await asyncio.sleep(0)
        await connection.close()
        await asyncio.gather(gathering, return_exceptions=True)
        del connection, gathering
        await asyncio.sleep(0)
        assert open_fds() == fds_before, f"a socket stayed open when closed after {steps} loop turns"
        assert live_connections() == 0, f"the connection stayed alive when closed after {steps} loop turns"


async def test_closing_a_peer_connection_while_it_makes_its_offer_closes_its_sockets(loopback_ice):
    glue.configure_network()
    fds_before = open_fds()
    for steps in range(12):
        pc = glue.create_peer_connection([])
        pc.addTransceiver("audio", direction="sendonly")
        offering = asyncio.ensure_future(pc.setLocalDescription(await pc.createOffer()))
        for _ in range(steps):
            await asyncio.sleep(0)
        await pc.close()
        await asyncio.gather(offering, return_exceptions=True)
        del pc, offering
        await asyncio.sleep(0)
        assert open_fds() == fds_before, f"a socket stayed open when closed after {steps} loop turns"
        assert live_connections() == 0, f"the connection stayed alive when closed after {steps} loop turns"

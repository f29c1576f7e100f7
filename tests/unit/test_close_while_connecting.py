"""A peer connection closed while it connects (a participant leaving mid-negotiation) must leave
nothing behind: no exception (aiortc connects from a task nobody awaits, so anything that task
raises is reported by the event loop as "Task exception was never retrieved") and no task still
running (one would keep its closed connection alive for as long as the process runs)."""

import asyncio
import gc
import logging

import pytest
from aiortc import RTCPeerConnection

from sfu.rtc import aiortc_glue as glue
from tests.conftest import eventually

# When the closing side is closed: on a state change of its ICE or DTLS transport, then after
# this many further turns of the event loop.
TRIGGERS = [
    ("ice", "checking"),
    ("ice", "completed"),
    ("dtls", "connecting"),
    ("dtls", "connected"),
]
TURNS = range(6)


@pytest.fixture
def loopback_ice():
    glue.set_host_addresses(["127.0.0.1"])
    yield
    glue.set_host_addresses(None)


@pytest.fixture
async def unhandled(caplog):
    """What the event loop reports as unhandled, and what asyncio and aiortc log as errors."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    loop.set_exception_handler(
        lambda _loop, context: seen.append(f"{context['message']}: {context.get('exception')!r}")
    )
    caplog.set_level(logging.ERROR)
    yield (
        lambda: (
            seen
            + [
                f"{r.name}: {r.getMessage()}"
                for r in caplog.records
                if r.levelno >= logging.ERROR and r.name.split(".")[0] in ("asyncio", "aiortc", "aioice")
            ]
        )
    )
    loop.set_exception_handler(None)


def close_on(pc: RTCPeerConnection, transport, state: str, turns: int, closing: list) -> None:
    """Close ``pc`` ``turns`` loop turns after ``transport`` reaches ``state``."""

    async def close() -> None:
        for _ in range(turns):
            await asyncio.sleep(0)
        await pc.close()

    @transport.on("statechange")
    def on_state() -> None:
        if transport.state == state and not closing:
            closing.append(asyncio.ensure_future(close()))


async def connect_and_close(side: str, layer: str, state: str, turns: int) -> None:
    offerer = glue.create_peer_connection()
    for kind in ("audio", "video", "video"):  # several m-sections bundled on one transport
        offerer.addTransceiver(kind, direction="sendrecv")
    answerer = glue.create_peer_connection()
    closing: list[asyncio.Future[None]] = []

    def watch(pc: RTCPeerConnection) -> None:
        dtls = pc.getTransceivers()[0].receiver.transport
        close_on(pc, dtls.transport if layer == "ice" else dtls, state, turns, closing)

    if side == "offerer":
        watch(offerer)
    await offerer.setLocalDescription(await offerer.createOffer())
    glue.detach_receivers(offerer)
    await answerer.setRemoteDescription(offerer.localDescription)
    glue.detach_receivers(answerer)
    if side == "answerer":
        watch(answerer)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    await eventually(lambda: closing and closing[0].done(), timeout=30, state=lambda: (layer, state, closing))
    await offerer.close()
    await answerer.close()
    closing.clear()
    me = asyncio.current_task()
    left = lambda: [t for t in asyncio.all_tasks() if t is not me and not t.done()]  # noqa: E731
    await eventually(lambda: not left(), timeout=30, state=lambda: f"tasks still running after the close: {left()}")
    del offerer, answerer
    gc.collect()  # a task's unretrieved exception is reported when the task is collected


@pytest.mark.parametrize("side", ["offerer", "answerer"])
@pytest.mark.parametrize(("layer", "state"), TRIGGERS, ids=[f"{layer}-{state}" for layer, state in TRIGGERS])
async def test_closing_a_peer_connection_while_it_connects_leaves_no_exception_and_no_task(
    loopback_ice, unhandled, side, layer, state
):
    for turns in TURNS:
        await connect_and_close(side, layer, state, turns)
        assert unhandled() == [], f"closed {turns} loop turns after {layer} {state}"

"""The data channel frame (sfu/data_frame.py) and the room's relay (sfu/data_relay.py) take any
bytes a participant puts on a data channel: the decoder answers a frame or MalformedFrame and
nothing else, a decoded frame encodes back to an equal one, and the relay answers every input
with a delivery or a data-error, never an exception."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sfu.data_frame import DataFrame, MalformedFrame, decode, encode
from sfu.data_relay import DataRelay

from .corpus import FUZZ, mutations

SEEDS = [
    encode(DataFrame(b"")),
    encode(DataFrame.of_text("hello", topic="chat")),
    encode(DataFrame(b"\x00\xff" * 20, topic="cursor", to=("p1abc", "p2def"), ref="42")),
    encode(DataFrame(b"x", sender="p1abc", topic="t")),
]


class Receiver:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, reliable: bool, frame: bytes) -> str | None:
        self.frames.append(frame)
        return None


def check(data: bytes, relay: DataRelay, receiver: Receiver) -> None:
    try:
        frame = decode(data)
    except MalformedFrame:
        frame = None
    if frame is not None:
        assert decode(encode(frame)) == frame
    errors: list[object] = []
    before = len(receiver.frames)
    relay.relay("sender", True, data, {"p1abc": receiver}, errors.append, 0.0)
    delivered = len(receiver.frames) - before
    assert delivered in (0, 1)
    # Nothing vanishes: not delivered means a data-error (or a destination that is not the receiver).
    if frame is None:
        assert delivered == 0 and len(errors) == 1
    for out in receiver.frames[before:]:
        assert decode(out).sender == "sender"


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_decode_to_a_frame_or_malformed_frame(data):
    check(data, DataRelay(1 << 20, 1e9, 1 << 30), Receiver())


def test_mutated_frames_decode_round_trip_and_relay_without_raising():
    relay, receiver = DataRelay(1 << 20, 1e9, 1 << 30, report_interval_s=0.0), Receiver()
    for data in mutations(SEEDS, salt=41):
        check(data, relay, receiver)

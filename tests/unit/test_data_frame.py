"""The data channel frame: round trips, the exact bytes, and every kind of malformed input."""

import json
import random

import pytest

from sfu.data_frame import (
    MAX_DESTINATIONS,
    MAX_HEADER_BYTES,
    DataFrame,
    MalformedFrame,
    decode,
    encode,
    peek_ref,
    relayed,
)


@pytest.mark.parametrize(
    "frame",
    [
        DataFrame(b""),
        DataFrame(b"\x00\x01\x02\xff" * 100),
        DataFrame.of_text("hello, wörld ✓"),
        DataFrame.of_text("", topic="chat"),
        DataFrame(b"bin", topic="cursor", to=("p1abc", "p2def"), ref="42"),
        DataFrame(b"from server", sender="p1abc", topic="t"),
    ],
)
def test_every_frame_round_trips(frame):
    assert decode(encode(frame)) == frame


def test_an_empty_header_costs_four_bytes():
    assert encode(DataFrame(b"xy")) == b"\x01\x00\x00\x00xy"
    assert encode(DataFrame.of_text("a")) == b"\x01\x01\x00\x00a"


def test_the_header_is_compact_json_after_a_big_endian_length():
    raw = encode(DataFrame(b"P", topic="t", to=("a",)))
    header = b'{"topic":"t","to":["a"]}'
    assert raw == bytes([1, 0, 0, len(header)]) + header + b"P"


def test_the_relayed_frame_carries_the_sender_and_topic_but_not_the_destinations_or_ref():
    sent = decode(encode(DataFrame.of_text("hi", topic="dm", to=("p2",), ref="r")))
    out = decode(relayed(sent, "p1"))
    assert out == DataFrame.of_text("hi", topic="dm", sender="p1")


def test_destinations_are_deduplicated_in_order():
    raw = encode(DataFrame(b"", to=("b", "a", "b")))
    assert decode(raw).to == ("b", "a")


def test_unknown_header_fields_are_ignored():
    header = json.dumps({"topic": "t", "future": [1, 2]}).encode()
    assert decode(bytes([1, 0, 0, len(header)]) + header + b"x") == DataFrame(b"x", topic="t")


def frame_with_header(header: bytes, flags: int = 0, payload: bytes = b"") -> bytes:
    return bytes([1, flags]) + len(header).to_bytes(2, "big") + header + payload


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "at least 4 bytes"),
        (b"\x01\x00\x00", "at least 4 bytes"),
        (b"\x02\x00\x00\x00", "version 2"),
        (b"\x01\x02\x00\x00", "flags 0x02"),
        (b"\x01\x00\x00\x10{}", "only 2 follow"),
        (b"\x01\x00\xff\xff" + b" " * 0xFFFF, f"at most {MAX_HEADER_BYTES}"),
        (frame_with_header(b"{oops"), "not JSON"),
        (frame_with_header(b"\xff\xfe"), "not JSON"),
        (frame_with_header(b"[1, 2]"), "JSON object"),
        (frame_with_header(b"[" * 2000 + b"]" * 2000), "nested too deeply"),
        (frame_with_header(b'{"topic": 5}'), "'topic'"),
        (frame_with_header(b'{"topic": ""}'), "'topic'"),
        (frame_with_header(json.dumps({"topic": "x" * 129}).encode()), "'topic'"),
        (frame_with_header(b'{"to": "p1"}'), "'to'"),
        (frame_with_header(b'{"to": []}'), "'to'"),
        (frame_with_header(b'{"to": [1]}'), "'to'"),
        (frame_with_header(json.dumps({"to": ["p"] * (MAX_DESTINATIONS + 1)}).encode()), "'to'"),
        (frame_with_header(b'{"ref": {}}'), "'ref'"),
        (frame_with_header(b'{"from": "x"}', flags=1, payload=b"\xc3"), "UTF-8"),
        (b"\x01\x01\x00\x00\xff", "UTF-8"),
    ],
)
def test_malformed_frames_say_what_is_wrong(raw, says):
    with pytest.raises(MalformedFrame) as info:
        decode(raw)
    assert says in str(info.value)


def test_random_bytes_raise_nothing_but_malformed_frame():
    rng = random.Random(16)
    good = encode(DataFrame.of_text("payload", topic="t", to=("a", "b"), ref="r"))
    for _ in range(5000):
        raw = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        raw = raw[: rng.randrange(len(raw) + 1)]
        try:
            frame = decode(bytes(raw))
        except MalformedFrame:
            continue
        assert isinstance(frame.payload, bytes)


def test_encode_refuses_a_header_over_the_limit():
    with pytest.raises(ValueError):
        encode(DataFrame(b"", topic="t" * (MAX_HEADER_BYTES + 1)))


def test_the_ref_of_a_frame_refused_whole_can_still_be_read():
    raw = encode(DataFrame(b"x" * 100_000, ref="big"))
    assert peek_ref(raw) == "big"
    assert peek_ref(b"\x01") is None
    assert peek_ref(b"\x01\x00\x00\x05{oops" + b"x" * 10) is None

import json

import pytest

from sfu.errors import SignalingError
from sfu.signaling.messages import parse


def code(text):
    with pytest.raises(SignalingError) as info:
        parse(text)
    return info.value.code


def test_valid_join_is_normalised():
    msg = parse(json.dumps({"type": "join", "room": "demo-1", "name": "  Ada "}))
    assert msg["name"] == "Ada"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{not json", "bad-json"),
        ("[1, 2]", "bad-json"),
        ('"join"', "bad-json"),
        ("{}", "unknown-type"),
        ('{"type": "explode"}', "unknown-type"),
        ('{"type": 7}', "unknown-type"),
        ('{"type": "join", "room": "a b", "name": "x"}', "bad-message"),
        ('{"type": "join", "room": "", "name": "x"}', "bad-message"),
        ('{"type": "join", "room": "r"}', "bad-message"),
        ('{"type": "join", "room": "r", "name": "   "}', "bad-message"),
        ('{"type": "join", "room": "r", "name": "' + "x" * 65 + '"}', "bad-message"),
        ('{"type": "offer", "pc": "subscribe", "sdp": "v=0"}', "bad-message"),
        ('{"type": "offer", "pc": "publish"}', "bad-message"),
        ('{"type": "offer", "pc": "publish", "sdp": "v=0", "sources": {"0": "tv"}}', "bad-message"),
        ('{"type": "answer", "pc": "publish", "sdp": "v=0"}', "bad-message"),
        ('{"type": "candidate", "pc": "other", "candidate": null}', "bad-message"),
        ('{"type": "candidate", "pc": "publish", "candidate": {"candidate": 5}}', "bad-message"),
        (
            '{"type": "candidate", "pc": "publish", "candidate": {"candidate": "x", "sdp_mline_index": -1}}',
            "bad-message",
        ),
        ('{"type": "mute", "track": "t"}', "bad-message"),
        ('{"type": "mute", "track": "t", "muted": "yes"}', "bad-message"),
        ('{"type": "chat", "text": ""}', "bad-message"),
    ],
)
def test_every_error_path_has_a_typed_code(text, expected):
    assert code(text) == expected


def test_valid_messages_pass():
    for msg in (
        {"type": "ping"},
        {"type": "leave"},
        {"type": "offer", "pc": "publish", "sdp": "v=0\r\n", "sources": {"0": "microphone", "1": "screen"}},
        {"type": "answer", "pc": "subscribe", "sdp": "v=0\r\n"},
        {"type": "candidate", "pc": "subscribe", "candidate": None},
        {
            "type": "candidate",
            "pc": "publish",
            "candidate": {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdp_mid": "0", "sdp_mline_index": 0},
        },
        {"type": "mute", "track": "p1-0", "muted": True},
        {"type": "chat", "text": "hi"},
    ):
        assert parse(json.dumps(msg))["type"] == msg["type"]


def test_error_codes_are_checked():
    with pytest.raises(ValueError):
        SignalingError("made-up", "x")
    assert SignalingError("room-full", "full").to_wire("join") == {
        "type": "error",
        "code": "room-full",
        "message": "full",
        "request": "join",
    }

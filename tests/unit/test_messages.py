import json

import pytest

from sfu.errors import BadRequest, Conflict, NotAuthorised, ServerError, SignalingError
from sfu.events import ConsumerBound, LayersNeeded, SubscribeOfferReady, TrackQualityChanged
from sfu.signaling import server_messages as sm
from sfu.signaling.messages import Candidate, IceCandidate, Join, PublishOffer, Renew, Resume, Subscription, parse


def code(text):
    with pytest.raises(SignalingError) as info:
        parse(text)
    return info.value.code


def test_valid_join_is_normalised():
    msg = parse(json.dumps({"type": "join", "room": "demo-1", "name": "  Ada "}))
    assert msg == Join("demo-1", "Ada", None)


def test_an_sdp_is_as_long_as_its_frame_allows():
    # A big room's subscribe answer (about 1.2 KB per m-section) outgrows any fixed SDP cap:
    # only the frame limit (max_message_bytes, checked before parsing) bounds it.
    sdp = "v=0\r\n" + "a=x\r\n" * 40000
    assert parse(json.dumps({"type": "answer", "pc": "subscribe", "sdp": sdp})).sdp == sdp
    assert parse(json.dumps({"type": "offer", "pc": "publish", "sdp": sdp})).sdp == sdp
    for kind, pc in (("answer", "subscribe"), ("offer", "publish")):
        with pytest.raises(BadRequest) as err:
            parse(json.dumps({"type": kind, "pc": pc, "sdp": ""}))
        assert err.value.code == "bad-message"


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
        # A name pattern holds for the whole string: no trailing newline slips past it.
        ('{"type": "join", "room": "abc\\n", "name": "x"}', "bad-message"),
        ('{"type": "join", "room": "abc\\r\\n", "name": "x"}', "bad-message"),
        ('{"type": "join", "room": "\\nabc", "name": "x"}', "bad-message"),
        # Nesting deeper than the decoder follows is bad JSON, not a server error.
        ('{"a":' * 990 + "1" + "}" * 990, "bad-json"),
        ("[" * 100000 + "]" * 100000, "bad-json"),
        ('{"type": "subscription", "track": "t", "max_height": true}', "bad-message"),
        ('{"type": "subscription", "track": "t", "pinned": 1}', "bad-message"),
        ('{"type": "offer", "pc": "publish", "sdp": "v=0", "sources": {"0": ["camera"]}}', "bad-message"),
        ('{"type": "offer", "pc": "publish", "sdp": "v=0", "restart": "yes"}', "bad-message"),
        ('{"type": "resume", "room": "r"}', "bad-message"),
        ('{"type": "resume", "room": "a b", "token": "t"}', "bad-message"),
        ('{"type": "resume", "room": "r", "token": ""}', "bad-message"),
        ('{"type": "resume", "room": "r", "token": "' + "t" * 129 + '"}', "bad-message"),
        ('{"type": "resume", "room": "r", "token": "t", "id": 5}', "bad-message"),
        ('{"type": "renew", "pc": "publish"}', "bad-message"),
        ('{"type": "renew"}', "bad-message"),
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
        kind = type(parse(json.dumps(msg))).TYPE
        assert kind == msg["type"]
    candidate = parse('{"type": "candidate", "pc": "publish", "candidate": {"candidate": "c", "sdp_mid": "0"}}')
    assert candidate == Candidate("publish", IceCandidate("c", "0", None))
    assert parse('{"type": "resume", "room": "demo", "token": "abc"}') == Resume("demo", "abc", None)
    assert parse('{"type": "resume", "room": "demo", "token": "abc", "id": "p1"}') == Resume("demo", "abc", "p1")
    assert parse('{"type": "renew", "pc": "subscribe"}') == Renew("subscribe")
    offer = parse('{"type": "offer", "pc": "publish", "sdp": "v=0", "restart": true}')
    assert isinstance(offer, PublishOffer) and offer.restart
    sub = parse('{"type": "subscription", "track": "p1-1", "max_height": 360}')
    assert sub == Subscription("p1-1", 360, paused=False, pinned=False)


def test_error_codes_are_checked():
    with pytest.raises(ValueError):
        SignalingError("made-up", "x")
    assert SignalingError("room-full", "full").to_wire("join") == {
        "type": "error",
        "code": "room-full",
        "message": "full",
        "request": "join",
    }


def test_every_code_belongs_to_one_class_by_who_is_at_fault_with_its_http_status():
    assert isinstance(SignalingError("bad-sdp", "x"), BadRequest)
    assert isinstance(SignalingError("forbidden", "x"), NotAuthorised)
    assert isinstance(SignalingError("room-full", "x"), Conflict)
    assert isinstance(SignalingError("internal", "x"), ServerError)
    assert [SignalingError(c, "x").status for c in ("bad-message", "unauthorized", "forbidden", "not-found")] == [
        400,
        401,
        403,
        404,
    ]
    assert SignalingError("too-many-connections", "x").status == 503
    assert BadRequest("rate-limited", "x").status == 429
    with pytest.raises(ValueError):
        BadRequest("unauthorized", "a bad request cannot carry a code of another class")


def test_server_messages_keep_the_wire_format():
    assert sm.Error(SignalingError("room-full", "full"), "join").to_wire() == {
        "type": "error",
        "code": "room-full",
        "message": "full",
        "request": "join",
    }
    track = sm.TrackInfo("p1-1", "video", "camera", False, ("q", "h"))
    joined = sm.Joined("p2", "demo", (sm.ParticipantInfo("p1", "Ada", (track,)),), sm.JoinInfo((), 2.0, 65536))
    assert joined.to_wire() == {
        "type": "joined",
        "protocol": 1,
        "id": "p2",
        "room": "demo",
        "participants": [
            {
                "id": "p1",
                "name": "Ada",
                "tracks": [{"id": "p1-1", "kind": "video", "source": "camera", "muted": False, "layers": ["q", "h"]}],
            }
        ],
        "ice_servers": [],
        "heartbeat_interval_s": 2.0,
        "max_message_bytes": 65536,
        "resume_token": None,
        "resume_grace_s": 0.0,
    }
    info = sm.JoinInfo((), 2.0, 65536, 15.0)
    lost = sm.ParticipantInfo("p1", "Ada", (), reconnecting=True)
    assert sm.Resumed("p2", "demo", (lost,), info, "tok").to_wire() == {
        "type": "resumed",
        "protocol": 1,
        "id": "p2",
        "room": "demo",
        "participants": [{"id": "p1", "name": "Ada", "tracks": [], "reconnecting": True}],
        "ice_servers": [],
        "heartbeat_interval_s": 2.0,
        "max_message_bytes": 65536,
        "resume_token": "tok",
        "resume_grace_s": 15.0,
    }
    assert sm.ParticipantReconnecting("p1").to_wire() == {"type": "participant-reconnecting", "id": "p1"}
    assert sm.ParticipantResumed("p1").to_wire() == {"type": "participant-resumed", "id": "p1"}
    assert sm.RenewPublish().to_wire() == {"type": "renew", "pc": "publish"}
    assert sm.ServerShutdown(5.0).to_wire() == {"type": "server-shutdown", "grace_s": 5.0}
    assert json.loads(sm.ChatRelayed("p1", "Ada", "hi", 7).encode()) == {
        "type": "chat",
        "from": "p1",
        "name": "Ada",
        "text": "hi",
        "ts_ms": 7,
    }


def test_media_events_map_to_their_messages():
    assert sm.from_event(LayersNeeded("p1-1", ("q",), False)).to_wire() == {
        "type": "layers",
        "track": "p1-1",
        "active": ["q"],
        "paused": False,
    }
    offer = SubscribeOfferReady("v=0\r\n", (ConsumerBound("0", "p1", "p1-0", "audio", "microphone"),))
    assert sm.from_event(offer).to_wire() == {
        "type": "offer",
        "pc": "subscribe",
        "sdp": "v=0\r\n",
        "restart": False,
        "consumers": [{"mid": "0", "participant": "p1", "track": "p1-0", "kind": "audio", "source": "microphone"}],
    }
    restart = SubscribeOfferReady("v=0\r\n", (), restart=True)
    assert sm.from_event(restart).to_wire()["restart"] is True
    assert sm.from_event(TrackQualityChanged("p1-1", True, "bandwidth", 90000)).to_wire() == {
        "type": "track-quality",
        "track": "p1-1",
        "paused": True,
        "reason": "bandwidth",
        "estimate_bps": 90000,
    }

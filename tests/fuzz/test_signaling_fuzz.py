"""A bounded fuzzer for the signaling message parser: valid-shaped messages with hostile field
values, mutated frames and arbitrary text. Whatever comes in, ``parse`` returns a typed client
message or raises ``BadRequest`` (a typed wire error); nothing else escapes.

Seeded (derandomized) and reproducible. ``SFU_FUZZ_PROPERTY_EXAMPLES`` sets the inputs per
Hypothesis property (default 1000), ``SFU_FUZZ_EXAMPLES`` the mutants of valid frames (5000).
"""

import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfu.errors import BadRequest
from sfu.signaling import messages as m
from sfu.signaling.messages import CLIENT_TYPES, ROOM_RE, parse
from tests.fuzz.corpus import mutations

EXAMPLES = int(os.environ.get("SFU_FUZZ_PROPERTY_EXAMPLES", "1000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
plausible = {
    "room": st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True) | st.text(max_size=70),
    "name": st.text(max_size=70),
    "token": st.none() | st.text(max_size=100),
    "pc": st.sampled_from(["publish", "subscribe", "other", ""]),
    "sdp": st.text(max_size=200),
    "sources": st.dictionaries(st.text(max_size=4), st.sampled_from(["camera", "microphone", "screen", "tv"])),
    "candidate": st.none()
    | st.fixed_dictionaries(
        {"candidate": st.text(max_size=60)},
        optional={"sdp_mid": st.none() | st.text(max_size=4), "sdp_mline_index": st.none() | st.integers()},
    ),
    "track": st.text(max_size=140),
    "muted": st.booleans(),
    "max_height": st.none() | st.integers(min_value=-10, max_value=10000),
    "paused": st.booleans(),
    "pinned": st.booleans(),
    "text": st.text(max_size=2100),
}


@st.composite
def shaped(draw):
    """A message of a known type with plausible fields, some replaced by any JSON value."""
    kind = draw(st.sampled_from(sorted(CLIENT_TYPES)))
    msg = {"type": kind}
    for key, strategy in plausible.items():
        if draw(st.booleans()):
            msg[key] = draw(json_values if draw(st.integers(0, 4)) == 0 else strategy)
    return json.dumps(msg)


@st.composite
def mutated(draw):
    """A shaped frame with a few characters inserted, deleted or replaced."""
    text = list(draw(shaped()))
    for _ in range(draw(st.integers(1, 6))):
        op, at = draw(st.sampled_from(["insert", "delete", "replace"])), draw(st.integers(0, len(text)))
        char = draw(st.sampled_from(list('{}[]":,\\0\n') + [chr(0xD800), "\x00", "é"]))
        if op == "insert":
            text.insert(at, char)
        elif at < len(text):
            if op == "delete":
                del text[at]
            else:
                text[at] = char
    return "".join(text)


nested = st.integers(1, 5000).map(lambda depth: '{"type":' * depth + "1" + "}" * depth)
frames = shaped() | mutated() | st.text(max_size=300) | nested | st.binary(max_size=200)


def check(frame):
    try:
        msg = parse(frame)
    except BadRequest as exc:
        assert exc.code in ("bad-json", "unknown-type", "bad-message")
        json.dumps(exc.to_wire(exc.request))  # the reply can always be sent
        return
    assert type(msg).TYPE in CLIENT_TYPES
    if isinstance(msg, m.Join):
        assert ROOM_RE.fullmatch(msg.room) and msg.name and msg.name == msg.name.strip()
    elif isinstance(msg, m.PublishOffer):
        assert all(v in m.SOURCES for v in msg.sources.values())
    elif isinstance(msg, m.Subscription):
        assert msg.max_height is None or 0 <= msg.max_height <= m.MAX_HEIGHT_PX
    elif isinstance(msg, m.Chat):
        assert 1 <= len(msg.text) <= m.MAX_CHAT_CHARS


@FUZZ
@given(shaped())
def test_shaped_messages_parse_or_get_a_typed_error(frame):
    check(frame)


@FUZZ
@given(mutated())
def test_mutated_frames_parse_or_get_a_typed_error(frame):
    check(frame)


@FUZZ
@given(frames)
def test_any_frame_parses_or_gets_a_typed_error(frame):
    check(frame)


# Every client message type in a valid form: the seed corpus of the mutation fuzzer below.
VALID_FRAMES = [
    json.dumps(msg).encode()
    for msg in (
        {"type": "join", "room": "demo", "name": "Ada", "token": "a.b.c"},
        {"type": "offer", "pc": "publish", "sdp": "v=0\r\n", "sources": {"0": "microphone", "1": "camera"}},
        {"type": "answer", "pc": "subscribe", "sdp": "v=0\r\n"},
        {"type": "candidate", "pc": "publish", "candidate": {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host"}},
        {"type": "candidate", "pc": "subscribe", "candidate": None},
        {"type": "mute", "track": "p1-0", "muted": True},
        {"type": "subscription", "track": "p1-1", "max_height": 360, "paused": False, "pinned": True},
        {"type": "chat", "text": "hello"},
        {"type": "ping"},
        {"type": "leave"},
    )
]


def test_mutated_valid_frames_parse_or_get_a_typed_error():
    """Byte-level mutants of valid frames (bit flips, truncation, splicing ...), as many as
    SFU_FUZZ_EXAMPLES says (5000 in the bounded run): fast enough for a million."""
    for frame in mutations(VALID_FRAMES, salt=11):
        check(frame)

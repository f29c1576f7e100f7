"""The WHIP/WHEP text a stranger sends besides SDP: trickle-ICE fragments (``parse_sdp_fragment``),
If-Match headers (``entity_tags``, ``check_if_match``), Content-Type (``check_content_type``) and
the bundle-only rewrite of offers (``live_bundle_only``). Each answers a value or a
``SignalingError`` of its documented code, nothing else."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.errors import SignalingError
from sfu.rtc.sdp import MAX_FRAGMENT_CANDIDATES, live_bundle_only, parse_sdp, parse_sdp_fragment
from sfu.signaling.whip_wire import check_content_type, check_if_match, entity_tags

from .corpus import FIXTURES, FUZZ, LONG, MUTATIONS, SEED

pytestmark = pytest.mark.timeout(120)

FRAGMENT = (
    "a=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
    "a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw\r\n"
    "a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ srflx raddr 10.0.0.1 rport 9\r\n"
    "a=end-of-candidates\r\n"
)
OFFER = (FIXTURES / "chromium_publish_offer.sdp").read_text()


def check_fragment(text: str) -> None:
    try:
        fragment = parse_sdp_fragment(text)
    except SignalingError as exc:
        assert exc.code == "bad-sdp"
        return
    assert len(fragment.candidates) <= MAX_FRAGMENT_CANDIDATES
    for candidate in fragment.candidates:
        assert candidate.candidate.startswith("candidate:")


def check_if_match_header(header: str) -> None:
    try:
        tags = entity_tags(header)
    except SignalingError as exc:
        assert exc.code == "bad-message"
    else:
        assert all(t == "*" or t.endswith('"') for t in tags)
    try:
        check_if_match(header, '"abc"')
    except SignalingError as exc:
        assert exc.code in ("bad-message", "precondition-required", "precondition-failed")


def mutate(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(chars) + 1)
        op = rng.randrange(4)
        if op == 0 and chars and i < len(chars):
            del chars[i]
        elif op == 1:
            chars.insert(i, rng.choice(["\r\n", "a=candidate:", "m=", "a=mid:", "=", " ", "\x00", "é", '"', ","]))
        elif op == 2 and chars and i < len(chars):
            chars[i] = chr(rng.randrange(1, 0x2FF))
        else:
            del chars[i:]
    return "".join(chars)


MUTATION_COUNT = MUTATIONS if LONG else max(1, MUTATIONS // 5)


def test_mutated_fragments_and_headers():
    rng = random.Random(SEED + 15)
    for _ in range(MUTATION_COUNT):
        check_fragment(mutate(FRAGMENT, rng))
        check_if_match_header(mutate('"abc", W/"def"', rng))


def test_mutated_offers_rewritten_for_bundle_only_still_parse_or_are_refused():
    rng = random.Random(SEED + 16)
    for _ in range(max(1, MUTATION_COUNT // 10)):
        text = mutate(OFFER.replace("m=audio 9", "m=audio 0").replace("a=mid:0", "a=mid:0\r\na=bundle-only"), rng)
        rewritten = live_bundle_only(text)
        assert isinstance(rewritten, str)
        try:
            parse_sdp(rewritten)
        except SignalingError as exc:
            assert exc.code == "bad-sdp"


@FUZZ
@given(st.text(max_size=400))
def test_any_text_as_fragment_if_match_or_content_type(text):
    check_fragment(text)
    check_if_match_header(text)
    try:
        check_content_type(text, "application/sdp")
    except SignalingError as exc:
        assert exc.code == "unsupported-media-type"
    assert isinstance(live_bundle_only(text), str)

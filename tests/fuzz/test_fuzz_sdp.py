"""The SDP helpers take any text: parse_sdp answers a description or SignalingError("bad-sdp"),
the simulcast and transport-cc editors return text, nothing else. Seeds: Chromium's real
publish offer (tests/unit/fixtures/chromium_publish_offer.sdp) mutated line by line."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from sfu.errors import SignalingError
from sfu.rtc.sdp import MAX_SIMULCAST_LAYERS, add_simulcast_answer, add_transport_cc, parse_sdp, simulcast_offers

from .corpus import FIXTURES, FUZZ, LONG, MUTATIONS, SEED

OFFER = (FIXTURES / "chromium_publish_offer.sdp").read_text()


def check_sdp(text: str) -> None:
    try:
        description = parse_sdp(text)
    except SignalingError as exc:
        assert exc.code == "bad-sdp"
    else:
        assert all(m.rtp.muxId for m in description.media if m.kind in ("audio", "video"))
    offers = simulcast_offers(text)
    for mid, rids in offers.items():
        assert isinstance(mid, str) and 2 <= len(rids) <= MAX_SIMULCAST_LAYERS and len(set(rids)) == len(rids)
    answer = add_simulcast_answer(text, offers)
    assert isinstance(answer, str)
    assert add_simulcast_answer(text, {}) == text
    assert isinstance(add_transport_cc(text, 5), str)


def test_chromium_offer_parses_and_offers_three_layers():
    description = parse_sdp(OFFER)
    assert [m.kind for m in description.media] == ["audio", "video"]
    assert list(simulcast_offers(OFFER).values()) == [["q", "h", "f"]]
    answer = add_simulcast_answer(OFFER, simulcast_offers(OFFER))
    assert "a=simulcast:recv q;h;f" in answer


LINE_SEEDS = OFFER.split("\r\n")
FRAGMENTS = ["a=simulcast:send ", "a=rid:", " send", "~", ";", ",", "m=video 0 ", "a=mid:", "\n", "\r\n", "="]


def mutate_sdp(rng: random.Random) -> str:
    lines = list(LINE_SEEDS)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(7)
        i = rng.randrange(len(lines)) if lines else 0
        if op == 0 and lines:
            del lines[i]
        elif op == 1 and lines:
            lines.insert(rng.randrange(len(lines) + 1), lines[i])
        elif op == 2 and lines:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3 and lines:
            line = lines[i]
            k = rng.randrange(len(line) + 1)
            lines[i] = line[:k] + rng.choice(FRAGMENTS) + line[k:]
        elif op == 4 and lines:
            line = lines[i]
            k = rng.randrange(len(line) + 1)
            lines[i] = line[:k] + "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randint(1, 8)))
        elif op == 5 and lines:
            del lines[i:]
        elif op == 6:
            lines.insert(i, rng.choice(["a=simulcast:send a;b;c", "a=rid:a send", "a=rid:b send", "m=video 9 X 96"]))
    return "\r\n".join(lines)


# An SDP parse costs about ten packets' worth: a tenth in the bounded run, all in the long one.
MUTATION_COUNT = MUTATIONS if LONG else max(1, MUTATIONS // 10)


def test_mutated_chromium_offers():
    rng = random.Random(SEED + 6)
    for _ in range(MUTATION_COUNT):
        check_sdp(mutate_sdp(rng))


PRINTABLE = st.text(st.sampled_from(" ~;,=:abfhqrsv0123456789"), max_size=30)


@FUZZ
@given(st.text(max_size=300))
def test_any_text(text):
    check_sdp(text)


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.sampled_from(LINE_SEEDS),
            st.builds("a={}:{}".format, st.sampled_from(["rid", "simulcast", "mid"]), PRINTABLE),
            st.builds("m={} {} {}".format, st.sampled_from(["audio", "video"]), st.integers(0, 65535), PRINTABLE),
        ),
        max_size=40,
    )
)
def test_offers_made_of_real_and_simulcast_lines(lines):
    check_sdp("\r\n".join(["v=0", *lines]))


def test_an_rtpmap_line_without_a_payload_type_gets_no_feedback_line():
    sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=rtpmap:\r\na=rtpmap:96 VP8/90000\r\n"
    out = add_transport_cc(sdp, 5).split("\r\n")
    assert "a=rtpmap:" in out and "a=rtcp-fb:96 transport-cc" in out
    assert [line for line in out if line.startswith("a=rtcp-fb:")] == ["a=rtcp-fb:96 transport-cc"]

"""check_publish_offer (what a publish offer may be, before aiortc sees it) and the token
bucket of the RTCP limit: pure functions on a real aiortc offer."""

import asyncio
import re

import pytest
from aiortc import RTCPeerConnection

from sfu.errors import SignalingError
from sfu.rtc.rate import TokenBucket
from sfu.rtc.sdp import check_publish_offer, media_sections, parse_sdp
from tests.conftest import sendonly_offer


def offer_sdp(audio: int = 1, video: int = 1, inactive: int = 0) -> str:
    return asyncio.run(sendonly_offer(audio, video, inactive))


SDP = offer_sdp()  # mids 0 (audio), 1 (video)
SDP3 = offer_sdp(audio=2)  # mids 0, 1 (audio), 2 (video)


def check(sdp: str, previous=(), max_tracks: int = 8, max_m_sections: int = 32) -> None:
    check_publish_offer(parse_sdp(sdp), list(previous), max_tracks, max_m_sections)


def code_of(sdp: str, **kw) -> str:
    with pytest.raises(SignalingError) as info:
        check(sdp, **kw)
    return info.value.code


def with_bundle(sdp: str, group: str) -> str:
    return re.sub(r"a=group:BUNDLE[^\r\n]*", f"a=group:BUNDLE {group}".rstrip(), sdp)


def test_a_valid_first_offer_and_its_own_re_offer_pass():
    check(SDP)
    check(SDP, previous=media_sections(parse_sdp(SDP)))
    check(SDP3, previous=media_sections(parse_sdp(SDP3))[:2])  # an m-section added at the end


@pytest.mark.parametrize("group", ["2 0 0", "0 0 1", "0 1 1", "1 0 2", "5 0 1", "0 1", "0 1 2 x", ""])
def test_bundle_groups_that_would_break_the_transport_are_bad_sdp(group):
    assert code_of(with_bundle(SDP3, group)) == "bad-sdp"


def test_the_bundle_tag_may_move_only_when_the_first_m_section_is_stopped():
    stopped = re.sub(r"^m=audio \d+ ", "m=audio 0 ", SDP3, count=1, flags=re.M)
    check(with_bundle(stopped, "1 2"))
    assert code_of(with_bundle(SDP3, "1 0 2")) == "bad-sdp"


def test_a_re_offer_must_keep_every_m_section_in_its_place():
    previous = media_sections(parse_sdp(SDP3))
    head, *sections = re.split(r"(?=^m=)", SDP3, flags=re.M)
    without_first = head.replace("BUNDLE 0 1 2", "BUNDLE 1 2") + "".join(sections[1:])
    assert code_of(without_first, previous=previous) == "bad-sdp"
    swapped = head + sections[0] + sections[2] + sections[1]
    assert code_of(swapped, previous=previous) == "bad-sdp"


def test_duplicate_mids_are_bad_sdp():
    assert code_of(SDP.replace("a=mid:1", "a=mid:0")) == "bad-sdp"


def test_tracks_and_m_sections_are_capped():
    assert code_of(offer_sdp(audio=3, video=0), max_tracks=2) == "too-many-tracks"
    check(offer_sdp(audio=2, video=0, inactive=3), max_tracks=2)  # inactive ones are no tracks
    assert code_of(offer_sdp(audio=1, video=0, inactive=4), max_m_sections=4) == "too-many-m-sections"


def test_token_bucket_allows_a_burst_then_the_rate():
    bucket = TokenBucket(rate_bps=8000, now_s=0.0, burst_s=1.0)  # 1000 bytes/s
    assert bucket.take(600, 0.0) and bucket.take(400, 0.0)
    assert not bucket.take(1, 0.0)
    assert bucket.take(500, 0.5) and not bucket.take(1, 0.5)
    assert bucket.take(1000, 100.0) and not bucket.take(1, 100.0), "the burst never exceeds burst_s"


async def data_offer(audio: int) -> str:
    """A real aiortc offer with data channels (m=application) after ``audio`` audio sections."""
    pc = RTCPeerConnection()
    for _ in range(audio):
        pc.addTransceiver("audio", direction="sendonly")
    pc.createDataChannel("sfu-reliable")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def test_an_offer_with_data_channels_passes_with_or_without_media():
    check(asyncio.run(data_offer(audio=1)))
    check(asyncio.run(data_offer(audio=0)))


def test_the_data_channels_section_must_be_bundled_and_single():
    sdp = asyncio.run(data_offer(audio=1))  # mids 0 (audio), 1 (application)
    assert code_of(with_bundle(sdp, "0")) == "bad-sdp"
    head, *sections = re.split(r"(?=^m=)", sdp, flags=re.M)
    twice = head + sections[0] + sections[1] + sections[1].replace("a=mid:1", "a=mid:2")
    assert code_of(with_bundle(twice, "0 1 2")) == "bad-sdp"
    assert "m=application" in sections[1]

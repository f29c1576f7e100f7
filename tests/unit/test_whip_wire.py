"""The HTTP side of WHIP and WHEP: each header RFC 9725 requires, the If-Match rules, the SDP
fragments of trickle ICE, and the bundle-only rewrite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sfu.app import create_app
from sfu.config import Config
from sfu.errors import SignalingError
from sfu.rtc.sdp import live_bundle_only, parse_sdp_fragment
from sfu.signaling.whip_wire import (
    check_content_type,
    check_if_match,
    cors_headers,
    entity_tags,
    ice_server_links,
)
from tests.whip_clients import publish_offer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    config = Config(
        ice_host_addresses=("127.0.0.1",),
        ice_servers=({"urls": ["stun:stun.example.org:3478"]},),
        turn_urls=("turn:turn.example.org:3478?transport=udp",),
        turn_secret="turn-secret",
    )
    async with TestClient(TestServer(create_app(config))) as test_client:
        yield test_client


async def _created(client: TestClient):
    pc, offer = await publish_offer()
    try:
        response = await client.post("/whip/headers?name=cam", data=offer, headers={"Content-Type": "application/sdp"})
        body = await response.text()
    finally:
        await pc.close()
    assert response.status == 201, body
    assert body.startswith("v=0")
    return response


# -- the headers of 201 Created, one test each ------------------------------------------------


async def test_201_has_a_location_of_the_session_resource(client):
    response = await _created(client)
    location = response.headers["Location"]
    assert location.startswith("/whip/headers/sessions/") and len(location.rsplit("/", 1)[1]) >= 20
    # The resource answers there.
    options = await client.options(location)
    assert options.status == 204


async def test_201_has_a_strong_etag_that_if_match_accepts(client):
    response = await _created(client)
    etag = response.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert check_if_match(etag, etag) is False


async def test_201_has_a_link_header_per_ice_server_url_with_turn_credentials(client):
    response = await _created(client)
    links = response.headers.getall("Link")
    assert links[0] == '<stun:stun.example.org:3478>; rel="ice-server"'
    assert links[1].startswith('<turn:turn.example.org:3478?transport=udp>; rel="ice-server"; username="')
    assert 'credential="' in links[1] and links[1].endswith('credential-type="password"')


async def test_201_has_accept_patch_for_trickle_ice_fragments(client):
    response = await _created(client)
    assert response.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
    assert response.headers["Content-Type"] == "application/sdp"
    assert "Location" in response.headers["Access-Control-Expose-Headers"]


async def test_options_on_the_endpoint_has_accept_post(client):
    response = await client.options("/whip/headers")
    assert response.status == 204
    assert response.headers["Accept-Post"] == "application/sdp"
    assert response.headers["Access-Control-Allow-Origin"] == "*"


# -- pure helpers -----------------------------------------------------------------------------


def test_ice_server_links_quote_credentials_and_skip_unusable_urls():
    links = ice_server_links(
        [
            {"urls": "stun:a.example"},
            {"urls": ["turn:b.example?transport=udp", "turns:b.example"], "username": 'x"y', "credential": "p\\w"},
            {"urls": ["<bad>", "", 7]},
        ]
    )
    assert links == [
        '<stun:a.example>; rel="ice-server"',
        '<turn:b.example?transport=udp>; rel="ice-server"; username="x\\"y"; credential="p\\\\w"; credential-type="password"',
        '<turns:b.example>; rel="ice-server"; username="x\\"y"; credential="p\\\\w"; credential-type="password"',
    ]


def test_if_match_rules():
    assert check_if_match("*", '"a"') is True
    assert check_if_match('"b", "a"', '"a"') is False
    with pytest.raises(SignalingError) as missing:
        check_if_match(None, '"a"')
    assert missing.value.status == 428
    with pytest.raises(SignalingError) as stale:
        check_if_match('"b"', '"a"')
    assert stale.value.status == 412
    with pytest.raises(SignalingError) as weak:  # strong comparison: a weak tag never matches
        check_if_match('W/"a"', '"a"')
    assert weak.value.status == 412
    assert entity_tags('W/"x" , "y"') == ['W/"x"', '"y"']
    for bad in ("a", '"unterminated', '"a" "b"'):
        with pytest.raises(SignalingError) as exc:
            entity_tags(bad)
        assert exc.value.status == 400


def test_content_types():
    check_content_type("application/sdp", "application/sdp")
    check_content_type("Application/SDP; charset=utf-8", "application/sdp")
    for wrong in ("", "text/plain", "application/sdpx"):
        with pytest.raises(SignalingError) as exc:
            check_content_type(wrong, "application/sdp")
        assert exc.value.status == 415


def test_cors_headers_allow_the_headers_a_whip_client_sends():
    headers = cors_headers("PATCH, DELETE, OPTIONS")
    assert {"Authorization", "Content-Type", "If-Match"} <= {
        h.strip() for h in headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"Location", "ETag", "Link"} <= {h.strip() for h in headers["Access-Control-Expose-Headers"].split(",")}


def test_sdp_fragment_of_rfc_8840():
    fragment = parse_sdp_fragment(
        "a=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n"
        "a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n"
        "a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0\r\n"
        "a=end-of-candidates\r\n"
    )
    assert (fragment.ice_ufrag, fragment.ice_pwd) == ("EsAw", "bP+XJMM09aR8AiX1jdukzR6Y")
    assert [c.mid for c in fragment.candidates] == ["0", "0"]
    assert fragment.candidates[0].candidate.startswith("candidate:1387637174 1 udp")
    assert fragment.end_of_candidates
    empty = parse_sdp_fragment("")
    assert empty.candidates == () and not empty.end_of_candidates and empty.ice_ufrag is None
    for bad in ("hello", "a=candidate:x\r\nnot a line", "\r\n".join(["a=candidate:1 1 udp 1 1.2.3.4 1 typ host"] * 65)):
        with pytest.raises(SignalingError):
            parse_sdp_fragment(bad)


def test_bundle_only_sections_with_port_0_become_live():
    sdp = (
        "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE video0 audio1\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:video0\r\n"
        "m=audio 0 UDP/TLS/RTP/SAVPF 100\r\na=bundle-only\r\na=mid:audio1\r\n"
        "m=audio 0 UDP/TLS/RTP/SAVPF 100\r\na=mid:stopped\r\n"
    )
    out = live_bundle_only(sdp)
    assert "m=audio 9 UDP/TLS/RTP/SAVPF 100\r\na=bundle-only" in out
    assert "m=audio 0 UDP/TLS/RTP/SAVPF 100\r\na=mid:stopped" in out  # no bundle-only: stopped
    assert live_bundle_only(out) == out

from sfu.rtc.sdp import add_simulcast_answer, simulcast_offers

CHROME_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=mid:0",
        "a=sendonly",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "a=mid:1",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
        "a=sendonly",
        "a=rid:q send",
        "a=rid:h send",
        "a=rid:f send",
        "a=simulcast:send q;h;~f",
        "",
    ]
)


def test_reads_send_rids_lowest_first_including_paused_ones():
    assert simulcast_offers(CHROME_OFFER) == {"1": ["q", "h", "f"]}


def test_ignores_undeclared_rids_and_single_layers():
    offer = CHROME_OFFER.replace("a=rid:h send\r\n", "").replace("a=rid:f send\r\n", "")
    assert simulcast_offers(offer) == {}
    assert simulcast_offers(CHROME_OFFER.replace("a=simulcast:send", "a=simulcast:recv")) == {}


def test_answer_gets_receive_rids_on_the_right_m_section():
    answer = "\r\n".join(
        [
            "v=0",
            "o=- 1 1 IN IP4 0.0.0.0",
            "s=-",
            "t=0 0",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "a=mid:0",
            "a=recvonly",
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "a=mid:1",
            "a=recvonly",
            "",
        ]
    )
    out = add_simulcast_answer(answer, {"1": ["q", "h", "f"]})
    video = out.split("m=video")[1]
    audio = out.split("m=video")[0]
    assert "a=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f" in video
    assert "a=rid" not in audio
    assert out.endswith("\r\n")

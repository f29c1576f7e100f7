"""The publish connection's SSRC router: by SSRC, then MID and RID, RTX by repaired RID or FID."""

import struct

from sfu.forwarding import Codec, Producer
from sfu.media.rtp import parse_rtp
from sfu.rtc.routing import SsrcRouter

VP8 = Codec("VP8", 90000)
MID_ID, RID_ID, REPAIRED_ID = 4, 10, 11


def packet(ssrc, extensions=(), pt=96, seq=1):
    """An RTP packet with one-byte RFC 8285 header extensions ((id, bytes), ...)."""
    body = b"".join(bytes(((ext_id << 4) | (len(value) - 1),)) + value for ext_id, value in extensions)
    body += bytes(-len(body) % 4)
    header = struct.pack("!BBHII", 0x90 if extensions else 0x80, pt, seq, 0, ssrc)
    if extensions:
        header += struct.pack("!HH", 0xBEDE, len(body) // 4) + body
    return header + b"\x00" * 10


def route(router, data):
    view = parse_rtp(data)
    return router.route(data, view.ext_start, view.ssrc)


def make_router(rids=None, rtx_payload_type=97):
    router = SsrcRouter()
    router.set_extension_ids(MID_ID, RID_ID, REPAIRED_ID)
    producer = Producer("p-0", "p", "video", "camera", VP8, 96, request_keyframe=lambda p, layer: None, rids=rids)
    producer.rtx_payload_type = rtx_payload_type
    router.add_producer("0", producer)
    return router, producer


def test_a_stream_is_learnt_from_its_mid_and_then_routed_by_ssrc_alone():
    router, producer = make_router()
    assert route(router, packet(1111)) is None, "no MID, unknown SSRC: unroutable"
    found = route(router, packet(1111, [(MID_ID, b"0")]))
    assert found is not None and found[:2] == (producer, producer.layers[0]) and found[2] is False
    assert producer.layers[0].ssrc == 1111
    again = route(router, packet(1111))
    assert again is found, "later packets need no extensions and reuse the same route"


def test_simulcast_layers_are_told_apart_by_rid():
    router, producer = make_router(rids=["q", "h", "f"])
    for ssrc, rid, index in ((10, b"h", 1), (11, b"q", 0), (12, b"f", 2)):
        found = route(router, packet(ssrc, [(MID_ID, b"0"), (RID_ID, rid)]))
        assert found is not None and found[1] is producer.layers[index]
    assert [layer.ssrc for layer in producer.layers] == [11, 10, 12]
    assert route(router, packet(13, [(MID_ID, b"0"), (RID_ID, b"x")])) is None, "unknown RID"
    assert route(router, packet(14, [(MID_ID, b"0"), (RID_ID, b"q")])) is None, "a second SSRC for a bound layer"
    assert producer.layers[0].ssrc == 11


def test_an_unknown_mid_is_unroutable():
    router, _ = make_router()
    assert route(router, packet(1, [(MID_ID, b"9")])) is None


def test_a_repaired_rid_makes_the_ssrc_the_layers_rtx_stream():
    router, producer = make_router(rids=["q", "h"])
    route(router, packet(20, [(MID_ID, b"0"), (RID_ID, b"h")]))
    found = route(router, packet(30, [(MID_ID, b"0"), (REPAIRED_ID, b"h")], pt=97))
    assert found is not None and found[1] is producer.layers[1] and found[2] is True
    assert router.rtx_route(30) is found and router.media_route(30) is None
    assert route(router, packet(30, pt=97)) is found


def test_a_repaired_stream_without_negotiated_rtx_is_ignored_for_good():
    router, _ = make_router(rids=["q", "h"], rtx_payload_type=None)
    assert route(router, packet(31, [(MID_ID, b"0"), (REPAIRED_ID, b"h")])) is None
    assert route(router, packet(31, [(MID_ID, b"0"), (RID_ID, b"h")])) is None, "remembered as not forwarded"


def test_fid_groups_bind_the_rtx_ssrc_with_its_media_ssrc():
    router, producer = make_router()
    router.fid[501] = 500
    router.bind(producer, producer.layers[0], 500)
    found = route(router, packet(501, pt=97))
    assert found is not None and found[1] is producer.layers[0] and found[2] is True
    assert router.media_route(500) is not None


def test_rebinding_a_layer_forgets_its_old_ssrc():
    router, producer = make_router()
    router.bind(producer, producer.layers[0], 1)
    router.bind(producer, producer.layers[0], 2)
    assert router.media_route(1) is None and router.media_route(2) is not None


def test_removing_a_producer_forgets_its_media_and_rtx_ssrcs():
    router, producer = make_router(rids=["q", "h"])
    route(router, packet(40, [(MID_ID, b"0"), (RID_ID, b"q")]))
    route(router, packet(41, [(MID_ID, b"0"), (REPAIRED_ID, b"q")]))
    assert router.remove_producer("0") is producer
    assert router.media_route(40) is None and router.rtx_route(41) is None
    assert route(router, packet(42, [(MID_ID, b"0"), (RID_ID, b"h")])) is None
    assert router.remove_producer("0") is None


def count_rid_lookups(producer):
    """Count how often the router asks the producer for a layer by RID (one per extension walk)."""
    calls = [0]
    lookup = producer.layer_by_rid

    def counted(rid):
        calls[0] += 1
        return lookup(rid)

    producer.layer_by_rid = counted
    return calls


def test_an_unroutable_ssrc_has_its_extensions_read_once_not_per_packet():
    router, producer = make_router(rids=["q", "h"])
    route(router, packet(50, [(MID_ID, b"0"), (RID_ID, b"q")]))
    calls = count_rid_lookups(producer)
    # A second stream claiming a bound layer, 1,000 packets long: not forwarded, and cheap.
    for seq in range(1000):
        assert route(router, packet(51, [(MID_ID, b"0"), (RID_ID, b"q")], seq=seq)) is None
    assert calls[0] == 1
    assert router.media_route(50) is not None and producer.layers[0].ssrc == 50


def test_a_flood_of_random_ssrcs_learns_at_most_the_limit_and_remembers_a_bounded_few():
    import random

    from sfu.rtc.routing import UNROUTABLE_CACHE_SIZE

    rng = random.Random(7)
    router = SsrcRouter(max_ssrcs=16)
    router.set_extension_ids(MID_ID, RID_ID, REPAIRED_ID)
    producer = Producer("p-0", "p", "video", "camera", VP8, 96, request_keyframe=lambda p, layer: None, rids=["q"])
    producer.layers.append(type(producer.layers[0])(1, "h", 90000))  # a second layer: simulcast
    producer.rtx_payload_type = 97
    router.add_producer("0", producer)
    route(router, packet(1, [(MID_ID, b"0"), (RID_ID, b"q")]))
    ssrcs = rng.sample(range(2, 1 << 32), 56_000)
    for i, ssrc in enumerate(ssrcs):
        if i % 2:  # each claims to repair a real layer: an RTX stream to learn
            route(router, packet(ssrc, [(MID_ID, b"0"), (REPAIRED_ID, b"q")], pt=97))
        else:  # extensions, but no MID
            route(router, packet(ssrc, [(3, b"\x01\x02")]))
    assert router.learnt_ssrcs == 16, "media and RTX streams together stop at the limit"
    # Refused and counted: every new SSRC once the limit was reached (after the first 15 RTX
    # claims were learnt, and the 15 MID-less streams sent among them were found unroutable).
    assert router.ssrcs_over_limit == len(ssrcs) - 30
    assert router.unroutable_ssrcs <= UNROUTABLE_CACHE_SIZE
    assert route(router, packet(1)) is not None, "the real stream is still routed"


def test_what_could_not_be_routed_is_retried_once_the_routes_change():
    router, producer = make_router()
    assert route(router, packet(60, [(MID_ID, b"1")])) is None  # MID 1 is not published yet
    second = Producer("p-1", "p", "video", "camera", VP8, 96, request_keyframe=lambda p, layer: None)
    router.add_producer("1", second)
    found = route(router, packet(60, [(MID_ID, b"1")]))
    assert found is not None and found[0] is second

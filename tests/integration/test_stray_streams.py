"""A publisher sending from thousands of SSRCs the server never heard of disturbs nobody and
grows no state: the streams are dropped, counted and remembered in a bounded cache."""

import asyncio
import random
import struct

import aiohttp

from sfu.app import ROOMS_KEY
from sfu.rtc import aiortc_glue
from sfu.rtc.routing import UNROUTABLE_CACHE_SIZE
from sfu.rtc.sdp import MID_URI
from tests.conftest import eventually
from tests.integration.test_bad_input import publisher_and_viewer
from tests.integration.test_operations import scrape

STRAY_SSRCS = 3000


async def test_packets_from_thousands_of_unknown_ssrcs_are_dropped_counted_and_cost_bounded_state(server):
    a, b = await publisher_and_viewer(server, "stray")
    try:
        publisher = server.app[ROOMS_KEY].rooms["stray"].participants[a.id].publisher
        mid_id = publisher._ext_ids[MID_URI]
        video_mid = next(mid for mid, p in publisher.producers.items() if p.kind == "video")
        routed_before = publisher.describe()["routing"]["ssrcs"]
        transport = aiortc_glue.dtls_transports(a.publish_pc)[0]
        # Each claims the video's MID (a second stream on a bound layer: not forwarded).
        ext = bytes(((mid_id << 4) | (len(video_mid) - 1),)) + video_mid.encode()
        ext += bytes(-len(ext) % 4)
        rng = random.Random(11)
        for i, ssrc in enumerate(rng.sample(range(1 << 16, 1 << 32), STRAY_SSRCS)):
            header = struct.pack("!BBHII", 0x90, 96, i & 0xFFFF, 0, ssrc) + struct.pack("!HH", 0xBEDE, len(ext) // 4)
            aiortc_glue.send_packet(transport, header + ext + b"\x00" * 20)
            if i % 50 == 49:
                await asyncio.sleep(0.005)  # paced, so that most get through the sockets
        # More stray streams than the cache holds must reach the server (UDP may drop some).
        await eventually(lambda: publisher.unroutable_packets > 2 * UNROUTABLE_CACHE_SIZE, timeout=15)
        routing = publisher.describe()["routing"]
        assert routing["ssrcs"] == routed_before, "no stray stream was learnt"
        assert 0 < routing["unroutable_ssrcs_cached"] <= UNROUTABLE_CACHE_SIZE
        before = b.received_from(a.id, "video")
        await eventually(lambda: b.received_from(a.id, "video") > before + 30, timeout=15)
        # /metrics shows the drops, and the streams refused at the SSRC limit (none here: these
        # claimed a bound layer; tests/unit/test_routing.py fills the limit).
        async with aiohttp.ClientSession() as http:
            m = await scrape(http, server.url)
        assert m["sfu_unroutable_packets_total"] >= publisher.unroutable_packets > 2 * UNROUTABLE_CACHE_SIZE
        assert m["sfu_ssrcs_over_limit_total"] == publisher.router.ssrcs_over_limit == 0
    finally:
        await a.close()
        await b.close()

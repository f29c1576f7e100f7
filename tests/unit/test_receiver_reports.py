"""The receiver reports a publisher gets: every field fits its width, however long ago the
last sender report arrived (the delay since it saturates instead of failing the report)."""

import time

from sfu.forwarding import Codec, Producer
from sfu.media.rtcp import RtcpReceiverReport, RtcpRemb, parse_compound
from sfu.rtc.publish import PublishPeer

VP8 = Codec("VP8", 90000)


async def test_a_sender_report_19_hours_old_gives_a_saturated_delay_not_a_failed_report():
    peer = PublishPeer("p", [], lambda: None, publisher_bitrate_bps=1_000_000)
    try:
        producer = Producer("t", "p", "video", "camera", VP8, 96, request_keyframe=lambda p, layer: None)
        layer = producer.layers[0]
        layer.ssrc = 0xCAFE
        layer.stats.update(1, 1000, 0, 1200)
        layer.stats.update(5, 4000, 30, 1200)  # three lost
        peer.producers["0"] = producer
        peer._lsr[0xCAFE] = (0x12345678, time.time() - 19 * 3600)
        data = b"".join(bytes(p) for p in peer.rtcp_reports())
        rr, remb = parse_compound(data)
        assert isinstance(rr, RtcpReceiverReport) and isinstance(remb, RtcpRemb)
        [report] = rr.reports
        assert report.ssrc == 0xCAFE and report.lsr == 0x12345678 and report.dlsr == 0xFFFFFFFF
        assert report.packets_lost == 3 and report.highest_sequence & 0xFFFF == 5
        assert remb.ssrcs == [0xCAFE] and remb.bitrate_bps == 1_000_000
    finally:
        await peer.close()

"""The compiled send path in a real call: the server's transports use it, a subscriber that
negotiates transport-cc decrypts what it sends and finds every transport-wide sequence number
in order; received SRTP is delivered to the tap from the socket callback."""

import asyncio

from aiortc import RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from sfu.app import ROOMS_KEY
from sfu.bwe.twcc import TWCC_URI, read_transport_seq
from sfu.client import Participant
from sfu.media.rtp import MalformedPacket, parse_rtp
from sfu.rtc import aiortc_glue as glue
from sfu.rtc.sdp import add_transport_cc
from tests.conftest import eventually, start_server


class TransportCcSubscriber(Participant):
    """Answers the subscribe offer with transport-cc (aiortc itself leaves it out) and keeps
    the transport-wide sequence number of every RTP packet it receives."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ext_id = None
        self.transport_seqs = []
        self.media_packets = 0

    async def _on_subscribe_offer(self, msg):
        if self.subscribe_pc is None:
            self.subscribe_pc = glue.create_peer_connection()
        pc = self.subscribe_pc
        offer = aiortc_sdp.SessionDescription.parse(msg["sdp"])
        self.ext_id = next(e.id for m in offer.media for e in m.rtp.headerExtensions if e.uri == TWCC_URI)
        await pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "offer"))
        glue.detach_receivers(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        glue.install_tap(pc, self._on_rtp, self._on_rtcp)
        answer = add_transport_cc(pc.localDescription.sdp, self.ext_id)
        await self.send({"type": "answer", "pc": "subscribe", "sdp": answer})

    async def _on_rtp(self, data, arrival_ms):
        try:
            view = parse_rtp(data)
        except MalformedPacket:
            return
        self.media_packets += 1
        self.transport_seqs.append(read_transport_seq(data, view.ext_start, self.ext_id))


async def test_subscriber_transport_uses_the_compiled_path_with_transport_cc_stamps():
    srv = await start_server()
    pub = Participant(srv.ws_url, "fast", "pub")
    sub = TransportCcSubscriber(srv.ws_url, "fast", "sub")
    try:
        await pub.join()
        await sub.join()
        await pub.publish_rtp(audio=True, video=True, trailer=False)
        await eventually(lambda: sub.media_packets >= 300, timeout=30, state=lambda: sub.media_packets)
        room = srv.runner.app[ROOMS_KEY].rooms["fast"]
        server_sub = room.participants[sub.id].subscriber
        assert glue.uses_compiled_path(server_sub.transport)
        assert glue.uses_compiled_path(room.participants[pub.id].publisher.transport)  # receives RTP
        # The subscriber's sink sends by itself (attached to the pair's socket), and every
        # consumer is forwarded by the compiled loop once steady.
        assert server_sub.sink.attached
        gates = [c.gate for c in server_sub.consumers()]
        assert len(gates) == 2 and all(g.direct and not g.python_only for g in gates)
        assert all(c.out.packets_sent > 100 for c in server_sub.consumers())
        seqs = list(sub.transport_seqs)
        assert all(s >= 0 for s in seqs), "every packet carries a transport-wide sequence number"
        assert len(set(seqs)) == len(seqs)
        # In order on loopback, one apart (the server also sends probes in the same sequence).
        steps = [(b - a) & 0xFFFF for a, b in zip(seqs, seqs[1:], strict=False)]
        assert sum(1 for d in steps if d == 1) >= 0.95 * len(steps)
        # Received SRTP went from the socket callback straight to the tap, both ways.
        server_pub = room.participants[pub.id].publisher
        assert glue.direct_deliveries(server_pub.pc) >= 200
        assert glue.direct_deliveries(sub.subscribe_pc) >= sub.media_packets - 50
    finally:
        await asyncio.gather(pub.close(), sub.close(), return_exceptions=True)
        await srv.runner.cleanup()

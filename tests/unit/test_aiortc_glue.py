"""The aiortc internals the SFU depends on: this fails loudly if the pinned aiortc changes."""

import aioice.ice

from sfu.rtc import aiortc_glue


def test_installed_aiortc_has_every_internal_we_use():
    aiortc_glue.check_compatibility()


async def test_pinned_host_addresses_are_gathered():
    try:
        aiortc_glue.set_host_addresses(["127.0.0.1"])
        conn = aioice.ice.Connection(ice_controlling=True)
        await conn.gather_candidates()
        hosts = {c.host for c in conn.local_candidates}
        await conn.close()
        assert hosts == {"127.0.0.1"}
    finally:
        aiortc_glue.set_host_addresses(None)
    assert aioice.ice.get_host_addresses is aiortc_glue.ice._original_get_host_addresses


async def test_forwarding_sender_never_encodes_and_stops_cleanly():
    pc = aiortc_glue.create_peer_connection()
    transceiver = pc.addTransceiver("video", direction="sendonly")
    ssrc, rtx = aiortc_glue.prepare_forwarding_sender(transceiver, "stream", "track")
    assert ssrc == transceiver.sender._ssrc and rtx == transceiver.sender._rtx_ssrc
    offer = await pc.createOffer()
    assert "a=msid:stream track" in offer.sdp
    await pc.close()


async def test_stray_datagrams_are_dropped_and_counted_before_they_reach_the_dtls_queue():
    import asyncio
    import socket

    aiortc_glue.guard_datagrams()
    try:
        aiortc_glue.set_host_addresses(["127.0.0.1"])
        conn = aioice.ice.Connection(ice_controlling=True)
        await conn.gather_candidates()
    finally:
        aiortc_glue.set_host_addresses(None)
    port = conn.local_candidates[0].port
    stray = {
        "empty": [b""],
        "unknown-type": [b"\x05junk", b"\x40" * 30, b"\xff" * 30],
        "malformed-stun": [
            b"\x00\x01" + bytes(30),
            b"\x00\x01\x00\x04" + b"\x21\x12\xa4\x42" + bytes(12) + b"\x00\x24\x00\x00",
        ],
        "too-short": [b"\x80\x60", b"\x16\xfe\xfd"],
        "unknown-address": [b"\x80\x60" + bytes(30), b"\x16\xfe\xfd" + bytes(30)],
    }
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for datagrams in stray.values():
            for data in datagrams:
                sender.sendto(data, ("127.0.0.1", port))
        guard = None
        for _ in range(100):
            guard = getattr(conn, "_sfu_guard", None)
            if guard is not None and sum(guard.drops.values()) >= sum(map(len, stray.values())):
                break
            await asyncio.sleep(0.02)
        assert guard is not None
        assert {reason: guard.drops[reason] for reason in stray} == {r: len(d) for r, d in stray.items()}
        assert conn._queue.empty(), "nothing reached the DTLS transport's queue"
    finally:
        sender.close()
        await conn.close()


async def test_dtls_and_srtp_from_any_candidate_pair_reach_the_dtls_queue_after_nomination():
    """The peer may send on the pair it chose before our nomination reached it: a DTLS
    handshake dropped there never completes (seen with Chromium on a busy machine)."""
    import asyncio

    aiortc_glue.guard_datagrams()
    aiortc_glue.set_host_addresses(["127.0.0.1", "127.0.0.2"])
    try:
        ours = aioice.ice.Connection(ice_controlling=True)
        theirs = aioice.ice.Connection(ice_controlling=False)
        await ours.gather_candidates()
        await theirs.gather_candidates()
    finally:
        aiortc_glue.set_host_addresses(None)
    for a, b in ((ours, theirs), (theirs, ours)):
        a.remote_username, a.remote_password = b.local_username, b.local_password
        for candidate in b.local_candidates:
            await a.add_remote_candidate(candidate)
        await a.add_remote_candidate(None)
    try:
        await asyncio.wait_for(asyncio.gather(ours.connect(), theirs.connect()), 20)
        nominated = ours._nominated[1]
        # A pair that had succeeded too when the nomination came (aioice keeps pairs already
        # checked; which ones there are depends on timing, so one is made here): our
        # nominated socket and their other address.
        sender = next(p for p in theirs._protocols if p.local_candidate.host != nominated.remote_addr[0])
        other = aioice.ice.CandidatePair(nominated.protocol, sender.local_candidate)
        other.state = aioice.ice.CandidatePair.State.SUCCEEDED
        ours._check_list.append(other)
        local_addr = nominated.protocol.transport.get_extra_info("sockname")
        while not ours._queue.empty():
            ours._queue.get_nowait()
        for data in (b"\x16\xfe\xfd" + bytes(30), b"\x80\x60" + bytes(30)):  # DTLS, SRTP
            sender.transport.sendto(data, local_addr)
        for _ in range(100):
            if ours._queue.qsize() >= 2:
                break
            await asyncio.sleep(0.02)
        assert ours._queue.qsize() == 2, ours._sfu_guard.drops
    finally:
        await ours.close()
        await theirs.close()

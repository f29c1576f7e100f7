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
    assert aioice.ice.get_host_addresses is aiortc_glue._original_get_host_addresses


async def test_forwarding_sender_never_encodes_and_stops_cleanly():
    pc = aiortc_glue.create_peer_connection()
    transceiver = pc.addTransceiver("video", direction="sendonly")
    ssrc, rtx = aiortc_glue.prepare_forwarding_sender(transceiver, "stream", "track")
    assert ssrc == transceiver.sender._ssrc and rtx == transceiver.sender._rtx_ssrc
    offer = await pc.createOffer()
    assert "a=msid:stream track" in offer.sdp
    await pc.close()


def test_kernel_receive_stamp_is_the_arrival_not_the_read():
    import socket
    import time

    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        stamp = aiortc_glue._kernel_stamp_reader(receiver)

        # The kernel switches receive timestamps on through a deferred static key: datagrams
        # right after the first request may still go unstamped (then the read time is
        # reported). The server asks long before media flows; here, warm-up datagrams until
        # the stamps are on. On loopback a datagram arrives within the sendto() call, so its
        # stamp lies between the clock read before and after it (1 ms either side for the
        # stamp's and the clock's resolution), however busy the machine.
        def send(payload: bytes) -> tuple[int, int]:
            before_us = time.time_ns() // 1000
            sender.sendto(payload, receiver.getsockname())
            return before_us - 1000, time.time_ns() // 1000 + 1000

        for _ in range(100):
            low_us, high_us = send(b"w")
            time.sleep(0.05)
            receiver.recvfrom(16)
            warm = stamp()
            if warm is not None and low_us <= warm <= high_us:
                break
        low_us, high_us = send(b"x")
        time.sleep(0.1)  # a busy event loop reads the datagram late
        receiver.recvfrom(16)
        read_us = time.time_ns() // 1000
        arrived_us = stamp()
        assert arrived_us is not None
        assert low_us <= arrived_us <= high_us, (low_us, arrived_us, high_us)
        assert read_us - arrived_us >= 100_000 - 1000, "the stamp is the arrival, not the read"
    finally:
        receiver.close()
        sender.close()


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
        "not-selected-pair": [b"\x80\x60" + bytes(30), b"\x16\xfe\xfd" + bytes(30)],
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

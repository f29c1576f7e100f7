"""The kernel's receive time of a datagram, behind transport-cc feedback."""

import socket
import time

from sfu.rtc.kernel_stamp import kernel_stamp_reader


def test_kernel_receive_stamp_is_the_arrival_not_the_read():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        stamp = kernel_stamp_reader(receiver)

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

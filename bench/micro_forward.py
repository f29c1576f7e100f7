"""Per-packet cost breakdown of the SFU forwarding path, outside the event loop.

Times, per forwarded packet, the pieces that forward_bench.py measures together:

1. forwarding logic (Producer.on_rtp -> Consumer.forward: munger, header, cache), no send;
2. SRTP protect (pylibsrtp, the profile aiortc negotiates between two aiortc peers);
3. sendto() of the protected packet on a loopback UDP socket (kernel; on loopback the
   sender also pays for delivery into the receiving socket);
4. per INCOMING packet (shared by all subscribers): SRTP unprotect + parse_rtp.

    .venv/bin/python bench/micro_forward.py [--consumers 8] [--out bench/results/micro.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

import pylibsrtp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sfu.forwarding import Codec, Consumer, OutStream, Producer  # noqa: E402
from sfu.media.rtp import parse_rtp, write_header  # noqa: E402

PROFILES = {
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
    "AES128_CM_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
}
KEY_LEN = {"AEAD_AES_256_GCM": 32 + 12, "AES128_CM_SHA1_80": 16 + 14}


def session(profile: str, inbound: bool) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=bytes(range(KEY_LEN[profile])),
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=PROFILES[profile],
    )
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return pylibsrtp.Session(policy)


def best_of(fn, n: int, repeat: int = 5) -> float:
    """Best wall time per call (us) over `repeat` batches of n calls."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(n)
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def packets(payload_size: int, count: int, ssrc: int = 1234) -> list[bytes]:
    body = os.urandom(payload_size)
    # VP8 payload descriptor for a non-key start of frame: S=1, P=1 in the VP8 header.
    body = bytes([0x10]) + bytes([0x01]) + body[2:]
    return [write_header(1, 96, i & 0xFFFF, 3000 * i, ssrc) + body for i in range(count)]


def bench_logic(consumers: int, payload_size: int, n: int) -> float:
    sent = [0]

    def send(p: bytes) -> bool:
        sent[0] += 1
        return True

    producer = Producer("p-0", "p", "video", "camera", Codec("VP8", 90000), 96, lambda p: None)
    for _ in range(consumers):
        c = Consumer(producer, "s", OutStream(5678, 100, 1000), 96, send, lambda: 0.0)
        c.needs_keyframe = False
        producer.add_consumer(c, 0.0)
    pkts = packets(payload_size, n)
    views = [parse_rtp(p) for p in pkts]

    def run(k: int) -> None:
        for i in range(k):
            producer.on_rtp(pkts[i], views[i], i)

    best = best_of(run, n, repeat=1)  # one pass: sequence numbers must keep increasing
    return best / consumers


def bench_protect(profile: str, payload_size: int, n: int) -> float:
    s = session(profile, inbound=False)
    pkts = packets(payload_size, n)

    def run(k: int) -> None:
        for i in range(k):
            s.protect(pkts[i])

    return best_of(run, n, repeat=1)


def bench_unprotect_parse(profile: str, payload_size: int, n: int) -> float:
    tx, rx = session(profile, inbound=False), session(profile, inbound=True)
    protected = [tx.protect(p) for p in packets(payload_size, n)]

    def run(k: int) -> None:
        for i in range(k):
            parse_rtp(rx.unprotect(protected[i]))

    return best_of(run, n, repeat=1)


def bench_sendto(payload_size: int, n: int) -> float:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setblocking(False)
    addr = rx.getsockname()
    data = os.urandom(payload_size + 12 + 16)
    total = 0.0
    done = 0
    while done < n:
        batch = min(200, n - done)  # stay well inside the receive buffer, then drain
        t = time.perf_counter()
        for _ in range(batch):
            tx.sendto(data, addr)
        total += time.perf_counter() - t
        done += batch
        try:
            while True:
                rx.recv(2048)
        except BlockingIOError:
            pass
    rx.close()
    tx.close()
    return total / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--consumers", type=int, default=8)
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = {}
    for label, size in (("video_1100B", 1100), ("audio_150B", 150)):
        r = {
            "forward_logic_us_per_forwarded_packet": bench_logic(args.consumers, size, args.n),
            "srtp_protect_us": {p: bench_protect(p, size, args.n) for p in PROFILES},
            "sendto_loopback_us": bench_sendto(size, args.n),
            "srtp_unprotect_and_parse_us_per_incoming_packet": {
                p: bench_unprotect_parse(p, size, args.n) for p in PROFILES
            },
        }
        results[label] = {k: (round(v, 2) if isinstance(v, float) else {a: round(b, 2) for a, b in v.items()})
                          for k, v in r.items()}
    results["consumers"] = args.consumers
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-packet cost breakdown of the SFU forwarding path, outside the event loop.

Times, per forwarded packet, the pieces that forward_bench.py measures together:

1. forwarding logic (Producer.on_rtp -> Consumer.forward: munger, header, cache), no send;
2. SRTP protect (pylibsrtp, the profile aiortc negotiates between two aiortc peers);
3. sendto() of the protected packet on a loopback UDP socket (kernel; on loopback the
   sender also pays for delivery into the receiving socket);
4. per INCOMING packet (shared by all subscribers): SRTP unprotect + parse_rtp.

    SFU_ROOT=<checkout> .venv/bin/python bench/micro_forward.py [--consumers 8] [--out bench/results/micro.json]
"""

from __future__ import annotations

import argparse
import fractions
import inspect
import json
import os
import socket
import sys
import time
from pathlib import Path

import av
import pylibsrtp
from aiortc.codecs.vpx import Vp8Encoder

ROOT = Path(__file__).resolve().parent.parent
SFU_ROOT = Path(os.environ.get("SFU_ROOT", ROOT)).resolve()  # same meaning as forward_bench --sfu-root
sys.path.insert(0, str(SFU_ROOT))
from sfu.client import load_clip  # noqa: E402
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


def video_packets(count: int, ssrc: int = 1234) -> list[bytes]:
    """RTP packets of the publisher's real VP8 clip, packetized by aiortc as it does on the
    wire (VP8 payload descriptor with picture ID), starting on a keyframe."""
    clip = load_clip("video")
    enc = Vp8Encoder()
    out: list[bytes] = []
    seq = 0
    i = 0
    while len(out) < count:
        data, _key = clip.frames[i % len(clip.frames)]
        pkt = av.Packet(data)
        pkt.pts = i * 3000
        pkt.time_base = fractions.Fraction(1, 90000)
        payloads, ts = enc.pack(pkt)
        for k, payload in enumerate(payloads):
            out.append(write_header(int(k == len(payloads) - 1), 96, seq & 0xFFFF, ts, ssrc) + payload)
            seq += 1
        i += 1
    return out[:count]


def audio_packets(count: int, ssrc: int = 4321) -> list[bytes]:
    clip = load_clip("audio")
    return [
        write_header(0, 111, i & 0xFFFF, 960 * i, ssrc) + clip.frames[i % len(clip.frames)][0] for i in range(count)
    ]


def bench_logic(kind: str, consumers: int, pkts: list[bytes]) -> float:
    """Producer.on_rtp -> Consumer.forward for every consumer, send() a no-op."""

    def send(p: bytes) -> bool:
        return True

    codec = Codec("VP8", 90000) if kind == "video" else Codec("opus", 48000)
    pt = 96 if kind == "video" else 111
    producer = Producer("p-0", "p", kind, "camera" if kind == "video" else "microphone", codec, pt, lambda *a: None)
    for _ in range(consumers):
        c = Consumer(producer, "s", OutStream(5678, 100, 1000), pt, send, lambda: 0.0)
        producer.add_consumer(c, 0.0)
    views = [parse_rtp(p) for p in pkts]
    layered = "layer" in inspect.signature(producer.on_rtp).parameters  # simulcast-era API
    layer = producer.layers[0] if layered else None

    def run(k: int) -> None:
        if layered:
            for i in range(k):
                producer.on_rtp(layer, pkts[i], views[i], i)
        else:
            for i in range(k):
                producer.on_rtp(pkts[i], views[i], i)

    t = time.perf_counter()
    run(len(pkts))  # one pass: sequence numbers must keep increasing
    sent = sum(c.out.packets_sent for c in producer.consumers)
    assert sent >= 0.99 * len(pkts) * consumers, f"only {sent} of {len(pkts) * consumers} forwarded"
    return (time.perf_counter() - t) / sent * 1e6


def bench_protect(profile: str, pkts: list[bytes]) -> float:
    s = session(profile, inbound=False)

    def run(k: int) -> None:
        for i in range(k):
            s.protect(pkts[i])

    return best_of(run, len(pkts), repeat=1)


def bench_unprotect_parse(profile: str, pkts: list[bytes]) -> float:
    tx, rx = session(profile, inbound=False), session(profile, inbound=True)
    protected = [tx.protect(p) for p in pkts]

    def run(k: int) -> None:
        for i in range(k):
            parse_rtp(rx.unprotect(protected[i]))

    return best_of(run, len(pkts), repeat=1)


def bench_sendto(pkts: list[bytes]) -> float:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setblocking(False)
    addr = rx.getsockname()
    total = 0.0
    done = 0
    n = len(pkts)
    while done < n:
        batch = pkts[done : done + 200]  # stay well inside the receive buffer, then drain
        t = time.perf_counter()
        for p in batch:
            tx.sendto(p, addr)
        total += time.perf_counter() - t
        done += len(batch)
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
    parser.add_argument("-n", type=int, default=20000, help="packets per measurement")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results: dict[str, object] = {"sfu_root": str(SFU_ROOT), "consumers": args.consumers}
    for kind, pkts in (("video", video_packets(args.n)), ("audio", audio_packets(args.n))):
        r = {
            "mean_packet_bytes": round(sum(map(len, pkts)) / len(pkts), 1),
            "forward_logic_us_per_forwarded_packet": bench_logic(kind, args.consumers, pkts),
            "srtp_protect_us": {p: bench_protect(p, pkts) for p in PROFILES},
            "sendto_loopback_us": bench_sendto(pkts),
            "srtp_unprotect_and_parse_us_per_incoming_packet": {p: bench_unprotect_parse(p, pkts) for p in PROFILES},
        }
        results[kind] = {
            k: (
                round(v, 2)
                if isinstance(v, float)
                else {a: round(b, 2) for a, b in v.items()}
                if isinstance(v, dict)
                else v
            )
            for k, v in r.items()
        }
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

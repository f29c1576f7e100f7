"""Instructions per forwarded packet, counted by valgrind (callgrind): a figure that does not
move with the load of a shared machine, unlike CPU seconds.

The per-packet path in one process, outside the event loop: real VP8 clip packets (as
micro_forward.py builds them) into ``Producer.on_rtp`` of the checkout under test, fanned out to
N consumers, each sending what ``SubscribePeer.send_rtp`` sends (the transport-wide sequence
number inserted, SRTP-protected AEAD_AES_256_GCM, one ``sendto`` on a UDP socket to a local
receiver that drains them). In a checkout with subscriber sinks (sfu/rtc/sink.py) that is the
sink, attached to the socket as aiortc_glue attaches it (the compiled forwarding loop sends
without Python), the estimator's send record included; the pure-Python sink hands the stamped
packet to pylibsrtp's ``protect`` and ``socket.sendto``. In an older checkout: the compiled path
(``OutboundSrtp.send``, one call) when it has it and it is built, else the pure-Python way
(``with_transport_seq``, pylibsrtp's ``protect``, ``socket.sendto``), the estimator's send
record left out. The event loop is not in it.

    .venv/bin/python bench/forward_instructions.py [--consumers 15] [--root DIR] [--pure]

runs itself twice under ``valgrind --tool=callgrind`` (200 and 1,200 incoming packets) and
reports (instructions₂ − instructions₁) / (forwarded₂ − forwarded₁): the user-space
instructions of one forwarded packet, start-up and imports cancelled out (the kernel's share of
``sendto`` is not counted). ``--root`` picks the checkout (a ``git archive`` snapshot made by
forward_bench.py, e.g. /tmp/sfu-bench-<commit>); ``--pure`` sets SFU_FASTPATH=0. About 5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
LOW, HIGH = 200, 1200  # incoming packets of the two runs


def drive(consumers: int, count: int) -> int:
    """Forward ``count`` incoming packets to ``consumers``; returns how many were sent."""
    sys.path.insert(0, os.environ["SFU_ROOT"])
    sys.path.insert(1, str(HERE.parent))
    import pylibsrtp
    from micro_forward import video_packets

    from sfu.forwarding import Codec, Consumer, OutStream, Producer
    from sfu.media.rtp import parse_rtp, with_transport_seq

    try:
        from sfu.rtc import fastpath

        compiled = fastpath.compiled
    except ImportError:  # a checkout from before the compiled path
        compiled = None
    profile = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM
    key = bytes(range(44))
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dest = rx.getsockname()

    try:  # a checkout with subscriber sinks (sfu/rtc/sink.py) sends as the server does
        from sfu.bwe.estimator import SendHistory
        from sfu.rtc.sink import make_sink
    except ImportError:
        make_sink = None

    def sink_sender():
        sink = make_sink(SendHistory())
        sink.ext_id = 3
        if compiled is not None:  # attached to the socket, as aiortc_glue does once connected
            connected, pair = object(), object()
            transport = type("Transport", (), {"state": connected})()
            try:  # the session the server would make (which libsrtp: SFU_FASTPATH_SRTP)
                from sfu.rtc.aiortc_glue.peer_connection import compiled_srtp

                srtp = compiled_srtp(profile, key, inbound=False)
            except ImportError:
                srtp = compiled.OutboundSrtp(profile, key)
            sink.attach(srtp, tx.fileno(), compiled.sockaddr(*dest), {1: pair}, 1, pair, transport, "state", connected)
        else:
            policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
            session = pylibsrtp.Session(policy)

            def out(packet: bytes) -> int:
                tx.sendto(session.protect(packet), dest)
                return len(packet)

            sink.fallback = out
        return sink

    def sender():
        if make_sink is not None:
            return sink_sender()
        state = {"tw": 0}
        if compiled is not None:
            srtp, addr, fd = compiled.OutboundSrtp(profile, key), compiled.sockaddr(*dest), tx.fileno()

            def send(packet: bytes) -> bool:
                tw = state["tw"]
                state["tw"] = (tw + 1) & 0xFFFF
                return srtp.send(fd, packet, addr, 3, tw) >= 0

        else:
            policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
            session = pylibsrtp.Session(policy)

            def send(packet: bytes) -> bool:
                tw = state["tw"]
                state["tw"] = (tw + 1) & 0xFFFF
                tx.sendto(session.protect(with_transport_seq(packet, 3, tw)), dest)
                return True

        return send

    producer = Producer("p", "p", "video", "camera", Codec("VP8", 90000), 96, lambda *a: None)
    producer.layers[0].ssrc = 1234
    for k in range(consumers):
        consumer = Consumer(producer, f"s{k}", OutStream(2000 + k, 1000, 5000), 97, sender(), lambda: 100.0, 98, 3000)
        producer.add_consumer(consumer, 100.0)
    packets = video_packets(HIGH)[:count]  # the same packets built in every run
    layer = producer.layers[0]
    for i, data in enumerate(packets):
        producer.on_rtp(layer, data, parse_rtp(data), 10_000 + i)
        if i % 16 == 0:
            try:
                while True:
                    rx.recv(2048)
            except BlockingIOError:
                pass
    return sum(c.out.packets_sent for c in producer.consumers)


def count(root: str, consumers: int, packets: int, pure: bool) -> tuple[int, int]:
    """(instructions, forwarded packets) of one run under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = dict(os.environ, SFU_ROOT=root, PYTHONPATH=root)
        if pure:
            env["SFU_FASTPATH"] = "0"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, str(HERE)]
        cmd += ["--drive", str(packets), "--consumers", str(consumers)]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        forwarded = int(re.search(r"forwarded (\d+)", result.stdout).group(1))
        instructions = int(re.search(r"Collected : (\d+)", result.stderr).group(1))
    return instructions, forwarded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--consumers", type=int, default=15)
    parser.add_argument("--root", default=str(HERE.parent.parent), help="checkout under test")
    parser.add_argument("--pure", action="store_true", help="SFU_FASTPATH=0: the pure-Python path")
    parser.add_argument("--drive", type=int, help=argparse.SUPPRESS)  # the run under valgrind
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()
    if args.drive is not None:
        print(f"forwarded {drive(args.consumers, args.drive)}")
        return 0
    low, high = LOW, HIGH
    i1, f1 = count(args.root, args.consumers, low, args.pure)
    i2, f2 = count(args.root, args.consumers, high, args.pure)
    result = {
        "root": args.root,
        "pure": args.pure,
        "consumers": args.consumers,
        "incoming_packets": [low, high],
        "forwarded": [f1, f2],
        "instructions": [i1, i2],
        "instructions_per_forwarded_packet": round((i2 - i1) / (f2 - f1)),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The compiled forwarding loop (sfu.rtc._fastpath: Gate, fanout, OutStream, Sink) against the
pure-Python reference (PyGate, py_fanout, PyOutStream, PySink), packet for packet.

tests/unit/fixtures/fanout_scenario.py runs one scenario (simulcast switches with VP8 picture
IDs rewritten, 7- and 15-bit, sequence and timestamp wraps, reordering and duplicates,
padding skipped, NACKs answered RTX-wrapped, pauses, a bandwidth pause and cap, an audio
consumer whose sink fails at first, a consumer with a forward of its own) in a process of its
own, with and without ``SFU_FASTPATH=0``: the packets every sink puts out, the transport-wide
sequence numbers and send histories, and the consumers' counters must be identical. The
sink's direct path (attached to a socket) is compared with the reference's packets as
protected by pylibsrtp.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pylibsrtp
import pytest

from sfu.bwe.estimator import SendHistory
from sfu.media.rtp import write_header
from sfu.rtc import fastpath
from sfu.rtc.sink import PySink

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "tests" / "unit" / "fixtures" / "fanout_scenario.py"


def run_scenario(compiled: bool) -> dict:
    env = {**os.environ, "SFU_FASTPATH": "1" if compiled else "0", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(SCENARIO)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def runs() -> tuple[dict, dict]:
    return run_scenario(False), run_scenario(True)


def test_the_compiled_loop_forwards_what_the_reference_does(runs):
    reference, compiled = runs
    assert fastpath.compiled is not None, fastpath.describe()
    assert not reference["compiled"] and compiled["compiled"]
    # The reference used the Python gates; the compiled run forwarded every steady consumer in
    # C (all but the one with a forward of its own).
    assert [g[0] for g in reference["gates"]] == ["sfu.forwarding"] * 5
    assert compiled["gates"] == [["sfu.rtc._fastpath", True]] * 4 + [["sfu.rtc._fastpath", False]]
    # The compiled caches keep steady packets as parts (shared payload, header, VP8 rewrite):
    # what they give back for a NACK is byte for byte what the reference cached.
    for key in ("wires", "consumers", "caches", "relay", "histories", "sinks", "requests"):
        assert compiled[key] == reference[key], key


def test_the_scenario_exercises_what_it_claims(runs):
    reference, _ = runs
    a, b, c, d = (reference["consumers"][n] for n in "ABCD")
    assert all(len(reference["caches"][n]) > 40 for n in "ABCD")
    assert a["layer_switches"] == 2 and a["rtx_sent"] == 4 and a["nacks_unserved"] >= 1
    assert b["packets_sent"] > 0 and c["layer_switches"] >= 1 and c["bandwidth_layer"] == 0
    assert d["packets_sent"] > 0 and reference["relay"]
    wires = reference["wires"]
    # A's wire: transport-cc stamped (one-byte extension), tw sequence numbers wrapping at 65536.
    first = bytes.fromhex(wires["A"][0])
    assert first[0] & 0x10 and first[12:14] == b"\xbe\xde"
    assert not bytes.fromhex(wires["B"][0])[0] & 0x10
    tw_a, bytes_a = reference["sinks"][0]
    assert tw_a == (65530 + len(wires["A"])) & 0xFFFF and tw_a < 65530
    assert bytes_a == sum(len(p) // 2 for p in wires["A"])


class Transport:
    def __init__(self) -> None:
        self.state = "connected"


def test_an_attached_sink_sends_directly_and_falls_back_when_the_pair_changes():
    compiled = fastpath.compiled
    assert compiled is not None, fastpath.describe()
    profile, key = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, os.urandom(28)
    policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    reference_srtp = pylibsrtp.Session(policy)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    try:
        times = iter(range(1000, 2000))
        sink = compiled.Sink(SendHistory(), lambda: next(times))
        ref_times = iter(range(1000, 2000))
        ref_history = SendHistory()
        reference = PySink(ref_history, lambda: next(ref_times))
        fallen_back: list[bytes] = []
        reference_out: list[bytes] = []
        sink.fallback = lambda p: fallen_back.append(p) or len(p)
        reference.fallback = lambda p: reference_out.append(p) or len(p)
        for s in (sink, reference):
            s.ext_id, s.tw_seq = 4, 65534
        transport, pair = Transport(), object()
        nominated = {1: pair}
        srtp = compiled.OutboundSrtp(profile, key)
        sink.attach(
            srtp, tx.fileno(), compiled.sockaddr(*rx.getsockname()), nominated, 1, pair, transport, "state", "connected"
        )
        assert sink.attached
        packets = [
            write_header(i & 1, 97, (65530 + i) & 0xFFFF, i * 3000, 0xABCDEF) + bytes([i]) * (50 + i) for i in range(6)
        ]
        assert [sink.send(p) for p in packets[:3]] == [reference.send(p) for p in packets[:3]]
        received = [rx.recv(2048) for _ in range(3)]
        assert received == [reference_srtp.protect(p) for p in reference_out]
        assert not fallen_back
        nominated[1] = object()  # another pair nominated: back to the fallback, detached
        assert sink.send(packets[3]) == reference.send(packets[3])
        assert not sink.attached and fallen_back == reference_out[3:]
        sink.attach(
            srtp,
            tx.fileno(),
            compiled.sockaddr(*rx.getsockname()),
            nominated,
            1,
            nominated[1],
            transport,
            "state",
            "connected",
        )
        transport.state = "closed"  # no longer connected: the fallback again
        assert sink(packets[4]) is reference(packets[4]) is True
        assert fallen_back == reference_out[3:]
        sink.fallback = None  # nowhere to send: -1, nothing recorded
        reference.fallback = None
        assert sink.send(packets[5]) == reference.send(packets[5]) == -1
        assert sink.tw_seq == reference.tw_seq == (65534 + 6) & 0xFFFF
        assert sink.bytes_sent == reference.bytes_sent > 0
        for seq in (65534, 65535, 0, 1, 2, 3):
            assert sink.history.get(seq) == ref_history.get(seq)
        assert sink.history.get(3) is None  # the unsent one
    finally:
        rx.close()
        tx.close()


def test_a_sink_refuses_what_is_not_a_packet():
    compiled = fastpath.compiled
    assert compiled is not None, fastpath.describe()
    sink = compiled.Sink(SendHistory())
    with pytest.raises(TypeError):
        sink.send("not bytes")
    sink.ext_id = 3
    sink.fallback = lambda p: len(p)
    with pytest.raises(ValueError):
        sink.send(b"short")  # shorter than an RTP header: cannot be stamped
    with pytest.raises((TypeError, ValueError)):
        sink.attach(None, -1, b"", {}, 1, None, None, "state", None)

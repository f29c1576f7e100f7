"""The compiled send path against the pure-Python reference, byte for byte on the wire.

The same forwarding scenario (simulcast layer switches with VP8 picture-ID rewriting, a
sequence-number wrap, RTX retransmissions answering NACKs, padding skipped, transport-cc
stamps) runs twice: once sent the reference way (``with_transport_seq`` + pylibsrtp's
``protect``, what the pure-Python path does), once through ``OutboundSrtp.send`` to a real UDP
socket; the datagrams must be identical. CI builds the extension (scripts/install-system-deps.sh
installs the compiler and libsrtp2-dev), so it is required here; the fallback is tested by
running a process with ``SFU_FASTPATH=0``.
"""

import os
import socket
import struct
import subprocess
import sys

import pylibsrtp
import pytest

from sfu.bwe.estimator import SendHistory
from sfu.bwe.twcc import read_transport_seq
from sfu.forwarding import Codec, Consumer, OutStream, Producer
from sfu.media.rtp import parse_rtp, with_transport_seq, write_header
from sfu.media.vp8 import parse_descriptor
from sfu.rtc import aiortc_glue as glue
from sfu.rtc import fastpath
from sfu.rtc.aiortc_glue import peer_connection

PROFILES = {
    "AEAD_AES_256_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 44),
    "AEAD_AES_128_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
    "AES128_CM_SHA1_80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
}
TWCC_EXT_ID = 3
RTX_PT = 98
SIZES = [(160, 90), (320, 180), (640, 360)]


def session(profile: int, key: bytes, inbound: bool) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=key,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=profile,
    )
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return pylibsrtp.Session(policy)


def vp8_payload(pid: int, tl0: int, key: bool, size: tuple[int, int], start: bool, filler: int) -> bytes:
    b0 = 0x80 | (0x10 if start else 0)
    desc = bytes([b0, 0xC0, 0x80 | (pid >> 8), pid & 0xFF, tl0])
    if not key:
        return desc + bytes([0x01]) + bytes([filler & 0xFF]) * (200 + filler % 700)
    return desc + b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", *size) + bytes([filler & 0xFF]) * 900


class ReferenceWire:
    """What the pure-Python path puts on the wire for one subscriber."""

    def __init__(self, profile: int, key: bytes, twcc: bool) -> None:
        self.srtp = session(profile, key, inbound=False)
        self.twcc = twcc
        self.tw_seq = 65530  # wraps during the scenario
        self.datagrams: list[bytes] = []

    def send(self, packet: bytes) -> bool:
        if self.twcc:
            packet = with_transport_seq(packet, TWCC_EXT_ID, self.tw_seq)
            self.tw_seq = (self.tw_seq + 1) & 0xFFFF
        self.datagrams.append(self.srtp.protect(packet))
        return True


class CompiledWire(ReferenceWire):
    """The compiled path: protect + sendto in one call, received from a real socket."""

    def __init__(self, profile: int, key: bytes, twcc: bool) -> None:
        super().__init__(profile, key, twcc)
        self.srtp = fastpath.compiled.OutboundSrtp(profile, key)
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.settimeout(5)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addr = fastpath.compiled.sockaddr(*self.rx.getsockname())

    def send(self, packet: bytes) -> bool:
        if self.twcc:
            size = self.srtp.send(self.tx.fileno(), packet, self.addr, TWCC_EXT_ID, self.tw_seq)
            self.tw_seq = (self.tw_seq + 1) & 0xFFFF
            assert size == len(packet) + 8
        else:
            assert self.srtp.send(self.tx.fileno(), packet, self.addr) == len(packet)
        self.datagrams.append(self.rx.recv(2048))
        return True

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


def scenario(wire_a: ReferenceWire, wire_b: ReferenceWire) -> dict[str, int]:
    """Simulcast to two subscribers: A (RTX, layer switches, NACKs), B (top layer only)."""
    now = [100.0]
    producer = Producer(
        "p-1", "p", "video", "camera", Codec("VP8", 90000), 96, lambda p, layer: None, rids=["q", "h", "f"]
    )
    for i, layer in enumerate(producer.layers):
        layer.ssrc = 1111 + i
    a = Consumer(producer, "a", OutStream(2222, 65500, 5000), 97, wire_a.send, lambda: now[0], RTX_PT, 3333)
    b = Consumer(producer, "b", OutStream(4444, 100, 0xFFFFFF00), 97, wire_b.send, lambda: now[0])
    producer.add_consumer(a, now[0])
    producer.add_consumer(b, now[0])
    seq, ts, pid, tl0 = [100, 30000, 65500], [1000, 500000, 0xFFFFF000], [10, 2000, 32700], [1, 100, 250]
    ms = 10_000
    filler = 0

    def frame(layers=(0, 1, 2), key=False, packets=3, padding_on=None):
        nonlocal ms, filler
        ms += 33
        for i in layers:
            for n in range(packets):
                filler += 1
                payload = vp8_payload(pid[i], tl0[i], key and n == 0, SIZES[i], n == 0, filler)
                data = write_header(int(n == packets - 1), 96, seq[i] & 0xFFFF, ts[i] & 0xFFFFFFFF, 1111 + i) + payload
                producer.on_rtp(producer.layers[i], data, parse_rtp(data), ms)
                seq[i] += 1
            if padding_on == i:  # a padding-only packet: skipped without a hole
                data = write_header(0, 96, seq[i] & 0xFFFF, ts[i] & 0xFFFFFFFF, 1111 + i)
                producer.on_rtp(producer.layers[i], data, parse_rtp(data), ms)
                seq[i] += 1
            ts[i] += 3000
            pid[i] = (pid[i] + 1) & 0x7FFF
            tl0[i] = (tl0[i] + 1) & 0xFF

    a.set_preferences(max_height=100, paused=False, now_ms=ms)
    frame(key=True)
    for k in range(20):
        frame(padding_on=0 if k == 5 else None)
    now[0] += 1
    a.set_preferences(max_height=None, paused=False, now_ms=ms)  # up to f, on its keyframe
    frame()
    frame(layers=(2,), key=True)
    for _ in range(20):
        frame()
    a.on_nack([(65500 + 30) & 0xFFFF, (65500 + 31) & 0xFFFF, (65500 + 70) & 0xFFFF], now_ms=ms)
    now[0] += 1
    a.set_preferences(max_height=200, paused=False, now_ms=ms)  # down to h
    frame(layers=(1,), key=True)
    for _ in range(10):
        frame()
    a.on_nack([(65500 + 75) & 0xFFFF], now_ms=ms + 500)
    return {"switches": a.layer_switches, "rtx": a.rtx_sent, "sent_a": a.out.packets_sent, "sent_b": b.out.packets_sent}


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_compiled_send_path_puts_the_same_bytes_on_the_wire(name):
    assert fastpath.compiled is not None, fastpath.describe()
    profile, key_len = PROFILES[name]
    key = os.urandom(key_len)
    ref_a, ref_b = ReferenceWire(profile, key, twcc=True), ReferenceWire(profile, key, twcc=False)
    fast_a, fast_b = CompiledWire(profile, key, twcc=True), CompiledWire(profile, key, twcc=False)
    try:
        counts = scenario(ref_a, ref_b)
        assert scenario(fast_a, fast_b) == counts
    finally:
        fast_a.close()
        fast_b.close()
    assert counts["switches"] == 2 and counts["rtx"] == 4
    assert len(ref_a.datagrams) == counts["sent_a"] + counts["rtx"] > 100
    assert fast_a.datagrams == ref_a.datagrams
    assert fast_b.datagrams == ref_b.datagrams
    # What the subscriber decrypts: a gapless stream across switches and the sequence wrap,
    # continuous picture IDs, transport-wide sequence numbers in order across their wrap.
    rx = session(profile, key, inbound=True)
    plain = [rx.unprotect(d) for d in fast_a.datagrams]
    media = [p for p in plain if p[1] & 0x7F == 97]
    views = [parse_rtp(p) for p in media]
    assert all((v1.seq - v0.seq) & 0xFFFF == 1 for v0, v1 in zip(views, views[1:], strict=False))
    assert views[0].seq == 65500 and views[-1].seq < 200  # wrapped
    pids = [parse_descriptor(p[v.payload_start :]).picture_id for p, v in zip(media, views, strict=True)]
    assert all((q - p) & 0x7FFF in (0, 1) for p, q in zip(pids, pids[1:], strict=False))
    tws = [read_transport_seq(p, parse_rtp(p).ext_start, TWCC_EXT_ID) for p in plain]
    assert tws == [(65530 + i) & 0xFFFF for i in range(len(plain))]
    rtx = [p for p in plain if p[1] & 0x7F == RTX_PT]
    assert len(rtx) == 4 and all(parse_rtp(p).ssrc == 3333 for p in rtx)


def test_protect_matches_pylibsrtp_across_the_rollover_counter():
    assert fastpath.compiled is not None, fastpath.describe()
    for profile, key_len in PROFILES.values():
        key = os.urandom(key_len)
        ref = session(profile, key, inbound=False)
        compiled = fastpath.compiled.OutboundSrtp(profile, key)
        for i in range(65000, 66000 + 65536 + 10, 7):  # past a wrap of the 16-bit sequence number
            packet = write_header(i & 1, 96, i & 0xFFFF, i * 3000 & 0xFFFFFFFF, 0x1234) + bytes([i & 0xFF]) * (i % 1200)
            assert compiled.protect(packet) == ref.protect(packet)


def test_unprotect_matches_pylibsrtp_and_refuses_what_it_refuses():
    assert fastpath.compiled is not None, fastpath.describe()
    for profile, key_len in PROFILES.values():
        key = os.urandom(key_len)
        tx = session(profile, key, inbound=False)
        ref, compiled = session(profile, key, inbound=True), fastpath.compiled.InboundSrtp(profile, key)
        wire = []
        for i in range(65500, 65600):  # across the sequence wrap
            wire.append(tx.protect(write_header(0, 96, i & 0xFFFF, i * 3000, 0x4321) + bytes([i & 0xFF]) * (i % 1100)))
        wire.insert(50, wire[40])  # a replay
        wire.insert(60, wire[59][:-1] + bytes([wire[59][-1] ^ 1]))  # a forged tag
        for datagram in wire:
            try:
                expected = ref.unprotect(datagram)
            except pylibsrtp.Error:
                with pytest.raises(fastpath.compiled.SrtpError):
                    compiled.unprotect(datagram)
            else:
                assert compiled.unprotect(datagram) == expected
        rtcp = bytes((0x80, 200, 0, 6)) + struct.pack("!I", 0x4321) + bytes(20)  # a sender report
        assert compiled.unprotect_rtcp(tx.protect_rtcp(rtcp)) == rtcp
        with pytest.raises(fastpath.compiled.SrtpError):
            compiled.unprotect(b"\x80")


def test_bad_arguments_are_refused_without_sending():
    assert fastpath.compiled is not None, fastpath.describe()
    profile, key_len = PROFILES["AEAD_AES_256_GCM"]
    with pytest.raises(ValueError):
        fastpath.compiled.OutboundSrtp(profile, b"short")
    with pytest.raises(ValueError):
        fastpath.compiled.OutboundSrtp(12345, os.urandom(key_len))
    with pytest.raises(ValueError):
        fastpath.compiled.sockaddr("not-an-address", 1)
    compiled = fastpath.compiled.OutboundSrtp(profile, os.urandom(key_len))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        addr = fastpath.compiled.sockaddr("127.0.0.1", 9)
        assert compiled.send(s.fileno(), b"\x80\x60", addr) == -1  # shorter than a header
        assert compiled.send(s.fileno(), write_header(0, 96, 1, 1, 1) + bytes(1600), addr) == -1  # too long
        extended = bytes([0x90]) + write_header(0, 96, 1, 1, 1)[1:] + b"\xbe\xde\x00\x00"
        assert compiled.send(s.fileno(), extended, addr, TWCC_EXT_ID, 1) == -1  # not a plain header
        with pytest.raises(ValueError):
            compiled.send(s.fileno(), write_header(0, 96, 1, 1, 1), addr, 15, 1)
        assert compiled.send(-1, write_header(0, 96, 1, 1, 1), addr) == -1  # sendto fails: -1, no exception


def test_the_turn_path_stamps_as_the_reference_does():
    # A TURN-relayed pair has no socket of its own: the compiled sink stamps the packet and
    # hands it to its fallback (aiortc_glue.send_rtp_through), never attached.
    assert fastpath.compiled is not None, fastpath.describe()
    packet = write_header(1, 96, 7, 9000, 0xABCDEF01) + b"payload"
    stamped: list[bytes] = []
    sink = fastpath.compiled.Sink(SendHistory())
    sink.fallback = lambda p: stamped.append(p) or len(p)
    sink.ext_id = 5
    for seq in (0, 1, 255, 256, 65535):
        sink.tw_seq = seq
        assert sink.send(packet) == len(packet) + 8
        assert stamped[-1] == with_transport_seq(packet, 5, seq)


def test_without_the_extension_the_pure_python_path_is_used_and_said_so():
    code = "from sfu.rtc import fastpath; print(fastpath.compiled is None); print(fastpath.describe())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "SFU_FASTPATH": "0"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0] == "True"
    assert out[1].startswith("pure-Python send path: SFU_FASTPATH=0")
    assert fastpath.describe().startswith("compiled send path")


class _RelayedTransport:
    """What aioice's TurnTransport offers a candidate's StunProtocol: sendto, and no socket."""

    def __init__(self):
        self.sent = []

    def get_extra_info(self, name, default=None):
        return default

    def sendto(self, data, addr):
        self.sent.append((data, addr))


async def test_a_relayed_pair_is_protected_by_the_compiled_session_and_sent_by_aioice():
    # (async: aioice's StunProtocol makes a future, which needs a running loop)
    import types

    import aioice.ice
    from aiortc.rtcdtlstransport import State

    profile, key_len = PROFILES["AEAD_AES_256_GCM"]
    key = os.urandom(key_len)
    protocol = aioice.ice.StunProtocol(None)
    protocol.transport = _RelayedTransport()
    pair = types.SimpleNamespace(protocol=protocol, remote_addr=("192.0.2.7", 3478))
    nominated = {}
    dtls = types.SimpleNamespace(
        _state=State.CONNECTED, transport=types.SimpleNamespace(_connection=types.SimpleNamespace(_nominated=nominated))
    )
    sender = peer_connection._FastSender(fastpath.compiled.OutboundSrtp(profile, key), dtls)
    packet = write_header(1, 96, 500, 9000, 0x55) + b"relayed payload"
    stamped = with_transport_seq(packet, TWCC_EXT_ID, 77)  # as the subscriber's sink stamps it
    assert sender.send(stamped) == -1  # no selected pair yet
    nominated[1] = pair
    assert sender.send(stamped) == len(packet) + 8
    assert sender.send(packet[:-1] + b"!") == len(packet)
    ref = session(profile, key, inbound=False)
    assert protocol.transport.sent == [
        (ref.protect(with_transport_seq(packet, TWCC_EXT_ID, 77)), ("192.0.2.7", 3478)),
        (ref.protect(packet[:-1] + b"!"), ("192.0.2.7", 3478)),
    ]
    dtls._state = State.CLOSED
    assert sender.send(packet) == -1


def test_a_checkout_without_the_built_extension_falls_back_and_says_why(tmp_path):
    import shutil
    from pathlib import Path

    source = Path(fastpath.__file__).resolve().parents[1]
    shutil.copytree(source, tmp_path / "sfu", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    code = "import sfu.rtc.fastpath as f; print(f.__file__); print(f.compiled is None); print(f.describe())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0].startswith(str(tmp_path))
    assert out[1] == "True"
    assert out[2].startswith("pure-Python send path: the compiled extension sfu.rtc._fastpath is not built")


def test_the_server_logs_which_send_path_it_uses(caplog):
    with caplog.at_level("INFO", logger="sfu.rtc.fastpath"):
        glue.log_send_path()
    assert [r.getMessage() for r in caplog.records] == [f"RTP send path: {fastpath.describe()}"]
    code = "import logging; logging.basicConfig(); from sfu.rtc import fastpath; fastpath.log_choice()"
    err = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "SFU_FASTPATH": "0"},
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    assert "WARNING:sfu.rtc.fastpath:RTP send path: pure-Python send path: SFU_FASTPATH=0" in err

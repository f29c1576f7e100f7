"""The compiled twins of sfu/rtc/_media.c against their Python references, call by call.

Each twin (``sfu.rtc._fastpath.RtpMunger``, ``Vp8Munger``, ``PacketCache``, ``SendHistory``)
is driven by the same seeded random operations as its reference (``PyRtpMunger``, ...): every
return value and every public attribute must be the same after every call. The twins are
compared whatever SFU_FASTPATH says (it only chooses what the media modules export).
"""

from __future__ import annotations

import gc
import importlib
import os
import random
import subprocess
import sys
import weakref
from types import ModuleType
from typing import Any

import pytest

from sfu.bwe import estimator
from sfu.bwe.estimator import PySendHistory
from sfu.media import compiled, munger, packet_cache, vp8
from sfu.media.munger import PyRtpMunger
from sfu.media.packet_cache import PyPacketCache
from sfu.media.vp8 import PyVp8Munger

try:
    ext: ModuleType | None = importlib.import_module("sfu.rtc._fastpath")
except ImportError:
    ext = None

needs_ext = pytest.mark.skipif(ext is None, reason="sfu.rtc._fastpath is not built")
pytestmark = needs_ext

SEEDS = range(8)


def public(obj: Any) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")}


@pytest.mark.parametrize(
    ("name", "reference"),
    [("RtpMunger", PyRtpMunger), ("Vp8Munger", PyVp8Munger), ("PacketCache", PyPacketCache)],
)
def test_a_twin_has_the_references_public_names(name, reference):
    assert public(getattr(ext, name)) == public(reference)


def test_the_send_history_twin_has_the_references_names_and_highest():
    assert public(ext.SendHistory) == public(PySendHistory) | {"highest"}


def test_the_media_modules_export_the_twins_unless_switched_off():
    if compiled.disabled():
        assert munger.RtpMunger is PyRtpMunger
    else:
        assert munger.RtpMunger is ext.RtpMunger
        assert vp8.Vp8Munger is ext.Vp8Munger
        assert packet_cache.PacketCache is ext.PacketCache
        assert estimator.SendHistory is ext.SendHistory
        assert compiled.names() == ["RtpMunger", "Vp8Munger", "PacketCache", "SendHistory"]
    code = (
        "from sfu.media import munger, vp8, packet_cache, compiled; from sfu.bwe import estimator\n"
        "print(munger.RtpMunger.__name__, vp8.Vp8Munger.__name__, packet_cache.PacketCache.__name__,"
        " estimator.SendHistory.__name__, compiled.names())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "SFU_FASTPATH": "0"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["PyRtpMunger", "PyVp8Munger", "PyPacketCache", "PySendHistory", "[]"]


# ---------------------------------------------------------------- RtpMunger


def munger_state(m: Any) -> tuple[int, int, bool]:
    return m.last_seq, m.last_ts, m.started


def near_wrap_ts(rng: random.Random) -> int:
    return rng.choice((rng.randrange(1 << 32), (1 << 32) - rng.randrange(1, 5000), rng.randrange(5000)))


@pytest.mark.parametrize("seed", SEEDS)
def test_rtp_munger_twin_matches_the_reference(seed):
    rng = random.Random(seed)
    initial_seq = rng.choice((0, 1, 65535, 65534, rng.randrange(65536)))
    initial_ts = near_wrap_ts(rng)
    ref, twin = PyRtpMunger(initial_seq, initial_ts), ext.RtpMunger(initial_seq, initial_ts)
    assert munger_state(twin) == munger_state(ref)
    # Incoming extended seqs as the producer's unwrapper makes them: from 2**16 + first seq,
    # the first one often just below a 16-bit wrap.
    cur = (1 << 16) + rng.choice((65530, 65535, 0, rng.randrange(65536)))
    ts = near_wrap_ts(rng)
    for _ in range(4000):
        op = rng.random()
        if op < 0.04:
            cur += rng.randrange(-3, 2000)
            ts = (ts + rng.randrange(-100, 200000)) & 0xFFFFFFFF
            gap = rng.choice((1, 0, -5, rng.randrange(1, 100000), 1 << 33))
            args = (cur, ts, gap)
            assert twin.start(*args) == ref.start(*args)
        elif op < 0.75:
            step = rng.choice((1, 1, 1, 1, 2, 5, 0, -1, -3, -40, 300, -300))
            cur += step if step > 0 else 0
            e = cur + (step if step <= 0 else 0)
            ts_in = (ts + rng.randrange(-6000, 6000) + (3000 * step if step > 0 else 0)) & 0xFFFFFFFF
            if step > 0:
                ts = ts_in
            assert twin.map(e, ts_in) == ref.map(e, ts_in), (e, ts_in)
        elif op < 0.85:
            e = cur + 1 if rng.random() < 0.7 else cur + rng.randrange(-5, 5)
            if e > cur:
                cur = e
            assert twin.skip(e) == ref.skip(e)
        elif op < 0.95:
            out = (ref.last_seq + rng.randrange(-200, 5)) & 0xFFFF if rng.random() < 0.8 else rng.randrange(65536)
            assert twin.reverse(out) == ref.reverse(out), out
        else:
            t = near_wrap_ts(rng)
            assert twin.out_timestamp(t) == ref.out_timestamp(t)
        assert munger_state(twin) == munger_state(ref)


def test_rtp_munger_twin_takes_keywords_and_masks_like_python():
    ref, twin = PyRtpMunger(initial_seq=-1, initial_ts=-1), ext.RtpMunger(initial_seq=-1, initial_ts=-1)
    assert munger_state(twin) == munger_state(ref) == (65534, 0xFFFFFFFF, False)
    for m in (ref, twin):
        m.start(ext_seq=5, timestamp=(1 << 40) + 7, ts_gap=1)
    assert twin.map(ext_seq=5, timestamp=-3) == ref.map(ext_seq=5, timestamp=-3)
    assert twin.out_timestamp(timestamp=1 << 64) == ref.out_timestamp(1 << 64)
    assert twin.reverse(out_seq=65535 + (1 << 20)) == ref.reverse(65535 + (1 << 20))
    with pytest.raises(OverflowError):
        twin.map(1 << 62, 0)
    with pytest.raises(TypeError):
        twin.map(1.5, 0)
    with pytest.raises(TypeError):
        twin.map(1)


# ---------------------------------------------------------------- Vp8Munger


def vp8_payload(rng: random.Random, pid: int, tl0: int, wide: bool) -> bytes:
    """A VP8 payload descriptor (RFC 7741) with or without each optional field, and a body."""
    body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 8)))
    if rng.random() < 0.1:
        return bytes((rng.randrange(256) & 0x7F,)) + body  # no X byte at all
    i_bit, l_bit = rng.random() < 0.9, rng.random() < 0.7
    tk = rng.choice((0, 0x20, 0x10, 0x30))
    b0 = 0x80 | rng.choice((0x10, 0x00, 0x11, 0x20))
    out = bytearray((b0, (0x80 if i_bit else 0) | (0x40 if l_bit else 0) | tk))
    if i_bit:
        out += bytes((0x80 | (pid >> 8) & 0x7F, pid & 0xFF)) if wide else bytes((pid & 0x7F,))
    if l_bit:
        out.append(tl0 & 0xFF)
    if tk:
        out.append(rng.randrange(256))
    return bytes(out) + body


@pytest.mark.parametrize("seed", SEEDS)
def test_vp8_munger_twin_matches_the_reference(seed):
    rng = random.Random(seed)
    ref, twin = PyVp8Munger(), ext.Vp8Munger()
    # Two layers, each with its own picture ID / TL0PICIDX numbering; switches restart.
    layers = [[rng.randrange(1 << 15), rng.randrange(256), rng.random() < 0.5] for _ in range(2)]
    layer = 0
    for _ in range(5000):
        op = rng.random()
        if op < 0.03:
            layer = rng.randrange(2)
            ref.restart()
            twin.restart()
        else:
            state = layers[layer]
            if rng.random() < 0.3:
                state[0] = (state[0] + 1) & 0x7FFF
                if rng.random() < 0.5:
                    state[1] = (state[1] + 1) & 0xFF
            if rng.random() < 0.02:
                state[2] = not state[2]  # the encoder changes width
            pid = state[0] - rng.choice((0, 0, 0, 1, 3, 200)) & 0x7FFF  # late packets of older frames
            payload = vp8_payload(rng, pid, state[1], state[2])
            kind = rng.random()
            if kind < 0.08:
                payload = payload[: rng.randrange(len(payload) + 1)]  # truncated
            elif kind < 0.12:
                payload = bytes(rng.randrange(256) for _ in range(rng.randrange(6)))  # garbage
            expected = ref.rewrite(payload)
            got = twin.rewrite(payload)
            assert got == expected, payload.hex()
            assert type(got) is type(expected)
            assert (got is payload) == (expected is payload), payload.hex()
        assert (twin.last_pid, twin.last_tl0) == (ref.last_pid, ref.last_tl0)


@pytest.mark.parametrize("wide", [False, True])
def test_vp8_munger_twin_moves_forward_at_exactly_half_the_picture_id_range(wide):
    mask = 0x7FFF if wide else 0x7F

    def payload(pid: int, tl0: int) -> bytes:
        pid_bytes = bytes((0x80 | pid >> 8, pid & 0xFF)) if wide else bytes((pid,))
        return bytes((0x90, 0xC0)) + pid_bytes + bytes((tl0,)) + b"body"

    ref, twin = PyVp8Munger(), ext.Vp8Munger()
    for pid, tl0 in ((0, 0), (mask >> 1, 0x80), ((mask >> 1) * 2 + 1, 0x7F), (0, 0x100 - 1), (1, 0)):
        assert twin.rewrite(payload(pid, tl0 & 0xFF)) == ref.rewrite(payload(pid, tl0 & 0xFF))
        assert (twin.last_pid, twin.last_tl0) == (ref.last_pid, ref.last_tl0)
    # a restart onto another numbering, then the same boundary in the rewritten values
    ref.restart()
    twin.restart()
    for pid in (1000 & mask, (1000 + (mask >> 1)) & mask, (1001 + (mask >> 1)) & mask):
        assert twin.rewrite(payload(pid, 9)) == ref.rewrite(payload(pid, 9))
        assert (twin.last_pid, twin.last_tl0) == (ref.last_pid, ref.last_tl0)


def test_vp8_munger_twin_takes_any_buffer_and_refuses_other_types():
    twin = ext.Vp8Munger()
    data = bytearray((0x90, 0x80, 0x05, 0xAA))
    assert twin.rewrite(payload=data) is data
    view = memoryview(bytes(data))
    assert twin.rewrite(view) is view
    with pytest.raises(TypeError):
        twin.rewrite(5)
    for short in (b"", b"\x80", b"\x80\x80", b"\x80\x80\x80", b"\x80\x40", b"\x80\xc0\x05"):
        assert twin.rewrite(short) is short


# ---------------------------------------------------------------- PacketCache


@pytest.mark.parametrize("seed", SEEDS)
def test_packet_cache_twin_matches_the_reference(seed):
    rng = random.Random(seed)
    size = rng.choice((1, 7, 64, 512))
    ref, twin = (PyPacketCache(), ext.PacketCache()) if size == 512 else (PyPacketCache(size), ext.PacketCache(size))
    base = rng.choice((0, 65000, rng.randrange(65536)))
    recent: list[int] = []
    for _ in range(5000):
        op = rng.random()
        if op < 0.35:
            seq = (base + rng.randrange(-50, 1000)) & 0xFFFF
            if rng.random() < 0.1:
                seq = seq + size * rng.randrange(-3, 4)  # the same slot (negative seqs included)
            packet = rng.randbytes(rng.randrange(1, 30))
            ref.put(seq, packet)
            twin.put(seq, packet)
            recent.append(seq)
        else:
            seq = rng.choice(recent) if recent and rng.random() < 0.7 else rng.randrange(-1000, 66000)
            if op < 0.7:
                got, expected = twin.get(seq), ref.get(seq)
                assert got is expected, seq
            elif op < 0.85:
                assert twin.resent_ms(seq) == ref.resent_ms(seq)
            else:
                now = rng.choice((rng.uniform(0, 1e9), float(rng.randrange(1 << 40))))
                ref.mark_resent(seq, now)
                twin.mark_resent(seq, now)


def test_packet_cache_twin_keeps_python_semantics_at_the_edges():
    twin, ref = ext.PacketCache(size=4), PyPacketCache(size=4)
    for c in (twin, ref):
        c.put(-1, b"minus one")  # floor modulo: slot 3
        c.put(seq=3, packet=b"three")  # the same slot: replaces it
    assert twin.get(-1) is ref.get(-1) is None
    assert twin.get(3) == ref.get(3) == b"three"
    assert twin.resent_ms(7) == ref.resent_ms(7) == -1e18
    with pytest.raises(ValueError):
        ext.PacketCache(0)
    with pytest.raises(TypeError):
        twin.put(1)


def test_packet_cache_twin_owns_its_references_and_is_collected_in_a_cycle():
    packet = bytes(range(50))
    before = sys.getrefcount(packet)
    twin = ext.PacketCache(8)
    twin.put(1, packet)
    assert sys.getrefcount(packet) == before + 1
    twin.put(9, b"other")  # the same slot
    assert sys.getrefcount(packet) == before
    twin.put(2, packet)
    del twin
    assert sys.getrefcount(packet) == before

    class Holder:
        cache: Any

    holder = Holder()
    holder.cache = ext.PacketCache(4)
    holder.cache.put(0, holder)
    alive = weakref.ref(holder)
    del holder
    gc.collect()
    assert alive() is None


# ---------------------------------------------------------------- SendHistory


@pytest.mark.parametrize("seed", SEEDS)
def test_send_history_twin_matches_the_reference(seed):
    rng = random.Random(seed)
    size = rng.choice((8192, 16, 100))
    ref, twin = (PySendHistory(), ext.SendHistory()) if size == 8192 else (PySendHistory(size), ext.SendHistory(size))
    assert twin.highest == ref._unwrapper.highest == -1
    assert twin.get(5) is ref.get(5) is None
    seq = rng.choice((65500, 65535, 0, rng.randrange(65536)))
    sent: list[int] = []
    for _ in range(6000):
        if rng.random() < 0.5:
            step = rng.choice((1, 1, 1, 1, 2, 0, -1, -5, 50, 3000, -20000, 40000))
            s = (seq + step) & 0xFFFF
            if step > 0:
                seq = s
            send_ms = rng.choice((rng.uniform(0, 1e7), float(rng.randrange(1 << 30))))
            n = rng.randrange(1, 1500)
            ref.add(s, send_ms, n)
            twin.add(s, send_ms, n)
            sent.append(s)
        else:
            s = rng.choice(sent[-300:]) if sent and rng.random() < 0.8 else rng.randrange(65536)
            assert twin.get(s) == ref.get(s), s
        assert twin.highest == ref._unwrapper.highest


def test_send_history_twin_keyword_and_edge_arguments():
    twin, ref = ext.SendHistory(size=8), PySendHistory(size=8)
    for h in (twin, ref):
        h.add(seq=65535, send_ms=1.5, size=100)
        h.add(0, 2, 3)
    assert twin.get(seq=65535) == ref.get(65535) == (1.5, 100)
    assert twin.get(0) == ref.get(0) == (2.0, 3)
    assert twin.get(65535 + (1 << 16)) == ref.get(65535 + (1 << 16))  # only the low 16 bits matter
    with pytest.raises(ValueError):
        ext.SendHistory(0)
    with pytest.raises(OverflowError):
        twin.add(1 << 62, 0.0, 1)


# ---------------------------------------------------------------- properties (Hypothesis)

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

munger_ops = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.integers(0, 1 << 20), st.integers(0, (1 << 32) - 1), st.integers(-10, 1 << 33)),
        st.tuples(st.just("map"), st.integers(0, 1 << 20), st.integers(-(1 << 33), 1 << 33)),
        st.tuples(st.just("skip"), st.integers(0, 1 << 20)),
        st.tuples(st.just("reverse"), st.integers(-(1 << 17), 1 << 17)),
        st.tuples(st.just("out_timestamp"), st.integers(-(1 << 34), 1 << 34)),
    ),
    max_size=60,
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.integers(-(1 << 20), 1 << 20), st.integers(-(1 << 34), 1 << 34), munger_ops)
def test_property_rtp_munger_twin_matches(initial_seq, initial_ts, ops):
    ref, twin = PyRtpMunger(initial_seq, initial_ts), ext.RtpMunger(initial_seq, initial_ts)
    for name, *args in ops:
        assert getattr(twin, name)(*args) == getattr(ref, name)(*args)
        assert munger_state(twin) == munger_state(ref)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.lists(st.one_of(st.none(), st.binary(max_size=12)), max_size=40))
def test_property_vp8_munger_twin_matches(payloads):
    ref, twin = PyVp8Munger(), ext.Vp8Munger()
    for payload in payloads:
        if payload is None:
            ref.restart()
            twin.restart()
            continue
        expected, got = ref.rewrite(payload), twin.rewrite(payload)
        assert got == expected
        assert (got is payload) == (expected is payload)
        assert (twin.last_pid, twin.last_tl0) == (ref.last_pid, ref.last_tl0)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    st.integers(1, 40),
    st.lists(st.tuples(st.booleans(), st.integers(-(1 << 20), 1 << 20)), max_size=80),
)
def test_property_packet_cache_twin_matches(size, ops):
    ref, twin = PyPacketCache(size), ext.PacketCache(size)
    for put, seq in ops:
        if put:
            ref.put(seq, b"%d" % seq)
            twin.put(seq, b"%d" % seq)
        else:
            assert twin.get(seq) == ref.get(seq)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    st.integers(1, 300), st.lists(st.tuples(st.booleans(), st.integers(0, 0xFFFF), st.integers(0, 2000)), max_size=80)
)
def test_property_send_history_twin_matches(size, ops):
    ref, twin = PySendHistory(size), ext.SendHistory(size)
    for i, (add, seq, n) in enumerate(ops):
        if add:
            ref.add(seq, float(i), n)
            twin.add(seq, float(i), n)
        else:
            assert twin.get(seq) == ref.get(seq)
        assert twin.highest == ref._unwrapper.highest

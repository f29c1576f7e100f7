"""Shared by the fuzzers: how many inputs to run, Hypothesis settings, the seed corpus
(packets captured from a real Chromium call, tests/unit/fixtures) and the mutator.

A bounded run is part of the normal test suite (500 generated inputs per property and 5000
mutants of the captured packets per parser, the same inputs every run). ``SFU_FUZZ_EXAMPLES=1000000`` (``make fuzz``) runs that many mutants per
mutation target, ``SFU_FUZZ_PROPERTY_EXAMPLES`` that many generated inputs per Hypothesis
property; ``SFU_FUZZ_SEED`` picks another seed for the mutation fuzzers."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

from hypothesis import HealthCheck, settings

FIXTURES = Path(__file__).resolve().parent.parent / "unit" / "fixtures"
LONG = "SFU_FUZZ_EXAMPLES" in os.environ or "SFU_FUZZ_PROPERTY_EXAMPLES" in os.environ
# per Hypothesis property: generating is slower than mutating, so the long run sets its own count
EXAMPLES = int(os.environ.get("SFU_FUZZ_PROPERTY_EXAMPLES", "500"))
MUTATIONS = int(os.environ.get("SFU_FUZZ_EXAMPLES", "5000"))  # per mutation target
SEED = int(os.environ.get("SFU_FUZZ_SEED", "20261201"))

FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same inputs every run: a failure reproduces
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def seeds(prefix: str = "") -> list[bytes]:
    """The captured packets whose file names start with ``prefix``."""
    return [p.read_bytes() for p in sorted(FIXTURES.glob(f"{prefix}*.bin"))]


INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """One to four mutations of ``data``: bit flips, interesting bytes, truncation,
    extension, insertion, deletion, duplication of a slice, splicing with another seed."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        n = len(buf)
        if op == 0 and n:
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(n)
                buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[rng.randrange(n)] = rng.choice(INTERESTING)
        elif op == 2 and n:
            del buf[rng.randrange(n + 1) :]
        elif op == 3:
            buf += rng.randbytes(rng.randint(1, 64))
        elif op == 4:
            i = rng.randrange(n + 1)
            buf[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 5 and n:
            i = rng.randrange(n)
            del buf[i : i + rng.randint(1, 16)]
        elif op == 6 and n:
            i = rng.randrange(n)
            buf[i:i] = buf[i : i + rng.randint(1, 32)]
        elif op == 7 and pool:
            other = rng.choice(pool)
            buf = buf[: rng.randrange(n + 1)] + other[rng.randrange(len(other) + 1) :]
        elif op == 8 and n >= 2:  # a 16-bit field set to an extreme (lengths, counts)
            i = rng.randrange(n - 1)
            buf[i : i + 2] = rng.choice((b"\x00\x00", b"\xff\xff", b"\x7f\xff", b"\x80\x00", b"\x00\x01"))
    return bytes(buf)


def mutations(pool: list[bytes], count: int = MUTATIONS, salt: int = 0) -> Iterator[bytes]:
    """``count`` mutants of the pool's members (the same ones for the same seed and salt)."""
    rng = random.Random(SEED * 1000 + salt)
    for _ in range(count):
        yield mutate(rng.choice(pool), rng, pool)

"""The compiled twins of the per-stream media state, when the extension is built.

``sfu/rtc/_media.c`` (part of the compiled extension ``sfu.rtc._fastpath``, built by setup.py
with ``sfu/rtc/_fastpath.c``) holds C twins of ``munger.PyRtpMunger``, ``vp8.PyVp8Munger``,
``packet_cache.PyPacketCache`` and ``bwe.estimator.PySendHistory``: the same constructor
arguments, methods, return values and public attributes (tests/unit/test_media_twins.py
compares them call by call), so that the compiled forwarding loop can drive them without
Python. Each of those modules exports, under the class's public name (``RtpMunger``, ...), the
twin when there is one and the Python reference otherwise.

The twins are used when the extension is importable and ``SFU_FASTPATH`` is not ``0`` (the
same switch, read the same way, as sfu/rtc/fastpath.py's send path). The extension is loaded
by name: it is not a Python module of sfu, and nothing here imports one.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

ENV = "SFU_FASTPATH"
EXTENSION = "sfu.rtc._fastpath"
OFF = ("0", "false", "no", "off")


def disabled(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether the environment turns the compiled paths off."""
    return environ.get(ENV, "1").strip().lower() in OFF


def _load() -> ModuleType | None:
    if disabled():
        return None
    try:
        return importlib.import_module(EXTENSION)
    except ImportError:  # not built: no compiler, no headers, no libsrtp2
        return None


extension: ModuleType | None = _load()


def twin(name: str) -> Any:
    """The compiled class ``name`` (e.g. ``"RtpMunger"``), or None: no extension, switched off,
    or an extension built before the twins."""
    return getattr(extension, name, None)


def names() -> list[str]:
    """The twins in use."""
    return [name for name in ("RtpMunger", "Vp8Munger", "PacketCache", "SendHistory") if twin(name) is not None]

"""The compiled SRTP path, when it was built; the pure-Python path otherwise.

``sfu/rtc/_fastpath.c`` (built by ``pip install -e .`` through setup.py, linking libsrtp2)
protects an outgoing RTP packet with its own libsrtp2 session and sends it with one
``sendto`` in one call, optionally inserting the transport-wide sequence number on the way:
no Python object per packet, no pylibsrtp buffer copies, no uvloop transport in between; and
it unprotects what a transport receives. ``aiortc_glue`` gives each DTLS transport such
sessions, made from the keys aiortc derives for its own, and checks each against aiortc's
session on a probe packet before using it (RTCP is still sent through aiortc's session).

Without a compiler, Python headers or libsrtp2's headers the build leaves the extension out
(setup.py marks it optional), and everything goes through the pure-Python path: aiortc's
pylibsrtp session and the event loop's transport, the reference the unit tests compare the
compiled path with byte for byte. ``SFU_FASTPATH=0`` in the environment chooses the
pure-Python path even when the extension is there (for comparisons). ``describe()`` says
which path is in use and why; the server logs it at start.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

logger = logging.getLogger(__name__)

ENV = "SFU_FASTPATH"

_module: ModuleType | None
try:
    _module = importlib.import_module("sfu.rtc._fastpath")
except ImportError as exc:  # not built: no compiler, no headers, no libsrtp2
    _module = None
    _reason = f"the compiled extension sfu.rtc._fastpath is not built ({exc})"
else:
    _reason = ""

if _module is not None and os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
    _reason = f"{ENV}=0 in the environment"
    _module = None

compiled: ModuleType | None = _module


def describe() -> str:
    """Which send path is in use, in one line."""
    if compiled is not None:
        return "compiled send path (sfu.rtc._fastpath: libsrtp2 protect + sendto per packet, libsrtp2 unprotect)"
    return f"pure-Python send path: {_reason}"


def log_choice() -> None:
    if compiled is not None:
        logger.info("RTP send path: %s", describe())
    else:
        logger.warning("RTP send path: %s", describe())

"""The pure layers import no I/O framework (docs/architecture.md, "The rule of each layer")."""

import ast
from pathlib import Path

import pytest

SFU = Path(__file__).resolve().parents[2] / "sfu"
IO = {"aiortc", "aioice", "aiohttp", "asyncio", "pylibsrtp", "redis"}
PURE = [
    *sorted(str(p.relative_to(SFU)) for p in (SFU / "media").glob("*.py")),
    *sorted(str(p.relative_to(SFU)) for p in (SFU / "bwe").glob("*.py")),
    "stream.py",
    "forwarding.py",
    "dynacast.py",
    "speaker.py",
    "data_frame.py",
    "data_relay.py",
    "events.py",
    "rtc/routing.py",
    "rtc/demux.py",
    "rtc/ice_addresses.py",
    "rtc/kernel_stamp.py",
    "cluster/coordinator.py",
    "cluster/memory.py",
    "rtc/fastpath.py",
]


def imports(path):
    """(absolute module, relative level) of every import in a module."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_imports_no_io_framework(module):
    found = {name.split(".")[0] for name, level in imports(SFU / module) if level == 0}
    assert not found & IO, f"{module} imports {sorted(found & IO)}"


@pytest.mark.parametrize("module", sorted(p.name for p in (SFU / "media").glob("*.py")))
def test_media_modules_import_only_each_other(module):
    for name, level in imports(SFU / "media" / module):
        assert level <= 1, f"media/{module} imports ..{name} from outside media/"
        assert level == 1 or not name.startswith("sfu"), f"media/{module} imports {name}"

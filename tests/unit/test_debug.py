"""The memory report counts classes that exist (a class that moved would be counted as 0)."""

import importlib

from sfu.debug import TRACKED


def test_every_class_the_memory_report_counts_exists():
    for name in TRACKED:
        module, _, cls = name.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), cls, None), type), name

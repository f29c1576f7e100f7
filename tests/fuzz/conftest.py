"""After a long fuzz run (SFU_FUZZ_EXAMPLES set), print each target's inputs per second."""

from __future__ import annotations

from typing import Any

import pytest

from .corpus import EXAMPLES, LONG, MUTATIONS

_COUNTS: dict[str, int] = {}  # nodeid -> inputs (Hypothesis: at most; it may exhaust a strategy)
_DURATIONS: dict[str, float] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if LONG and not getattr(item.module, "PRINTS_ITS_COUNTS", False):
            # A million SDP mutants take minutes: past the suite's 300 s per test.
            item.add_marker(pytest.mark.timeout(7200))
        function = getattr(item, "obj", None)
        if getattr(function, "is_hypothesis_test", False):
            _COUNTS[item.nodeid] = EXAMPLES
        elif "mutated" in item.name and not getattr(item.module, "PRINTS_ITS_COUNTS", False):
            _COUNTS[item.nodeid] = getattr(item.module, "MUTATION_COUNT", MUTATIONS)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.nodeid in _COUNTS:
        _DURATIONS[report.nodeid] = report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not LONG or not _DURATIONS:
        return
    terminalreporter.section("fuzz targets: inputs (Hypothesis: at most) and inputs per second")
    for nodeid, seconds in sorted(_DURATIONS.items()):
        count = _COUNTS[nodeid]
        terminalreporter.write_line(f"{nodeid}: {count} in {seconds:.1f} s, {count / max(seconds, 1e-9):,.0f}/s")

"""What the glue's modules share: the error of a changed internal and the checks for one."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import aioice.ice

SUPPORTED_AIORTC = "1.16."

# Marks an aiortc/aioice object the glue has already changed (each change is made once).
TAPPED = "_sfu_tapped"


class GlueError(RuntimeError):
    """The installed aiortc/aioice does not have an internal this package relies on."""


def missing_attributes(checks: Iterable[tuple[Any, str]]) -> list[str]:
    """A problem for each ``(owner, name)`` where ``owner`` has no ``name``."""
    problems: list[str] = []
    for owner, name in checks:
        # Instance attributes (like Connection._nominated) are checked on a fresh object.
        if hasattr(owner, name):
            continue
        if owner is aioice.ice.Connection and hasattr(aioice.ice.Connection(ice_controlling=True), name):
            continue
        problems.append(f"{getattr(owner, '__name__', owner)}.{name} is missing")
    return problems


def missing_names(functions: Sequence[Callable[..., Any]], names: Iterable[str], problem: str) -> list[str]:
    """``problem.format(name)`` for each name that none of ``functions`` refers to any more
    (an attribute their code sets or reads, a method it calls)."""
    used = {n for function in functions for n in function.__code__.co_names}
    return [problem.format(name) for name in names if name not in used]

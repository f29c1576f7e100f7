"""docs/scaling.md's table of Redis keys lists exactly the keys the coordinator's scripts use."""

import re
from pathlib import Path

from sfu.cluster import redis_coordinator

DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"


def script_keys() -> set[str]:
    """Every key a script names: P .. 'nodes', P .. 'room:' .. room → nodes, room:."""
    text = "\n".join(
        value for name, value in vars(redis_coordinator).items() if name.startswith("_") and isinstance(value, str)
    )
    return set(re.findall(r"P \.\. '([a-z_]+:?)'", text))


def documented_keys() -> set[str]:
    """The first cell of each row of the table under "### The Redis keys": `sfu:room:<room>` → room:."""
    section = DOC.read_text().split("### The Redis keys", 1)[1].split("\n### ", 1)[0]
    cells = re.findall(r"^\| `sfu:([a-z_]+:?)[^`]*` \|", section, flags=re.MULTILINE)
    return set(cells)


def test_the_documented_redis_keys_are_the_keys_the_scripts_use():
    used = script_keys()
    assert used >= {"node:", "worker:", "room:", "members:", "nodes", "workers", "rooms"}
    assert documented_keys() == used

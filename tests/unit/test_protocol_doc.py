"""docs/protocol.md and the typed messages stay in step, both ways."""

import re
from pathlib import Path

from sfu.errors import ERROR_CODES
from sfu.signaling import limits
from sfu.signaling.messages import CLIENT_TYPES
from sfu.signaling.server_messages import SERVER_TYPES

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", DOC, re.S | re.M)
    assert match, f"docs/protocol.md has no section {title!r}"
    return match.group(1)


def first_column(text: str) -> set[str]:
    """The backticked names in the first column of the section's tables."""
    return set(re.findall(r"^\|\s*`([^`]+)`", text, re.M))


def test_client_messages_documented_are_the_ones_parsed():
    assert first_column(section("Client → server")) == set(CLIENT_TYPES)


def test_server_messages_documented_are_the_ones_sent():
    assert first_column(section("Server → client")) == set(SERVER_TYPES)


def test_error_codes_documented_are_the_ones_raised():
    assert first_column(section("Error codes")) == set(ERROR_CODES)


def test_close_codes_documented_are_the_ones_used():
    used = {str(v) for k, v in vars(limits).items() if k.startswith("CLOSE_")}
    assert first_column(section("Close codes")) == used

"""The browser client's protocol module (client/protocol.js), tested with Node's test runner."""

import shutil
import subprocess
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "client"


def test_client_protocol_module_passes_its_node_tests():
    node = shutil.which("node")
    assert node, "node is installed by scripts/install-system-deps.sh"
    result = subprocess.run([node, "--test", str(CLIENT / "tests")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout


def test_every_client_module_parses():
    node = shutil.which("node")
    for module in CLIENT.glob("*.js"):
        result = subprocess.run(
            [node, "--input-type=module", "--check"], input=module.read_text(), capture_output=True, text=True
        )
        assert result.returncode == 0, f"{module.name}: {result.stderr}"

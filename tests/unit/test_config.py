"""Configuration: defaults < TOML file < SFU_* environment < command line; clear errors."""

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sfu import auth, turn
from sfu.__main__ import main
from sfu.config import Config, ConfigError, from_file, load, option_docs

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s" * 40


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sfu.toml"
    path.write_text(text)
    return path


def test_precedence_is_defaults_then_file_then_env_then_cli(tmp_path):
    path = write(tmp_path, 'port = 9000\nroom_capacity = 4\nlog_level = "DEBUG"\nice_host_addresses = ["127.0.0.1"]\n')
    env = {"SFU_ROOM_CAPACITY": "5", "SFU_LOG_LEVEL": "WARNING"}
    config = load(path, {"log_level": "ERROR", "port": None}, env)
    assert (config.port, config.room_capacity, config.log_level) == (9000, 5, "ERROR")
    assert config.ice_host_addresses == ("127.0.0.1",)
    assert config.heartbeat_interval_s == Config().heartbeat_interval_s
    # SFU_CONFIG names the file when --config does not.
    assert load(None, {}, {"SFU_CONFIG": str(path)}).port == 9000


def test_file_errors_name_the_option(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown option.*prot"):
        load(write(tmp_path, "prot = 1\n"), {}, {})
    with pytest.raises(ConfigError, match="port must be an integer"):
        load(write(tmp_path, 'port = "80"\n'), {}, {})
    with pytest.raises(ConfigError, match="allow_open_rooms must be true or false"):
        load(write(tmp_path, 'allow_open_rooms = "yes"\n'), {}, {})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "port = \n"), {}, {})
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "missing.toml", {}, {})
    with pytest.raises(ConfigError, match="SFU_PORT"):
        load(None, {}, {"SFU_PORT": "eighty"})
    with pytest.raises(ConfigError, match="SFU_ALLOW_OPEN_ROOMS"):
        load(None, {}, {"SFU_ALLOW_OPEN_ROOMS": "perhaps"})


def test_open_rooms_only_on_loopback_unless_configured():
    assert load(None, {}, {}).open_rooms  # make run: 127.0.0.1, no key, open
    with pytest.raises(ConfigError, match="auth_secret"):
        load(None, {"host": "0.0.0.0"}, {})
    assert load(None, {"host": "0.0.0.0", "allow_open_rooms": True}, {}).open_rooms
    secured = load(None, {"host": "0.0.0.0"}, {"SFU_AUTH_SECRET": SECRET})
    assert secured.auth_enabled and not secured.open_rooms
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load(None, {}, {"SFU_AUTH_SECRET": "short"})


def test_a_room_larger_than_a_subscribe_offer_can_carry_is_pointed_out_at_start(caplog):
    assert Config().advisories() == []  # 16 participants: 30 tracks and the data channels fit in 32
    big = load(None, {"room_capacity": 24}, {})
    (advice,) = big.advisories()
    assert "room_capacity 24" in advice and "max_m_sections_per_sdp = 47" in advice
    room_of_24 = {"SFU_MAX_M_SECTIONS_PER_SDP": "47", "SFU_MAX_MESSAGE_BYTES": str(47 * 2048)}
    assert load(None, {"room_capacity": 24}, room_of_24).advisories() == []
    # More m-sections than an answer to them can carry in one signaling frame.
    (advice_frame,) = load(None, {"room_capacity": 40}, {"SFU_MAX_M_SECTIONS_PER_SDP": "79"}).advisories()
    assert "max_message_bytes 65536" in advice_frame and "max_message_bytes = 161792" in advice_frame
    wide = {"SFU_MAX_M_SECTIONS_PER_SDP": "79", "SFU_MAX_MESSAGE_BYTES": "161792"}
    assert load(None, {"room_capacity": 40}, wide).advisories() == []
    from sfu.app import create_app

    with caplog.at_level("WARNING", logger="sfu.app"):
        create_app(big)
    assert any(advice in r.getMessage() for r in caplog.records)


def test_tls_ice_and_turn_options_are_checked(tmp_path):
    bad = [
        ({"tls_cert_file": tmp_path / "c.pem"}, "go together"),
        ({"tls_cert_file": tmp_path / "c.pem", "tls_key_file": tmp_path / "k.pem"}, "no such file"),
        ({"ice_host_addresses": ("0.0.0.0",)}, "needs ice_announced_address"),
        ({"ice_announced_address": "example.com"}, "not an IP address"),
        ({"ice_port_min": 40000}, "go together"),
        ({"ice_port_min": 50000, "ice_port_max": 40000}, "ice_port_min <= ice_port_max"),
        ({"turn_urls": ("turn:x:3478",)}, "needs turn_secret"),
        ({"turn_urls": ("stun:x:3478",), "turn_secret": "s"}, "turn: or turns:"),
    ]
    for changes, message in bad:
        with pytest.raises(ConfigError, match=message):
            load(None, changes, {})
    ok = load(
        None,
        {},
        {
            "SFU_ICE_HOST_ADDRESSES": "0.0.0.0",
            "SFU_ICE_ANNOUNCED_ADDRESS": "203.0.113.7",
            "SFU_ICE_PORT_MIN": "40000",
            "SFU_ICE_PORT_MAX": "40099",
            "SFU_TURN_URLS": "turn:t.example:3478?transport=udp,turns:t.example:443?transport=tcp",
            "SFU_TURN_SECRET": "x",
        },
    )
    assert ok.turn_urls == ("turn:t.example:3478?transport=udp", "turns:t.example:443?transport=tcp")
    servers = turn.ice_servers_for(ok, "alice", now_s=1000)
    assert servers[-1]["username"] == f"{1000 + ok.turn_ttl_s}:alice"


def test_every_option_is_documented_with_its_default():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for name, env, default, meaning in option_docs():
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{name}` ")), None)
        assert row is not None, f"{name} is not in docs/configuration.md"
        assert f"`{env}`" in row and default in row, (name, default, row)
        assert meaning, f"{name} has no doc string"


def test_example_config_file_in_the_docs_is_valid(tmp_path):
    doc = (ROOT / "docs" / "configuration.md").read_text()
    example = re.search(r"```toml\n(.*?)```", doc, re.S).group(1)
    path = write(tmp_path, example)
    parsed = from_file(path)
    assert parsed.tls_cert_file == Path("/etc/letsencrypt/live/sfu.example.com/fullchain.pem")
    # The certificate files do not exist here; everything else validates as written.
    config = replace(parsed, tls_cert_file=None, tls_key_file=None).validate()
    assert config.auth_enabled and len(config.turn_urls) == 3 and config.ice_port_max == 40999


def test_token_command_mints_what_the_server_verifies(capsys, monkeypatch):
    monkeypatch.setenv("SFU_AUTH_SECRET", SECRET)
    assert (
        main(["token", "--room", "standup", "--identity", "alice", "--grants", "publish,subscribe", "--ttl", "60"]) == 0
    )
    claims = auth.verify(SECRET, capsys.readouterr().out.strip())
    assert (claims.identity, claims.room, claims.grants) == ("alice", "standup", {"publish", "subscribe"})
    assert main(["token", "--room", "r", "--identity", "a", "--grants", "root"]) == 2
    assert "unknown grant" in capsys.readouterr().err
    assert main(["token", "--room", "r", "--identity", "a", "--url", "https://sfu.example.com"]) == 0
    assert capsys.readouterr().out.startswith("https://sfu.example.com/?room=r&token=")


def test_server_refuses_to_start_with_a_clear_message():
    result = subprocess.run(
        [sys.executable, "-m", "sfu", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "allow_open_rooms" in result.stderr


def test_data_channel_limits_are_checked():
    assert Config(max_data_message_bytes=1024, data_messages_per_s=5, data_message_burst=1).validate()
    for options, message in [
        ({"max_data_message_bytes": 10}, "max_data_message_bytes"),
        ({"max_data_message_bytes": 300_000}, "max_data_message_bytes"),
        ({"data_messages_per_s": 0}, "data_messages_per_s"),
        ({"data_message_burst": 0}, "data_message_burst"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Config(**options).validate()
    env = load(environ={"SFU_MAX_DATA_MESSAGE_BYTES": "2048", "SFU_DATA_MESSAGES_PER_S": "7.5"})
    assert (env.max_data_message_bytes, env.data_messages_per_s) == (2048, 7.5)

"""Option values checked once, wherever they come from; secrets kept out of sight;
subcommands find what the agent uses (issue 15, items 17, 18, 20)."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from click.testing import CliRunner

import aircrew.backend
from aircrew import cli
from controltower.cli import main as controltower
from wire.proof import generate_private_key


AGENT_BAD = [
    ('zone = "bad zone"', "zone", "zone name"),
    ('request-ip = "10.999.0.1"', "request-ip", "not an IP address"),
    ('child-prefix = ["nonsense"]', "child-prefix", "10.140.0.0/20"),
    ('child-prefix = ["0.0.0.0/0"]', "child-prefix", "'this network'"),
    ('local-endpoint-ip = "not-an-ip"', "local-endpoint-ip", "not an IP address"),
    ('local-endpoint-ip = "224.0.0.1"', "local-endpoint-ip", "multicast"),
    ('heartbeat-interval = nan', "heartbeat-interval", "not a finite number"),
    ("listen-port = true", "listen-port", "must not be true or false"),
    ("controller = {a = 1}", "controller", "not a table"),
    ('controller = "http://x"', "controller", "scheme"),
    ('stun-server = ["host:99999"]', "stun-server", "port must be 1-65535"),
    ('interface = "../x"', "interface", "interface name"),
    ('public-key = "abc"', "public-key", "WireGuard key"),
    ('zone = ""', "zone", "zone name"),
    ('metrics-listen = "nope"', "metrics-listen", "not an IP address"),
    ('join-key = "ajk1:default:0123456789ab:short"', "join-key", "malformed"),
    ('name = "Not A Name"', "name", "a-z, 0-9"),
    ('dns-suffix = "x 1.2.3.4 bank.example"', "dns-suffix", "not a DNS suffix"),
]


@pytest.mark.parametrize("line, key, words", AGENT_BAD)
def test_config_check_finds_what_the_agent_would_refuse(tmp_path, line, key, words):
    path = tmp_path / "agent.toml"
    path.write_text(f'controller = "tower"\n{line}\n' if not line.startswith("controller")
                    else f"{line}\n")
    result = CliRunner().invoke(cli.main, ["config", "check", str(path)])
    assert result.exit_code == 1, result.output
    expected_line = 1 if line.startswith("controller") else 2
    assert f"line {expected_line}: {key}:" in result.output and words in result.output


@pytest.mark.parametrize("line, key, words", [b for b in AGENT_BAD
                                               if not b[0].startswith(("controller", "listen"))
                                               and "[" not in b[0] and '""' not in b[0]])
def test_a_variable_is_checked_as_the_file_is(line, key, words, captured):
    value = line.split("=", 1)[1].strip().strip('"')
    variable = "AIRCREW_" + key.upper().replace("-", "_")
    result = CliRunner().invoke(cli.main, ["--controller", "tower"], env={variable: value})
    assert result.exit_code == 2 and words in result.output, result.output


def test_cross_option_problems_and_sections(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text(f'controller = "t"\nprivate-key = "{generate_private_key()}"\n'
                    'private-key-file = "/etc/wireguard/private.key"\n')
    path.chmod(0o600)
    result = CliRunner().invoke(cli.main, ["config", "check", str(path)])
    assert result.exit_code == 1 and "not both" in result.output
    path.write_text('controller = "t"\njoin-key-file = "/etc/aircrew/join-key"\n'
                    'join-key = "ajk1:default:0123456789ab:' + "s" * 32 + '"\n')
    result = CliRunner().invoke(cli.main, ["config", "check", str(path)])
    assert result.exit_code == 1 and "give --join-key or --join-key-file, not both" in result.output
    path.write_text('controller = "t"\n\n[section]\na = 1\n')
    result = CliRunner().invoke(cli.main, ["config", "check", str(path)])
    assert result.exit_code == 1 and "line 3: unknown section 'section'" in result.output


@pytest.mark.parametrize("line, words", [
    ('listen = "foo"', "not an IP address"),
    ("offline-after = nan", "not a finite number"),
    ("agent-acl = false", "--no-agent-acl needs --redis-url"),
    ("port = 6379", "must be different TCP ports"),
])
def test_tower_config_check(tmp_path, line, words):
    path = tmp_path / "tower.toml"
    path.write_text(line + "\n")
    result = CliRunner().invoke(controltower, ["config", "check", str(path)])
    assert result.exit_code == 1 and words in result.output, result.output


# -- item 17: secrets ------------------------------------------------------------------------

def test_a_readable_config_file_holding_a_secret(tmp_path, captured):
    path = tmp_path / "agent.toml"
    path.write_text('controller = "tower"\ncontroller-password = "s3cret-zone-password"\n')
    path.chmod(0o644)
    result = CliRunner().invoke(cli.main, ["config", "check", str(path)])
    assert result.exit_code == 1 and "other users may read it: chmod 600" in result.output
    result = CliRunner().invoke(cli.main, ["--config", str(path)])
    assert result.exit_code == 0 and "chmod 600" in result.output
    assert "s3cret" not in result.output
    path.chmod(0o600)
    result = CliRunner().invoke(cli.main, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output


def test_a_secret_flag_is_warned_about(captured, caplog):
    caplog.set_level(logging.WARNING)
    CliRunner().invoke(cli.main, ["--controller", "tower", "--controller-password", "s3cret-x"])
    assert "given on the command line, which every user sees in ps" in caplog.text
    assert "s3cret-x" not in caplog.text


def test_a_secret_in_the_parents_command_line_is_warned_about(tmp_path):
    """`sudo AIRCREW_CONTROLLER_PASSWORD=... aircrew` leaves it in sudo's argv."""
    key = tmp_path / "key"
    key.write_text(generate_private_key() + "\n")
    key.chmod(0o600)
    secret = "parent-visible-secret-123"
    launcher = ("import os, subprocess, sys; env = dict(os.environ, "
                "AIRCREW_CONTROLLER_PASSWORD=sys.argv[1]); "
                "proc = subprocess.Popen(sys.argv[2:], env=env); "
                "__import__('time').sleep(4); proc.terminate(); proc.wait()")
    argv = [sys.executable, "-c", launcher, secret, sys.executable, "-m", "aircrew",
            "--controller", "127.0.0.1:1", "--private-key-file", str(key),
            "--local-endpoint-ip", "192.0.2.9", "--state-dir", str(tmp_path / "state"),
            "--interface", "wgparent"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert "parent process" in result.stderr and secret not in result.stderr


def test_a_password_file_is_read_and_checked(tmp_path):
    from aircrew import config
    from wire.errors import InvalidInput
    path = tmp_path / "secret"
    path.write_text("zone-secret-from-file\n")
    path.chmod(0o600)
    assert config.read_password(None, path, False) == "zone-secret-from-file"
    path.chmod(0o644)
    with pytest.raises(InvalidInput, match="readable by other users"):
        config.read_password(None, path, False)
    path.write_text("")
    path.chmod(0o600)
    with pytest.raises(InvalidInput, match="is empty"):
        config.read_password(None, path, False)


# -- item 20: subcommands find the agent's interface and state -----------------------------

class FakeDevice:
    opened: list[str] = []

    def __init__(self, name: str) -> None:
        FakeDevice.opened.append(name)

    def exists(self) -> bool:
        return False


@pytest.fixture
def fake_device(monkeypatch):
    FakeDevice.opened = []
    monkeypatch.setattr(aircrew.backend, "open_device", FakeDevice)
    return FakeDevice.opened


def test_status_and_down_read_the_agents_variables(tmp_path, fake_device, monkeypatch):
    monkeypatch.setattr("aircrew.routes.LinkConfig", lambda name: None)
    env = {"AIRCREW_INTERFACE": "wg9", "AIRCREW_STATE_DIR": str(tmp_path)}
    result = CliRunner().invoke(cli.main, ["status"], env=env)
    assert "interface wg9 does not exist" in result.output
    result = CliRunner().invoke(cli.main, ["down"], env=env)
    assert result.exit_code == 0 and f"state files of wg9 in {tmp_path}" in result.output
    assert fake_device == ["wg9", "wg9"]


def test_status_reads_the_config_file(tmp_path, fake_device):
    path = tmp_path / "agent.toml"
    path.write_text(f'interface = "wg7"\nstate-dir = "{tmp_path}"\n')
    result = CliRunner().invoke(cli.main, ["--config", str(path), "status"])
    assert "interface wg7 does not exist" in result.output and fake_device == ["wg7"]


def test_admin_commands_find_the_token_of_another_data_dir(tmp_path):
    from controltower import admin
    (tmp_path / "admin-token").write_text("token-of-this-data-dir\n")
    client = admin.make_client("http://127.0.0.1:1", None, None, None, None, None, 1.0, tmp_path)
    assert client.token == "token-of-this-data-dir"


def test_a_join_key_file_is_read_like_the_key_file(tmp_path):
    from aircrew import config
    from wire.errors import InvalidInput
    key = "ajk1:default:0123456789ab:" + "s" * 32
    path = tmp_path / "join-key"
    path.write_text(key + "\n")
    path.chmod(0o644)
    with pytest.raises(InvalidInput, match="readable by other users"):
        config.read_join_key(None, path, False)
    path.chmod(0o600)
    assert config.read_join_key(None, path, False) == key
    path.write_text("ajk1:default:nothex:x\n")
    with pytest.raises(InvalidInput, match="malformed") as refused:
        config.read_join_key(None, path, False)
    assert "nothex" not in str(refused.value)         # a key is never repeated

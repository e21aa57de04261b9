"""The systemd units under deploy/systemd: valid, sandboxed, and running real commands.

`systemd-analyze verify` and `systemd-analyze security --offline` run where systemd is
installed (with ExecStart pointed at this virtualenv); the units are also parsed here and
their command lines checked against the real click commands and the example env files.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clicheck import envvars_of, parse_command

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
INSTALL_BIN = "/opt/apex-mesh/bin/"
INSTANCE = "wg1"
# unit -> (example env file, the command, capabilities it keeps)
EXPECTED = {
    "controltower.service": ("controltower.env.example", "controltower", set()),
    "controltower-relay.service": ("controltower-relay.env.example", "controltower", set()),
    "aircrew.service": ("aircrew.env.example", "aircrew", {"CAP_NET_ADMIN", "CAP_NET_RAW"}),
    "aircrew@.service": ("aircrew.env.example", "aircrew", {"CAP_NET_ADMIN", "CAP_NET_RAW"}),
}
SANDBOX = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
           "PrivateTmp": "yes", "ProtectKernelModules": "yes", "ProtectKernelTunables": "yes",
           "ProtectControlGroups": "yes", "RestrictNamespaces": "yes",
           "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
           "SystemCallArchitectures": "native"}
NOT_OPTIONS = {"WG_QUICK_USERSPACE_IMPLEMENTATION"}


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections -> (key, value) in order; keys may repeat, as systemd allows."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{path.name}:{number}: bad section header"
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path.name}:{number}: not KEY=VALUE"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"{key}= should appear once in [{section}], found {found}"
    return found[0]


def env_example(name: str, commented: bool = False) -> dict[str, str]:
    """Variables of an example env file; with commented, the commented-out ones too."""
    out = {}
    for line in (UNITS / name).read_text().splitlines():
        m = re.match(r"^(#?)([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if m and (commented or not m[1]):
            out[m[2]] = m[3]
    return out


def exec_start(unit: dict, instance: str = INSTANCE) -> list[str]:
    argv = shlex.split(one(unit, "Service", "ExecStart").replace("%i", instance))
    assert argv[0].startswith(INSTALL_BIN)
    return [argv[0].removeprefix(INSTALL_BIN), *argv[1:]]


def test_every_unit_is_expected():
    assert {p.name for p in UNITS.glob("*.service")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_unit_settings(name):
    unit = parse_unit(UNITS / name)
    assert set(unit) == {"Unit", "Service", "Install"}
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in one(unit, "Unit", "After")
    assert one(unit, "Service", "Restart") == "on-failure"
    for key, value in SANDBOX.items():
        assert one(unit, "Service", key) == value, key
    assert "@system-service" in values(unit, "Service", "SystemCallFilter")
    caps = set(one(unit, "Service", "CapabilityBoundingSet").split())
    assert caps == EXPECTED[name][2]
    assert set(one(unit, "Service", "AmbientCapabilities").split()) == caps
    env_files = values(unit, "Service", "EnvironmentFile")
    assert len(env_files) == 1 and env_files[0].lstrip("-").startswith("/etc/")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exec_start_is_a_real_command_with_the_example_settings(name, monkeypatch):
    unit = parse_unit(UNITS / name)
    example, command, _ = EXPECTED[name]
    env = {k: v for k, v in env_example(example).items() if k not in NOT_OPTIONS}
    argv = exec_start(unit)
    assert argv[0] == command
    ctx = parse_command(argv, env, monkeypatch)
    names = set(env_example(example, commented=True)) - NOT_OPTIONS
    assert names <= envvars_of(ctx.command, ctx), f"{example}: variables no option reads"
    for name_, value in env_example(example, commented=True).items():   # each one parses
        if name_ not in NOT_OPTIONS:
            parse_command(argv, {**env, name_: value}, monkeypatch)
    writable = " ".join(values(unit, "Service", "ReadWritePaths")).split()
    if name == "controltower-relay.service":
        assert argv[1] == "relay" and ctx.params["redis_url"] and ctx.params["region"]
        assert one(unit, "Service", "StateDirectory") == "controltower-relay"
        assert str(ctx.params["data_dir"]) == "/var/lib/controltower-relay"
        assert one(unit, "Service", "DynamicUser") == "yes"
    elif command == "controltower":
        assert ctx.params["redis_url"] is None          # commented out: the private Redis
        assert str(ctx.params["data_dir"]) in writable
        assert one(unit, "Service", "StateDirectory") == "controltower"
        assert one(unit, "Service", "User") == "controltower"
    else:
        assert str(ctx.params["state_dir"]) in writable and "/run/wireguard" in writable
        # the zone's names: /etc is read-only under ProtectSystem=strict
        assert ctx.params["hosts_file"] in [w.lstrip("-") for w in writable]
        assert ctx.params["interface"] == ("wg0" if name == "aircrew.service" else INSTANCE)
        assert ctx.params["controller"] and (ctx.params["join_key_file"]
                                             or ctx.params["controller_password"])
        assert str(ctx.params["private_key_file"]) == "/etc/wireguard/private.key"
        assert "/dev/net/tun rw" in values(unit, "Service", "DeviceAllow")
        assert one(unit, "Service", "KillMode") == "process"  # tunnels outlive the agent


def test_template_reads_one_env_file_per_interface():
    unit = parse_unit(UNITS / "aircrew@.service")
    assert one(unit, "Service", "EnvironmentFile") == "/etc/aircrew/%i.env"


# -- systemd's own checks --------------------------------------------------------------

def _installed_copies(tmp_path: Path) -> list[Path]:
    """The units with ExecStart pointing at this virtualenv; the template instantiated."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "controltower").exists() or not (bin_dir / "aircrew").exists():
        pytest.skip("the console scripts are not installed in this virtualenv")
    out = []
    for name in EXPECTED:
        text = (UNITS / name).read_text().replace(INSTALL_BIN, f"{bin_dir}/")
        target = tmp_path / name.replace("@.", f"@{INSTANCE}.")
        target.write_text(text)
        out.append(target)
    return out


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed; the checks above stand in")
    return path


def test_systemd_analyze_verify(tmp_path):
    tool = _systemd_analyze()
    units = _installed_copies(tmp_path)
    result = subprocess.run([tool, "verify", "--man=no", *map(str, units)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", output


def test_systemd_analyze_security_exposure(tmp_path):
    tool = _systemd_analyze()
    for unit in _installed_copies(tmp_path):
        result = subprocess.run([tool, "security", "--offline=yes", "--no-pager", str(unit)],
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
        if result.returncode != 0 and "offline" in result.stderr:
            pytest.skip("this systemd-analyze has no --offline")
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
        assert m, result.stdout[-500:] + result.stderr
        assert float(m[1]) <= 3.0, f"{unit.name}: exposure {m[1]}\n{result.stdout}"

"""The Makefile's Debian step on a fresh machine (issue 15, item 15): when it installs
redis-server itself, Debian's service (which would hold the private Redis's port 6379) is
stopped and disabled; a redis-server installed before is left alone. Real make, stub
package tools."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.makecheck import make_variable

ROOT = Path(__file__).resolve().parents[2]
STUBS = {
    "dpkg-query": 'case " $MISSING " in *" $3 "*) exit 1;; esac; echo "install ok installed"',
    "apt-get": 'echo "apt-get $*" >> "$CALLS"',
    "systemctl": 'echo "systemctl $*" >> "$CALLS"',
    "service": 'echo "service $*" >> "$CALLS"',
    "update-rc.d": 'echo "update-rc.d $*" >> "$CALLS"',
}


@pytest.fixture
def fresh(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in STUBS.items():
        (stubs / name).write_text(f"#!/bin/sh\n{body}\n")
        (stubs / name).chmod(0o755)
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copy(ROOT / "Makefile", work / "Makefile")

    def run(missing: str, systemd: bool, target: str = ".stamp-apt") -> list[str]:
        calls = tmp_path / "calls"
        calls.unlink(missing_ok=True)
        (work / target).unlink(missing_ok=True)
        run_dir = tmp_path / "systemd"
        shutil.rmtree(run_dir, ignore_errors=True)
        if systemd:
            run_dir.mkdir()
        env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "MISSING": missing,
               "CALLS": str(calls)}
        subprocess.run(["make", "-s", target, f"SYSTEMD_RUN_DIR={run_dir}"], cwd=work,
                       env=env, check=True, capture_output=True, text=True, timeout=60)
        return calls.read_text().splitlines() if calls.exists() else []
    return run


def test_a_redis_server_it_installs_does_not_keep_6379(fresh):
    calls = fresh("redis-server coturn", systemd=True)
    assert any("install" in c and "redis-server" in c for c in calls)
    assert "systemctl disable --now redis-server" in calls


def test_without_systemd_the_init_script_is_stopped(fresh):
    calls = fresh("redis-server", systemd=False)
    assert "service redis-server stop" in calls and "update-rc.d redis-server disable" in calls


def test_a_redis_server_installed_before_is_left_alone(fresh):
    calls = fresh("coturn", systemd=True)
    assert not any("redis-server" in c for c in calls)
    assert fresh("", systemd=True) == []


def test_a_tower_host_gets_the_towers_packages_only(fresh):
    everything, tower = make_variable("APT_PACKAGES"), make_variable("TOWER_PACKAGES")
    installs = [c for c in fresh(" ".join(everything), systemd=True, target=".stamp-apt-tower")
                if c.startswith("apt-get") and " install " in c]
    assert len(installs) == 1 and set(installs[0].split()) & set(everything) == set(tower)
    assert {"redis-server", "python3-venv", "wireguard-go"} <= set(tower)
    assert not {"chromium", "coturn", "iperf3"} & set(tower)
    assert set(tower) < set(everything)

"""``python -m bench agent-footprint`` at a small size: a real aircrew, a real wireguard-go.

The figures at this size are not the benchmark's; the point is that the scenario runs
end to end (namespace, veth, Redis, tower, agent) and reports every key, and that it
removes what it started even when it fails. Its pure parts: tests/unit/test_footprint.py.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import netns

ROOT = Path(__file__).resolve().parents[2]


def bench(*argv: str, timeout: float = 60) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "bench", "agent-footprint", *argv, "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    return proc.returncode, json.loads(lines[-1])


def footprint_namespaces() -> set[str]:
    """The namespaces of standalone "fp" hosts (the scenario's) on this machine."""
    return {ns for ns in netns.names() if ns.startswith("tb") and ns.endswith("-fp")}


needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed")


@needs_redis
def test_agent_footprint_small_zone():
    before = footprint_namespaces()
    status, result = bench("--peers", "20", "--duration", "3")
    assert status == 0, result
    assert set(result) >= {"peers", "rss_mb", "idle_cpu_pct", "wireguard_go_rss_mb",
                           "peers_on_device", "targets"}
    assert result["peers"] == 20 and result["peers_on_device"] == 20
    assert result["device_changes_while_watched"] == 0      # idle: nothing to apply
    assert 10 < result["rss_mb"] < 500 and result["rss_peak_mb"] >= result["rss_mb"]
    assert 0 <= result["idle_cpu_pct"] < 100
    assert result["wakeups_per_s"] > 0 and result["threads"] >= 1
    assert result["wireguard_go_rss_mb"] > 0 and result["sync_s"] > 0
    assert set(result["targets"]) == {"rss_mb <= 40", "rss_decimal_mb <= 40", "idle_cpu_pct <= 1"}
    assert footprint_namespaces() == before


@needs_redis
def test_a_failed_run_says_why_and_cleans_up():
    before = footprint_namespaces()
    status, result = bench("--peers", "20", "--duration", "3", "--sync-timeout", "0")
    assert status == 2
    assert "did not hold 20 peers" in result["not_run"]
    assert "rss_mb" not in result
    assert footprint_namespaces() == before

"""``python -m bench agent-footprint`` at a small size: a real aircrew, a real wireguard-go.

The figures at this size are not the benchmark's; the point is that the scenario runs
end to end (namespace, veth, Redis, tower, agent) and reports every key, and that it
removes what it started even when it fails.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.footprint import ProcSample, parse_status, summarize
from tests import nshelp

ROOT = Path(__file__).resolve().parent.parent


def bench(*argv: str, timeout: float = 60) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "bench", "agent-footprint", *argv, "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    return proc.returncode, json.loads(lines[-1])


def footprint_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines()
            if line.startswith(nshelp.PREFIX) and line.split()[0].endswith("-fp")}


def test_parse_status_reads_the_numbers():
    text = "Name:\taircrew\nVmHWM:\t   41000 kB\nVmRSS:\t   39000 kB\nThreads:\t3\n"
    assert parse_status(text) == {"VmHWM": 41000, "VmRSS": 39000, "Threads": 3}


def test_summarize_takes_the_largest_rss_and_the_cpu_of_the_window():
    first = ProcSample(rss_kb=30000, anon_kb=20000, file_kb=10000, hwm_kb=31000, cpu_s=1.0,
                       threads=3, switches=100)
    later = [ProcSample(rss_kb=kb, anon_kb=kb - 10000, file_kb=10000, hwm_kb=42000,
                        cpu_s=cpu, threads=3, switches=switches)
             for kb, cpu, switches in ((40960, 1.1, 110), (35840, 1.2, 120))]
    out = summarize(first, later, wall_s=20.0)
    assert out["rss_mb"] == 40.0 and out["rss_kb"] == 40960 and out["rss_decimal_mb"] == 41.9
    assert out["idle_cpu_pct"] == pytest.approx(1.0)     # 0.2 s of CPU in 20 s
    assert out["wakeups_per_s"] == 1.0 and out["rss_peak_mb"] == 41.0


def needs_hosts(test):
    for mark in (pytest.mark.netns,
                 pytest.mark.skipif(nshelp.available() is not None,
                                    reason=f"hosts: {nshelp.available()}"),
                 pytest.mark.skipif(shutil.which("redis-server") is None,
                                    reason="redis-server is not installed")):
        test = mark(test)
    return test


@needs_hosts
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


@needs_hosts
def test_a_failed_run_says_why_and_cleans_up():
    before = footprint_namespaces()
    status, result = bench("--peers", "20", "--duration", "3", "--sync-timeout", "0")
    assert status == 2
    assert "did not hold 20 peers" in result["not_run"]
    assert "rss_mb" not in result
    assert footprint_namespaces() == before

"""The benchmark harness runs end to end at small sizes and prints well-formed JSON.

Figures at these sizes mean little; the point is that every scenario still works
(real Redis, real `controltower serve`, simulated agents) and reports every key.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed")


def bench(*argv: str, timeout: float = 50) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bench", *argv, "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    return json.loads(last)


def test_join():
    result = bench("join", "--agents", "20", "--joins", "5", "--interval", "0.1",
                   "--spread", "0.5")
    assert set(result) >= {"agents", "p50_ms", "p99_ms", "bytes_per_agent"}
    assert result["agents"] == 20 and result["incomplete_joins"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] < 5000
    # One upsert per join, whatever the zone size: a few hundred bytes.
    assert 100 < result["bytes_per_agent"] <= 1024
    assert result["agent_errors"] == 0 and result["agent_warnings"] == 0
    # The agents registered again with the session of their pre-registered record: the
    # tower changed nothing and published nothing while they started.
    assert result["setup_updates"] == 0 and result["resyncs"] == 0
    assert result["agent_full_reconcile_ms"] > 0


@pytest.mark.parametrize("argv", [["--mode", "full-list"], ["--state", "rev-only"]],
                         ids=["full-list", "rev-only"])
def test_join_variants(argv):
    result = bench("join", "--agents", "10", "--joins", "3", "--interval", "0.1",
                   "--spread", "0.2", *argv)
    assert result["incomplete_joins"] == 0 and result["agent_errors"] == 0
    assert result["setup_updates"] == 0 and result["check_resyncs"] == 0
    if argv[0] == "--mode":
        # Every agent gets the whole list of 11-13 peers, and takes each as a snapshot.
        assert result["bytes_per_agent"] > 5 * result["delta_bytes_per_join"]
        assert result["resyncs"] >= 10 * 3
    else:
        assert result["resyncs"] == 0


def test_storm():
    result = bench("storm", "--nodes", "100", "--observers", "10", "--timeout", "30",
                   "--spread", "0.5")
    assert set(result) >= {"nodes", "registrations_per_s", "converged_s", "duplicates",
                           "unanswered"}
    assert result["nodes"] == 100
    assert result["duplicates"] == 0 and result["unanswered"] == 0 and result["refused"] == 0
    assert result["registrations_per_s"] > 0
    assert result["converged_s"] is not None and result["converged_observers"] == 10
    assert result["observers_with_wrong_peers"] == 0
    assert result["observer_errors"] == 0 and result["observer_resyncs"] == 0


def test_storm_on_a_cluster_and_a_single_redis():
    result = bench("storm", "--redis", "cluster", "--nodes", "60", "--zones", "6",
                   "--observers-per-zone", "2", "--timeout", "30", timeout=150)
    assert result["unanswered"] == 0
    assert result["single_registrations_per_s"] > 0 and result["cluster_registrations_per_s"] > 0
    shards = result["cluster"]["shards"]
    assert len(shards) == 3 and sum(s["registrations"] for s in shards) == 60
    assert sum(s["publish_calls"] for s in shards) >= 60          # a reply each, at least
    # a shard publish reaches the shard's replica only; a classic one every other node
    assert result["bus_messages_per_spublish"] <= 1.1
    assert result["bus_messages_per_classic_publish"] >= 4.9


def test_api():
    result = bench("api", "--peers", "50", "--duration", "2", "--warmup", "0.5")
    assert set(result) >= {"rps", "p99_ms"}
    assert result["errors"] == 0 and result["rps"] > 0 and result["p99_ms"] > 0


@pytest.mark.slow
def test_dashboard():
    from testbed import browser
    if browser.missing():
        pytest.skip(browser.missing())
    result = bench("dashboard", "--nodes", "60", "--rounds", "2", "--polls", "10", timeout=120)
    assert set(result) >= {"load_ms_p50", "html_bytes", "poll_304_ms_p50", "poll_200_bytes"}
    assert result["nodes"] == 60 and result["svg_elements"] > 0
    assert 0 < result["load_ms_p50"] and result["html_bytes"] > 10_000


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
def test_policy():
    result = bench("policy", "--nodes", "100,300", "--observers", "10", "--changes", "4",
                   "--nft-members", "100", timeout=120)
    for n in (100, 300):
        assert result[f"membership_elements_{n}"] == [1]      # one element per change
        assert result[f"firewall_states_{n}"] == ["applied"]
        assert 0 < result[f"membership_ms_p99_{n}"] and 0 < result[f"policy_ms_p99_{n}"]
    assert 0 < result["bytes_per_agent_membership"] < 1000   # one record, not the zone
    assert result["nft_change_ms_p50"] > 0 and result["nft_reload_ms_p50"] > 0


def test_redis_cost():
    result = bench("redis-cost", "--nodes", "60", "--zones", "10", "--heartbeats", "2",
                   timeout=120)
    assert result["node_users_made"] == 60 and result["zone_users_made"] == 10
    # every request left its replay guard (register + 2 heartbeats per node), none expired
    assert result["replay_guards_alive_after_heartbeats"] == 60 * 3
    per_node = result["key_bytes_per_node"]
    assert 150 < per_node["peers"] < 1500 and per_node["seen"] > 0 and per_node["leases"] > 0
    assert result["acl_user_bytes"] > 0 and result["zone_bytes"] > 0
    assert 200 < result["heartbeat_request_bytes"] < result["register_request_bytes"] < 2000
    assert result["redis_cpu_us_per_heartbeat"] > 0 and result["tower_cpu_us_per_heartbeat"] > 0
    assert result["sweep_client_us_per_zone"] > 0


def test_join_refuses_a_full_state_it_cannot_set_up_at_once():
    """The estimate runs first (seconds); no stack, no simulators, the reason and figures."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "bench", "join", "--agents", "3000",
                           "--setup-limit", "0.01", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "whole-zone passes" in result["not_run"] and "--setup-limit" in result["not_run"]
    assert result["estimate_pass_ms"] > 0 and result["estimate_bytes_per_agent"] > 0
    assert time.monotonic() - started < 60

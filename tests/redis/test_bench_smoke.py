"""The benchmark harness runs end to end at small sizes and prints well-formed JSON.

Figures at these sizes mean little; the point is that every scenario still works
(real Redis, real `controltower serve`, simulated agents) and reports every key.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed")


def bench(*argv: str, timeout: float = 50) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bench", *argv, "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    return json.loads(last)


def test_join():
    result = bench("join", "--agents", "20", "--joins", "5", "--interval", "0.1")
    assert set(result) >= {"agents", "p50_ms", "p99_ms", "bytes_per_agent"}
    assert result["agents"] == 20 and result["incomplete_joins"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] < 5000
    # One upsert per join, whatever the zone size: a few hundred bytes.
    assert 100 < result["bytes_per_agent"] <= 1024
    assert result["agent_errors"] == 0


def test_storm():
    result = bench("storm", "--nodes", "100", "--observers", "10", "--timeout", "30")
    assert set(result) >= {"nodes", "registrations_per_s", "converged_s", "duplicates",
                           "unanswered"}
    assert result["nodes"] == 100
    assert result["duplicates"] == 0 and result["unanswered"] == 0 and result["refused"] == 0
    assert result["registrations_per_s"] > 0
    assert result["converged_s"] is not None and result["converged_observers"] == 10
    assert result["observers_with_wrong_peers"] == 0


def test_api():
    result = bench("api", "--peers", "50", "--duration", "2", "--warmup", "0.5")
    assert set(result) >= {"rps", "p99_ms"}
    assert result["errors"] == 0 and result["rps"] > 0 and result["p99_ms"] > 0


def _peer(n: int):
    from wire.messages import Peer
    from wire.proof import encode_key
    return Peer(key=encode_key(n.to_bytes(32, "big")), address=f"10.64.0.{n}",
                endpoint=f"192.0.2.{n}:51820", session="s")


def test_simulated_agent_counts_what_it_applied_by_delta_or_resync():
    """A simulated agent reports a peer as applied once, however it learned of it."""
    from aircrew.session import ZoneSnapshot
    from bench.simagent import BenchSession, ProcessShared, SimAgent
    from wire.messages import Change, ZoneUpdate
    from wire.proof import generate_private_key

    for keep in (True, False):
        shared = ProcessShared()
        session = BenchSession(None, "bench", generate_private_key(), shared=shared)
        agent = SimAgent(session, {"listen_port": 51820}, full_list=False, keep_peers=keep,
                         heartbeat=0)
        a, b, c, d = (_peer(n) for n in (1, 2, 3, 4))
        start = ZoneSnapshot("10.64.0.0/16", 2, {a.key: a, b.key: b})
        shared.initial = start.peers
        assert agent.load(start)
        assert len(agent.device.state.peers) == (2 if keep else 0)
        assert agent._apply_batch([ZoneUpdate("bench", 2, 3, (Change(3, "upsert", peer=c),))])
        assert agent.device.state.peers.keys() >= {c.key}
        # A gap: the agent resyncs from a snapshot that also holds d.
        assert not agent._apply_batch([ZoneUpdate("bench", 4, 5, (Change(5, "upsert", peer=d),))])
        assert agent.load(ZoneSnapshot("10.64.0.0/16", 5, {p.key: p for p in (a, b, c, d)}))
        assert shared.applied[c.key][0] == 1 and shared.applied[d.key][0] == 1
        assert a.key not in shared.applied
        assert agent.device.state.peers.keys() >= {c.key, d.key}

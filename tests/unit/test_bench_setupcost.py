"""bench.setupcost: join --state full is estimated before it starts, and a size this
machine cannot set up in time (or in memory) is refused at once, saying why."""
from __future__ import annotations

import pytest

from bench import setupcost
from bench.setupcost import SetupEstimate


def test_the_estimate_measures_the_real_agents_pass_and_memory():
    small, large = setupcost.estimate(200, sample=6), setupcost.estimate(800, sample=6)
    assert small.pass_ms > 0 and large.pass_ms > 0
    # three dicts of N entries per agent: four times the zone, about four times the bytes
    assert 2.5 < large.bytes_per_agent / small.bytes_per_agent < 6
    assert 20 < large.bytes_per_agent / 800 < 400          # bytes per agent and peer
    assert large.cpu_s == pytest.approx(800 * large.pass_ms * setupcost.CROWD_FACTOR / 1000)


def test_a_set_up_over_the_limit_is_refused_with_the_figures():
    est = SetupEstimate(agents=10_000, sample=20, pass_ms=22.0, bytes_per_agent=620_000)
    # 10,000 x 22 ms x 3.5 = 770 s of CPU
    reason = setupcost.refusal(est, limit_s=600, cores=0.8, memory_gb=18.0)
    assert reason is not None
    assert "10,000 agents" in reason and "770 s of CPU" in reason and "22.0 ms" in reason
    assert "--state rev-only" in reason and "--setup-limit" in reason
    assert setupcost.refusal(est, limit_s=600, cores=2.0, memory_gb=18.0) is None


def test_a_set_up_over_the_memory_is_refused():
    est = SetupEstimate(agents=10_000, sample=20, pass_ms=1.0, bytes_per_agent=620_000)
    reason = setupcost.refusal(est, limit_s=600, cores=2.0, memory_gb=5.0)
    assert reason is not None and "6.2 GB" in reason and "5.0 GB available" in reason


def test_the_simulators_share_of_a_busy_machine():
    assert setupcost.cpu_share(2, 4, 0.0) == 2.0
    assert setupcost.cpu_share(2, 4, 6.0) == pytest.approx(0.8)
    assert setupcost.cpu_share(2, 1, 100.0) < 0.05

"""bench.join: a joining node that cannot reach Redis stops the scenario with the reason
(a JoinFailed, reported as not run), never a traceback."""
from __future__ import annotations

import argparse
import asyncio

import pytest

from bench.join import JoinFailed, _join_once, _not_run
from testbed.redisserver import free_port


def test_a_joining_node_that_cannot_connect_says_why():
    url = f"redis://127.0.0.1:{free_port()}/0"      # nothing listens there
    with pytest.raises(JoinFailed, match=r"join 3: the joining node could not subscribe"):
        asyncio.run(_join_once(url, "bench", 3))


def test_a_run_that_cannot_go_on_is_reported_with_what_the_agents_saw():
    args = argparse.Namespace(agents=10, mode="delta", joins=20, state="rev-only",
                              parse="shared", heartbeat=10.0, spread=None,
                              redis_fsync="always", publish_window=None)
    stats = [{"reconnects": 3, "resyncs": 4, "warnings": 5, "error_count": 0,
              "warning_samples": ["aircrew.agent: controller unreachable (Timeout)"]},
             {"reconnects": 1, "resyncs": 1, "warnings": 0, "error_count": 0,
              "warning_samples": []}]
    result = _not_run(args, "join 0: the joining node could not subscribe (TimeoutError)", stats)
    assert result["not_run"].startswith("join 0:")
    assert (result["reconnects"], result["resyncs"], result["agent_warnings"]) == (4, 5, 5)
    assert result["warning_samples"] == ["aircrew.agent: controller unreachable (Timeout)"]
    assert result["command"].startswith("python -m bench join --agents 10")

"""bench update-cost at a small size: every agent applies every update with one device
operation, writes its state files, and the CPU per update is reported."""
from __future__ import annotations

import argparse

from bench import updatecost


def test_every_agent_applies_every_update_once():
    args = argparse.Namespace(agents=20, updates=3, gap=0.6, state="rev-only")
    result = updatecost.run(args)
    assert "not_run" not in result, result
    assert result["device_ops"] == 20 * 3          # one new peer per update, one op each
    assert result["agent_errors"] == 0
    assert result["state_writes"] >= 20     # 1.8 s: each agent wrote its files (once a second)
    assert 0 < result["us_per_update"] <= result["us_per_update_total"]
    assert result["command"] == ("python -m bench update-cost --agents 20 --updates 3 "
                                 "--gap 0.6 --state rev-only")


def test_bad_sizes_are_refused_with_the_reason():
    result = updatecost.run(argparse.Namespace(agents=0, updates=3, gap=0.3, state="full"))
    assert "--agents" in result["not_run"]

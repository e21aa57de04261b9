"""``agent-footprint``: a real aircrew in a zone of 1,000 peers for 60 s (NOT BUILT YET).

It needs the real ``aircrew`` process on a real device (aircrew/uapi.py and
aircrew/backend.py, which now exist) in a namespace that can reach a tower and Redis
with the zone's agent credential. That wiring is not written yet: this scenario says so
and exits non-zero; it does not count as done.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from .report import Target
from .requirements import device_scenarios_missing

TARGETS = [Target("rss_mb", "<=", 40), Target("idle_cpu_pct", "<=", 1)]
HEADLINE = ["peers", "rss_mb", "idle_cpu_pct"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--peers", type=int, default=1000, help="peers in the agent's zone")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to watch the agent")


def run(args: argparse.Namespace) -> dict[str, Any]:
    missing = device_scenarios_missing() + [
        "the agent-footprint scenario itself is not implemented yet (a real aircrew in a "
        "namespace linked to the tower, sampling its RSS and CPU for 60 s)"]
    reason = "; ".join(missing)
    print(f"bench agent-footprint cannot run: {reason}", file=sys.stderr)
    return {"peers": args.peers, "not_run": reason, "command": "python -m bench agent-footprint"}

"""``reconcile``: a real wireguard-go device in a namespace holding N peers (not built yet).

Needs aircrew/uapi.py (UserspaceDevice with an ``upsert_peers`` batch) and
aircrew/backend.py. Until both exist and work, this scenario says what is missing and
exits non-zero; it does not count as done.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from .report import Target
from .requirements import device_scenarios_missing

TARGETS = [Target("one_change_ms", "<=", 20), Target("one_change_ops", "<=", 1),
           Target("initial_apply_ms", "<=", 2000)]
HEADLINE = ["peers", "one_change_ms", "one_change_ops", "initial_apply_ms"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--peers", type=int, default=1000, help="peers on the device")


def run(args: argparse.Namespace) -> dict[str, Any]:
    missing = device_scenarios_missing() or [
        "the reconcile scenario itself is not implemented yet (it waits for aircrew/backend.py)"]
    reason = "; ".join(missing)
    print(f"bench reconcile cannot run: {reason}", file=sys.stderr)
    return {"peers": args.peers, "not_run": reason, "command": f"python -m bench reconcile --peers {args.peers}"}

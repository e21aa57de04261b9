"""``python -m bench <scenario> [options]``; ``python -m bench all`` runs every scenario."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import ModuleType

from . import (api, dashboard, footprint, identity, join, policy, reconcile, redismemory,
               relay, storm, throughput, updatecost)
from .report import emit

SCENARIOS: dict[str, ModuleType] = {
    "join": join,
    "storm": storm,
    "api": api,
    "reconcile": reconcile,
    "agent-footprint": footprint,
    "throughput": throughput,
    "identity": identity,
    "relay": relay,
    "dashboard": dashboard,
    "update-cost": updatecost,
    "policy": policy,
    "redis-cost": redismemory,
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = top.add_subparsers(dest="scenario", required=True)
    for name, module in SCENARIOS.items():
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(p)
        p.add_argument("--json", action="store_true",
                       help="print the result as one JSON object on the last line")
        p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    p = sub.add_parser("all", help="every scenario at the issue's sizes (what `make bench` runs)")
    from . import runall
    runall.add_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return top


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)   # unwind: every stack and fleet cleans up


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.scenario == "all":
        from . import runall
        return runall.run(args)
    module = SCENARIOS[args.scenario]
    result = module.run(args)
    emit(f"bench {args.scenario}", result, as_json=args.json, headline=module.HEADLINE,
         targets=module.TARGETS)
    return 0 if not result.get("not_run") else 2


if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench all``: every scenario at the issue's sizes (what ``make bench`` runs).

Each run is its own ``python -m bench <scenario> ... --json`` subprocess (a fresh Redis,
tower and simulators each time; the command recorded is the one that ran). Writes
``bench/results/<scenario>.json`` ({"scenario", "environment", "runs": [...]}), the
join-latency plot ``bench/results/join_latency.png``, and the results table of
``docs/performance.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import doctable, plot

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "performance.md"

# (scenario, arguments, seconds allowed). The sizes; join also at 100 for the plot.
FULL: list[tuple[str, list[str], float]] = [
    ("join", ["--agents", "100"], 600),
    ("join", ["--agents", "1000"], 900),
    ("join", ["--agents", "100", "--mode", "full-list"], 600),
    ("join", ["--agents", "1000", "--mode", "full-list"], 1800),
    ("join", ["--agents", "10000", "--state", "rev-only", "--heartbeat", "0"], 2400),
    ("join", ["--agents", "10000", "--state", "rev-only"], 2400),
    ("storm", ["--nodes", "10000", "--observers", "1000"], 1800),
    ("api", ["--peers", "1000"], 300),
    ("reconcile", ["--peers", "1000"], 600),
    ("agent-footprint", [], 600),
    ("identity", ["--nodes", "10000", "--revoke", "200"], 900),
    ("dashboard", ["--nodes", "1000"], 300),
    ("policy", ["--nodes", "1000,10000"], 900),
    ("redis-cost", ["--nodes", "10000", "--zones", "1000"], 900),
    ("redis-cost", ["--nodes", "3000", "--zones", "1000", "--heartbeats", "10",
                    "--profile-tower"], 900),
]
QUICK: list[tuple[str, list[str], float]] = [
    ("join", ["--agents", "20", "--joins", "5"], 120),
    ("join", ["--agents", "100", "--joins", "5"], 120),
    ("join", ["--agents", "100", "--joins", "5", "--mode", "full-list"], 120),
    ("storm", ["--nodes", "300", "--observers", "30"], 180),
    ("api", ["--peers", "100", "--duration", "3"], 120),
    ("reconcile", ["--peers", "1000"], 600),
    ("agent-footprint", [], 600),
    ("identity", ["--nodes", "300", "--revoke", "20"], 180),
    ("dashboard", ["--nodes", "100", "--rounds", "2", "--polls", "20"], 120),
    ("policy", ["--nodes", "300", "--observers", "20", "--changes", "4"], 180),
    ("redis-cost", ["--nodes", "200", "--zones", "20", "--heartbeats", "1"], 180),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, to check the pipeline (figures not comparable)")
    parser.add_argument("--only", default="",
                        help="comma-separated scenarios to run (the others' results are kept)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--docs", type=Path, default=DOCS,
                        help="the Markdown file whose results table is refreshed")
    parser.add_argument("--no-docs", action="store_true", help="leave the docs alone")


def environment() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                   text=True).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpus": os.cpu_count(), "cpu": cpu,
            "python": platform.python_version(), "redis": redis_version,
            "load_before": os.getloadavg()[0]}


def run_one(scenario: str, argv: list[str], seconds: float) -> dict[str, Any]:
    """Run one scenario as a subprocess; its JSON line, or why there is none."""
    command = [sys.executable, "-m", "bench", scenario, *argv, "--json"]
    printable = " ".join(["python -m bench", scenario, *argv])
    print(f"\n>>> {printable}", flush=True)
    started = time.monotonic()
    load = round(os.getloadavg()[0], 2)     # the machine may be shared: say how busy it was
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        stdout, stderr = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.terminate()            # SIGTERM: the scenario stops its stack and simulators
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        print(stdout, end="")
        print(stderr[-3000:], end="", file=sys.stderr)
        return {"not_run": f"did not finish within {seconds:.0f} s", "command": printable}
    print(stdout, end="")
    if stderr.strip():
        print(stderr[-3000:], end="", file=sys.stderr)
    lines = stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        result = {"not_run": f"exit status {proc.returncode}: {tail}", "command": printable}
    result["command"] = printable
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["load_before"] = load
    if proc.returncode != 0:
        result.setdefault("not_run", f"exit status {proc.returncode}")
    return result


def run(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    if args.quick and args.results == RESULTS:   # quick figures never replace real ones
        args.results = Path(tempfile.mkdtemp(prefix="bench-quick-"))
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if only:
        plan = [step for step in plan if step[0] in only]
    env = environment()
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for scenario, argv, seconds in plan:
        by_scenario.setdefault(scenario, []).append(run_one(scenario, argv, seconds))
    args.results.mkdir(parents=True, exist_ok=True)
    for scenario, runs in by_scenario.items():
        path = args.results / f"{scenario}.json"
        path.write_text(json.dumps({"scenario": scenario, "environment": env, "runs": runs},
                                   indent=2) + "\n")
        print(f"wrote {path}")
    results = doctable.load_results(args.results)
    if "join" in by_scenario:
        message = plot.join_latency(results.get("join", []), args.results / "join_latency.png")
        print(message)
    if not args.no_docs and not args.quick:
        doctable.refresh(args.docs, results, env)
        print(f"refreshed the results table in {args.docs}")
    failed = [r["command"] for runs in by_scenario.values() for r in runs if r.get("not_run")]
    if failed:
        print("\nnot run:\n  " + "\n  ".join(failed), file=sys.stderr)
    return 1 if failed else 0

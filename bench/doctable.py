"""The results table of docs/performance.md, rebuilt from bench/results/*.json.

Only the text between the two marker comments is replaced; the rest of the file (the
method, the analysis) is written by hand.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

START = "<!-- bench:results:start (written by `python -m bench all`; edit outside) -->"
END = "<!-- bench:results:end -->"


def load_results(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """{scenario: runs} from every results file in ``directory``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("runs"), list):
            out[str(data.get("scenario", path.stem))] = data["runs"]
    return out


def _n(value: Any, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, float)):
        text = f"{value:,.{digits}f}"
    else:
        text = str(value)
    return f"{text}{unit}"


def _verdict(run: dict[str, Any]) -> str:
    if run.get("not_run"):
        return "not run"
    targets = run.get("targets") or {}
    if not targets:
        return "(no target)"
    missed = [t for t, met in targets.items() if not met]
    return "met" if not missed else "MISSED: " + ", ".join(missed)


def _row(scenario: str, run: dict[str, Any]) -> tuple[str, str]:
    """(what, figures) of one run."""
    if run.get("not_run"):
        return scenario, f"not run: {run['not_run']}"
    if scenario == "join":
        what = f"join, {_n(run.get('agents'))} agents, {run.get('mode', 'delta')}"
        if run.get("state") == "rev-only":
            what += " (rev-only state)"
        if run.get("heartbeat_s") == 0:
            what += ", no heartbeats"
        figures = (f"p50 {_n(run.get('p50_ms'), ' ms', 1)}, p99 {_n(run.get('p99_ms'), ' ms', 1)}, "
                   f"{_n(run.get('bytes_per_agent'), ' B')}/agent/join")
        if "bytes_ratio" in run:
            figures += f", {_n(run['bytes_ratio'], 'x', 0)} the delta bytes"
        if run.get("agent_full_reconcile_ms") is not None:
            figures += f"; the agent's whole-zone pass (start, resync, drift check) {_n(run['agent_full_reconcile_ms'], ' ms', 1)}"
        return what, figures
    if scenario == "storm":
        what = f"storm, {_n(run.get('nodes'))} nodes / {_n(run.get('observers'))} observers"
        figures = (f"{_n(run.get('registrations_per_s'), ' reg/s')}, converged "
                   f"{_n(run.get('converged_s'), ' s', 1)}, {run.get('duplicates')} duplicates, "
                   f"{run.get('unanswered')} unanswered")
        if run.get("published_s") is not None:
            figures += f"; all published after {_n(run['published_s'], ' s', 1)}"
        return what, figures
    if scenario == "api":
        what = f"api, GET /peers, {_n(run.get('peers'))} peers"
        return what, f"{_n(run.get('rps'), ' req/s')}, p99 {_n(run.get('p99_ms'), ' ms', 1)}"
    if scenario == "reconcile":
        return (f"reconcile, {_n(run.get('peers'))} peers",
                f"one change {_n(run.get('one_change_ms'), ' ms', 1)} "
                f"({run.get('one_change_ops')} ops), initial {_n(run.get('initial_apply_ms'), ' ms')}")
    if scenario == "agent-footprint":
        return ("agent footprint", f"{_n(run.get('rss_mb'), ' MiB', 1)} RSS "
                                   f"({_n(run.get('rss_decimal_mb'), ' MB', 1)}), "
                                   f"{_n(run.get('idle_cpu_pct'), ' % CPU', 2)}")
    if scenario == "identity":
        return (f"identity, {_n(run.get('nodes'))} nodes enrolled",
                f"{_n(run.get('enroll_per_s'), ' enrollments/s')} ({_n(run.get('enroll_s'), ' s', 1)}), "
                f"{_n(run.get('redis_bytes_per_node'), ' B')} of Redis per node; revocation to "
                f"effect p50 {_n(run.get('revoke_ms_p50'), ' ms', 1)}, p99 "
                f"{_n(run.get('revoke_ms_p99'), ' ms', 1)} ({run.get('revoked')} nodes)")
    if scenario == "dashboard":
        return (f"dashboard, zone of {_n(run.get('nodes'))} nodes in headless Chromium",
                f"load p50 {_n(run.get('load_ms_p50'), ' ms', 1)} (server "
                f"{_n(run.get('server_ms_p50'), ' ms', 1)}), first load "
                f"{_n(run.get('first_load_ms'), ' ms', 1)}, {_n(run.get('html_bytes'))} B; "
                f"{run.get('small_nodes')} nodes {_n(run.get('small_load_ms_p50'), ' ms', 1)}; live poll 304 p50 "
                f"{_n(run.get('poll_304_ms_p50'), ' ms', 2)}")
    if scenario == "policy":
        sizes = run.get("sizes") or []
        figures = "; ".join(
            f"{_n(n)} nodes: membership p50/p99 {_n(run.get(f'membership_ms_p50_{n}'), '', 1)}"
            f"/{_n(run.get(f'membership_ms_p99_{n}'), ' ms', 1)}, policy p50/p99 "
            f"{_n(run.get(f'policy_ms_p50_{n}'), '', 1)}/{_n(run.get(f'policy_ms_p99_{n}'), ' ms', 1)}"
            for n in sizes)
        figures += (f"; {_n(run.get('bytes_per_agent_membership'), ' B')}/agent/membership "
                    f"change, {_n(run.get('bytes_per_agent_policy'), ' B')}/agent/policy change; "
                    f"nft at {_n(run.get('nft_members'))} members: one change "
                    f"{_n(run.get('nft_change_ms_p50'), ' ms', 2)}, full reload "
                    f"{_n(run.get('nft_reload_ms_p50'), ' ms', 1)}")
        return f"policy, {_n(run.get('observers'))} agents enforcing", figures
    if scenario == "redis-cost":
        return (f"Redis cost, {_n(run.get('nodes'))} nodes (docs/scaling.md)",
                f"{_n(run.get('node_bytes_total'))} B of Redis per heartbeating node "
                f"({_n(run.get('acl_user_bytes'))} B its ACL user), "
                f"{_n(run.get('zone_bytes'))} B per empty zone; Redis CPU "
                f"{_n(run.get('redis_cpu_us_per_registration'), ' us', 0)}/registration, "
                f"{_n(run.get('redis_cpu_us_per_heartbeat'), ' us', 0)}/heartbeat; tower CPU "
                f"{_n(run.get('tower_cpu_us_per_heartbeat'), ' us', 0)}/heartbeat")
    return scenario, json.dumps(run)[:80]


ORDER = ["join", "storm", "api", "reconcile", "agent-footprint", "identity", "dashboard",
         "policy", "redis-cost"]


def table(results: dict[str, list[dict[str, Any]]], env: dict[str, Any] | None = None) -> str:
    lines = []
    if env:
        lines.append(f"Measured {env.get('date', '')} on {env.get('cpus')} CPUs "
                     f"({env.get('cpu', 'unknown CPU')}), Python {env.get('python')}, "
                     f"{env.get('redis', '')}.")
        lines.append("")
    lines += ["| run | figures | targets | command |", "|---|---|---|---|"]
    for scenario in ORDER + sorted(set(results) - set(ORDER)):
        for run in results.get(scenario, []):
            what, figures = _row(scenario, run)
            lines.append(f"| {what} | {figures} | {_verdict(run)} | `{run.get('command', '')}` |")
    return "\n".join(lines)


def refresh(path: Path, results: dict[str, list[dict[str, Any]]],
            env: dict[str, Any] | None = None) -> None:
    """Replace the text between the markers (append a section when they are missing)."""
    text = path.read_text() if path.exists() else "# Performance\n"
    block = f"{START}\n{table(results, env)}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
    path.write_text(text)

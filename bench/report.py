"""Printing a scenario's result: a readable summary, then (``--json``) one JSON line.

The JSON object is always the LAST line printed, so ``tail -n 1`` gets it.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, TextIO


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty list."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Target:
    """One target of the issue: ``key`` compared with ``limit`` (``<=`` or ``>=``)."""
    key: str
    op: str
    limit: float
    applies: Callable[[dict[str, Any]], bool] = lambda result: True

    def met(self, result: dict[str, Any]) -> bool | None:
        value = result.get(self.key)
        if value is None or not self.applies(result):
            return None
        return value <= self.limit if self.op == "<=" else value >= self.limit

    def describe(self) -> str:
        return f"{self.key} {self.op} {self.limit:g}"


def check(result: dict[str, Any], targets: list[Target]) -> dict[str, bool]:
    """{target description: met} for the targets that apply to this result."""
    out = {}
    for target in targets:
        met = target.met(result)
        if met is not None:
            out[target.describe()] = met
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def emit(title: str, result: dict[str, Any], *, as_json: bool, headline: list[str],
         targets: list[Target] | None = None, out: TextIO = sys.stdout) -> None:
    """Print the summary; with ``as_json`` the JSON object goes on the last line."""
    verdicts = check(result, targets or [])
    if verdicts:
        result["targets"] = verdicts
    print(f"== {title}", file=out)
    for key in headline:
        if key in result:
            print(f"   {key:<24} {_fmt(result[key])}", file=out)
    extras = [k for k in result if k not in headline and k not in ("targets", "command")]
    for key in extras:
        value = result[key]
        if isinstance(value, (dict, list)):
            value = json.dumps(value, separators=(",", ":"))
            if len(value) > 100:
                value = value[:97] + "..."
        print(f"   {key:<24} {_fmt(value)}", file=out)
    for description, met in verdicts.items():
        print(f"   target {description:<30} {'met' if met else 'MISSED'}", file=out)
    if "command" in result:
        print(f"   command: {result['command']}", file=out)
    out.flush()
    if as_json:
        print(json.dumps(result, separators=(",", ":"), default=str), file=out)
        out.flush()

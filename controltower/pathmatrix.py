"""A zone's pair matrix from the path reports its nodes send on their heartbeats (pure).

Each node reports, per peer (by mesh address), its path (``d`` direct, ``r`` relayed,
``x`` down), the relay and the WireGuard handshake age. A pair's path is what both sides
say; ``mixed`` when they differ; one side's word when only one reported; ``unknown``
when neither did. A report older than ``stale`` seconds counts as none.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from wire.messages import Peer

CODES = {"d": "direct", "r": "relayed", "x": "down"}
PATHS = ("direct", "relayed", "down", "mixed", "unknown")


def parse_report(text: str | bytes | None) -> dict[str, Any]:
    try:
        report = json.loads(text) if text else {}
    except ValueError:
        return {}
    return report if isinstance(report, dict) else {}


def views(report: Mapping[str, Any], now: float, stale: float) -> dict[str, dict[str, Any]]:
    """peer address -> {Path, Relay, HandshakeAge, ReportAge} from one node's report."""
    try:
        age = now - float(report.get("ts", 0))
    except (TypeError, ValueError):
        return {}
    if age > stale:
        return {}
    relays = report.get("relays") or []
    out = {}
    for entry in report.get("paths") or []:
        if not isinstance(entry, list) or len(entry) != 4:
            continue
        address, code, index, handshake = entry
        relay = relays[index] if isinstance(index, int) and 0 <= index < len(relays) else None
        out[str(address)] = {"Path": CODES.get(code, "unknown"), "Relay": relay,
                             "HandshakeAge": handshake, "ReportAge": round(age, 1)}
    return out


def matrix(peers: Iterable[Peer], reports: Mapping[str, Mapping[str, Any]], now: float,
           stale: float = 60.0, only: str | None = None) -> list[dict[str, Any]]:
    """Every pair (A < B by key) with both sides' views; ``only``: the pairs of one key."""
    nodes = sorted(peers, key=lambda p: p.key)
    seen = {p.key: views(reports.get(p.key, {}), now, stale) for p in nodes}
    pairs = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            if only is not None and only not in (a.key, b.key):
                continue
            av, bv = seen[a.key].get(b.address), seen[b.key].get(a.address)
            said = [v for v in (av, bv) if v is not None]
            if not said:
                path, relay = "unknown", None
            elif len(said) == 2 and (av["Path"], av["Relay"]) != (bv["Path"], bv["Relay"]):
                path, relay = "mixed", None
            else:
                path, relay = said[0]["Path"], said[0]["Relay"]
            pairs.append({"A": a.key, "B": b.key, "Path": path, "Relay": relay,
                          "AView": av, "BView": bv})
    return pairs


def counts(pairs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    found = dict.fromkeys(PATHS, 0)
    for pair in pairs:
        found[pair["Path"]] += 1
    return found


def reported(reports: Iterable[str | bytes], now: float, stale: float = 60.0) -> dict[str, int]:
    """Peer paths by path (direct, relayed, down) over the fresh ``reports`` of a zone:
    a pair counts once per side that reported it."""
    found = dict.fromkeys(CODES.values(), 0)
    for text in reports:
        for view in views(parse_report(text), now, stale).values():
            if view["Path"] in found:
                found[view["Path"]] += 1
    return found

"""The topology picture of a zone, laid out (pure: no Flask, no Redis).

Up to ``PAIRWISE_LIMIT`` nodes every node is drawn on a circle and every pair is an edge
coloured by its path. Above that a picture of every pair is a hairball (499,500 edges at
1,000 nodes), so nodes are grouped by how the world reaches them (public, cone NAT,
symmetric NAT, unknown): one shape per group with its node count, one edge per pair of
groups split into segments as long as each path's share of its pairs; the nodes table
below still lists every node. The template (``_picture.svg``) draws what this computes.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from wire.messages import NAT_CONE, NAT_OPEN, NAT_STATIC, NAT_SYMMETRIC

PAIRWISE_LIMIT = 16
WIDTH = 760
HEIGHT = 560
PATH_ORDER = ("direct", "relayed", "mixed", "unknown", "down")
GROUPS = ("public", "cone", "symmetric", "unknown")
NAT_BADGES = {NAT_OPEN: "open", NAT_STATIC: "static", NAT_CONE: "cone",
              NAT_SYMMETRIC: "sym"}


def kind(nat_type: str | None) -> str:
    """A node's group: public (reachable as it is), cone, symmetric or unknown."""
    if nat_type in (NAT_OPEN, NAT_STATIC):
        return "public"
    if nat_type in (NAT_CONE, NAT_SYMMETRIC):
        return nat_type
    return "unknown"


@dataclass(frozen=True)
class Point:
    key: str
    label: str
    badge: str
    kind: str              # public | cone | symmetric | unknown | relay
    x: float
    y: float
    online: bool = True
    anchor: str = ""       # id of the node's table row


@dataclass(frozen=True)
class Segment:
    x1: float
    y1: float
    x2: float
    y2: float
    path: str
    title: str
    a: str = ""            # the pair's point indices (pairs) or group names (groups)
    b: str = ""
    via: tuple[float, float] | None = None     # a relayed pair: through its relay


@dataclass(frozen=True)
class Group:
    name: str
    x: float
    y: float
    r: float
    nodes: int
    online: int
    inside: Counter        # paths of pairs within the group


@dataclass
class Picture:
    width: int = WIDTH
    height: int = HEIGHT
    mode: str = "pairs"                  # pairs | groups
    points: list[Point] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    nodes: int = 0

    @property
    def pair_summary(self) -> str:
        parts = [f"{self.counts[p]:,} {p}" for p in PATH_ORDER if self.counts[p]]
        return f"{sum(self.counts.values()):,} pairs" + (": " + ", ".join(parts) if parts else "")

    @property
    def summary(self) -> str:
        return f"{self.nodes:,} nodes, {self.pair_summary}"


@dataclass(frozen=True)
class Node:
    key: str
    label: str
    nat_type: str | None
    online: bool
    anchor: str


def _ring(n: int, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    return [(round(cx + r * math.cos(2 * math.pi * i / n - math.pi / 2), 1),
             round(cy + r * math.sin(2 * math.pi * i / n - math.pi / 2), 1)) for i in range(n)]


def pairwise(nodes: Sequence[Node], pair_of: Callable[[str, str], tuple[str, str | None]],
             relays: Sequence[str] = ()) -> Picture:
    """Every node on a circle (public nodes first, then by label), every pair an edge;
    ``pair_of(a, b)``: the pair's (path, relay)."""
    ordered = sorted(nodes, key=lambda n: (GROUPS.index(kind(n.nat_type)), n.label))
    pic = Picture(mode="pairs", nodes=len(ordered))
    cx, cy = WIDTH / 2, HEIGHT / 2
    radius = min(cx, cy) - 70
    for node, (x, y) in zip(ordered, _ring(max(len(ordered), 1), cx, cy, radius)):
        pic.points.append(Point(node.key, node.label, NAT_BADGES.get(node.nat_type or "", "?"),
                                kind(node.nat_type), x, y, node.online, node.anchor))
    at = _relay_places(relays)
    count = len(pic.points)
    for i, a in enumerate(pic.points[:count]):
        for j in range(i + 1, count):
            b = pic.points[j]
            path, relay = pair_of(a.key, b.key)
            pic.counts[path] += 1
            via = f" via {relay}" if relay else ""
            pic.segments.append(Segment(a.x, a.y, b.x, b.y, path,
                                        f"{a.label} – {b.label}: {path}{via}", str(i), str(j),
                                        at.get(relay) if relay else None))
    for name, (x, y) in at.items():
        pic.points.append(Point(name, name, "relay", "relay", x, y))
    return pic


def grouped(nodes: Sequence[Node], between: Mapping[tuple[str, str], Counter],
            relays: Sequence[str] = ()) -> Picture:
    """One shape per group of nodes, one segmented edge per pair of groups."""
    sizes = Counter(kind(n.nat_type) for n in nodes)
    up = Counter(kind(n.nat_type) for n in nodes if n.online)
    names = [g for g in GROUPS if sizes[g]]
    pic = Picture(mode="groups", nodes=len(nodes))
    cx, cy = WIDTH / 2, HEIGHT / 2
    places = dict(zip(names, _ring(max(len(names), 1), cx, cy, min(cx, cy) - 110
                                   if len(names) > 1 else 0)))
    biggest = max(sizes.values(), default=1)
    radius = {}
    for name in names:
        x, y = places[name]
        radius[name] = r = round(34 + 40 * math.sqrt(sizes[name] / biggest), 1)
        pic.groups.append(Group(name, x, y, r, sizes[name], up[name],
                                between.get((name, name), Counter())))
    for (g, h), counter in between.items():
        pic.counts.update(counter)
        if g == h or g not in places or h not in places:
            continue
        # From rim to rim, so no path's share hides under a group's circle.
        (cx1, cy1), (cx2, cy2) = places[g], places[h]
        length = math.hypot(cx2 - cx1, cy2 - cy1) or 1.0
        ux, uy = (cx2 - cx1) / length, (cy2 - cy1) / length
        x1, y1 = cx1 + ux * radius[g], cy1 + uy * radius[g]
        x2, y2 = cx2 - ux * radius[h], cy2 - uy * radius[h]
        total = sum(counter.values())
        done = 0
        for path in PATH_ORDER:
            if not counter[path]:
                continue
            f1, f2 = done / total, (done + counter[path]) / total
            done += counter[path]
            pic.segments.append(Segment(
                round(x1 + (x2 - x1) * f1, 1), round(y1 + (y2 - y1) * f1, 1),
                round(x1 + (x2 - x1) * f2, 1), round(y1 + (y2 - y1) * f2, 1), path,
                f"{g} – {h}: {counter[path]} of {total} pairs {path}", g, h))
    for name, (x, y) in _relay_places(relays).items():
        pic.points.append(Point(name, name, "relay", "relay", x, y))
    return pic


def _relay_places(relays: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Relays down the left edge, outside the ring of nodes: a relayed pair's two legs
    then never lie along another pair's edge through the centre."""
    return {name: (70.0, 60.0 + 70.0 * i) for i, name in enumerate(relays[:7])}


def picture(nodes: Sequence[Node], pair_of: Callable[[str, str], tuple[str, str | None]],
            between: Callable[[Mapping[str, str]], Mapping[tuple[str, str], Counter]],
            relays: Sequence[str] = ()) -> Picture:
    if len(nodes) <= PAIRWISE_LIMIT:
        return pairwise(nodes, pair_of, relays)
    return grouped(nodes, between({n.key: kind(n.nat_type) for n in nodes}), relays)

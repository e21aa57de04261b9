"""The dashboard's pure parts: the topology picture (every pair up to the limit, groups
above it), the lease map, and pair paths counted per group without listing pairs."""
from __future__ import annotations

from collections import Counter

import pytest

from controltower.dashboard import leasemap, picture
from controltower.pairpaths import PairPaths


def nodes(n: int, nat=("open", "cone", "symmetric", None), offline=()) -> list[picture.Node]:
    return [picture.Node(f"k{i}", f"n{i}", nat[i % len(nat)], i not in offline, f"a{i}")
            for i in range(n)]


def test_small_zone_every_pair_is_an_edge_with_its_path():
    paths = PairPaths(frozenset({"k0", "k1", "k2"}))
    pic = picture.picture(nodes(4, offline={3}), paths.of, paths.between)
    assert pic.mode == "pairs" and len(pic.points) == 4
    assert len(pic.segments) == 6
    assert pic.counts == Counter({"direct": 3, "down": 3})
    assert pic.points[0].kind == "public"                # public nodes first on the ring
    by_pair = {frozenset(s.title.split(":")[0].split(" – ")): s.path for s in pic.segments}
    assert by_pair[frozenset({"n0", "n1"})] == "direct"
    assert by_pair[frozenset({"n0", "n3"})] == "down"
    assert {p.badge for p in pic.points} == {"open", "cone", "sym", "?"}


def test_large_zone_is_grouped_not_a_hairball():
    n = 1000
    paths = PairPaths(frozenset(f"k{i}" for i in range(n) if i % 10))
    pic = picture.picture(nodes(n), paths.of, paths.between)
    assert pic.mode == "groups" and not pic.points
    assert sorted(g.name for g in pic.groups) == ["cone", "public", "symmetric", "unknown"]
    assert sum(g.nodes for g in pic.groups) == n
    assert sum(pic.counts.values()) == n * (n - 1) // 2
    online = n - n // 10
    assert pic.counts["direct"] == online * (online - 1) // 2
    assert len(pic.segments) <= 6 * 5                    # 6 group pairs, a segment per path
    assert "1,000 nodes, 499,500 pairs" in pic.summary


def test_pairpaths_between_groups_counts_pairs_exactly():
    paths = PairPaths(frozenset({"a", "b", "c"}))
    found = paths.between({"a": "x", "b": "x", "c": "y", "d": "y"})
    assert found[("x", "x")] == Counter({"direct": 1, "down": 0})
    assert found[("x", "y")] == Counter({"direct": 2, "down": 2})
    assert found[("y", "y")] == Counter({"direct": 0, "down": 1})
    assert paths.counts(["a", "b", "c", "d"]) == Counter({"direct": 3, "down": 3})


@pytest.mark.parametrize("cidr,per_cell,cells", [("10.0.0.0/24", 1, 256),
                                                 ("10.0.0.0/20", 16, 256),
                                                 ("10.0.0.0/30", 1, 4),
                                                 ("fd00::/64", 2 ** 56, 256)])
def test_lease_map_cells(cidr, per_cell, cells):
    first = cidr.split("/")[0]
    host = first[:-1] + "1" if first.endswith("0") else first + "1"
    m = leasemap.lease_map(cidr, {host: "pub1"})
    assert m.per_cell == per_cell and len(m.cells) == cells
    assert m.used == 1
    assert m.cells[0].reserved == 1
    assert m.cells[0 if per_cell > 1 else 1].used == 1
    if per_cell == 1:
        assert m.cells[1].holder == "pub1" and "leased to pub1" in m.cells[1].title
        assert m.cells[0].state == "reserved"
    if cidr.startswith("10."):
        assert m.cells[-1].reserved == 1                 # broadcast


def test_lease_map_ignores_addresses_outside_and_garbage():
    m = leasemap.lease_map("10.0.0.0/24", {"10.9.9.9": "x", "nonsense": "y", "10.0.0.7": "z"})
    assert m.used == 1 and m.cells[7].state == "full"
    assert leasemap.usage("10.0.0.0/24", 127) == (127, 254, 50.0)

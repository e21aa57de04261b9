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


def views(pairs: dict[tuple[str, str], tuple[str, str | None]]) -> dict:
    """Both ends' views of each pair (keys k<i>, addresses a<i>)."""
    out: dict = {}
    for (a, b), view in pairs.items():
        out.setdefault(a, {})["a" + b[1:]] = view
        out.setdefault(b, {})["a" + a[1:]] = view
    return out


ADDRESSES = {f"k{i}": f"a{i}" for i in range(1000)}


def test_small_zone_every_pair_is_an_edge_with_its_path():
    paths = PairPaths(frozenset({"k0", "k1", "k2"}), ADDRESSES,
                      views({("k0", "k1"): ("direct", None), ("k0", "k2"): ("direct", None),
                             ("k1", "k2"): ("relayed", "tower-0123abcd")}),
                      ("tower-0123abcd",))
    pic = picture.picture(nodes(4, offline={3}), paths.pair, paths.between, paths.relays)
    assert pic.mode == "pairs" and len(pic.points) == 5          # 4 nodes and the relay
    assert len(pic.segments) == 6
    assert pic.counts == Counter({"direct": 2, "relayed": 1, "down": 3})
    assert pic.points[-1].kind == "relay" and pic.points[-1].label == "tower-0123abcd"
    assert pic.points[0].kind == "public"                # public nodes first on the ring
    by_pair = {frozenset(s.title.split(":")[0].split(" – ")): s.path for s in pic.segments}
    assert by_pair[frozenset({"n0", "n1"})] == "direct"
    assert by_pair[frozenset({"n1", "n2"})] == "relayed"
    relay = pic.points[-1]
    assert [s.via for s in pic.segments if s.path == "relayed"] == [(relay.x, relay.y)]
    assert by_pair[frozenset({"n0", "n3"})] == "down"
    assert {p.badge for p in pic.points} == {"open", "cone", "sym", "?", "relay"}


def test_pair_paths_from_both_ends_reports():
    paths = PairPaths(frozenset({"k0", "k1", "k2", "k3"}), ADDRESSES, {
        "k0": {"a1": ("direct", None), "a2": ("relayed", "r-0000000a")},
        "k1": {"a0": ("direct", None)},
        "k2": {"a0": ("direct", None)},
    })
    assert paths.pair("k0", "k1") == ("direct", None)
    assert paths.pair("k0", "k2") == ("mixed", None)            # the ends disagree
    assert paths.pair("k1", "k2") == ("unknown", None)          # neither reported
    assert paths.pair("k0", "k9") == ("down", None)             # k9 is not online
    only_one = PairPaths(frozenset({"k0", "k1"}), ADDRESSES, {"k1": {"a0": ("relayed", "r-0000000a")}})
    assert only_one.pair("k0", "k1") == ("relayed", "r-0000000a")


def test_large_zone_is_grouped_not_a_hairball():
    n = 1000
    up = [f"k{i}" for i in range(n) if i % 10]
    paths = PairPaths(frozenset(up), ADDRESSES,
                      {k: {ADDRESSES[o]: ("direct", None) for o in up if o != k} for k in up})
    pic = picture.picture(nodes(n), paths.pair, paths.between)
    assert pic.mode == "groups" and not pic.points
    assert sorted(g.name for g in pic.groups) == ["cone", "public", "symmetric", "unknown"]
    assert sum(g.nodes for g in pic.groups) == n
    assert sum(pic.counts.values()) == n * (n - 1) // 2
    online = n - n // 10
    assert pic.counts["direct"] == online * (online - 1) // 2
    assert len(pic.segments) <= 6 * 5                    # 6 group pairs, a segment per path
    assert "1,000 nodes, 499,500 pairs" in pic.summary


def test_pairpaths_between_groups_counts_pairs_exactly():
    paths = PairPaths(frozenset({"k0", "k1", "k2"}), ADDRESSES,
                      views({("k0", "k1"): ("direct", None), ("k0", "k2"): ("direct", None),
                             ("k1", "k2"): ("relayed", "r-0000000a")}))
    found = paths.between({"k0": "x", "k1": "x", "k2": "y", "k3": "y"})
    assert found[("x", "x")] == Counter({"direct": 1})
    assert found[("x", "y")] == Counter({"direct": 1, "relayed": 1, "down": 2})
    assert found[("y", "y")] == Counter({"down": 1})
    assert paths.counts(["k0", "k1", "k2", "k3"]) == Counter({"direct": 2, "relayed": 1, "down": 3})


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


@pytest.mark.parametrize("seed", range(20))
def test_between_counts_as_asking_every_pair(seed):
    """The report walk of ``between`` agrees with asking ``pair`` for every pair: one-sided,
    agreeing and disagreeing reports, reports naming offline or unknown peers, stale ones."""
    import random
    r = random.Random(seed)
    n = r.randrange(2, 30)
    keys = [f"k{i}" for i in range(n)]
    online = frozenset(k for k in keys if r.random() < 0.8)
    choices = [("direct", None), ("relayed", "r-0000000a"), ("relayed", "r-0000000b"),
               ("down", None)]
    seen = {}
    for k in keys:
        if r.random() < 0.8:
            seen[k] = {ADDRESSES[o]: r.choice(choices) for o in keys + ["k999"]
                       if o != k and r.random() < 0.6}
    paths = PairPaths(online, {k: ADDRESSES[k] for k in keys}, seen)
    groups = {k: r.choice("xyz") for k in keys}
    expected: dict = {}
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            slot = tuple(sorted((groups[a], groups[b])))
            expected.setdefault(slot, Counter())[paths.of(a, b)] += 1
    assert paths.between(groups) == expected


def test_exceptions_lists_pairs_of_online_nodes_that_are_not_direct():
    paths = PairPaths(frozenset({"k0", "k1", "k2", "k3"}), ADDRESSES, {
        "k0": {"a1": ("direct", None), "a2": ("relayed", "r-0000000a"), "a4": ("down", None)},
        "k1": {"a0": ("direct", None), "a3": ("down", None)},
        "k2": {"a0": ("relayed", "r-0000000a"), "a3": ("direct", None)},
        "k3": {"a2": ("relayed", "r-0000000b")},
    })
    found, total = paths.exceptions()
    assert total == 3 and len(found) == 3                  # k4 is offline: not listed
    assert sorted((a, b, p) for a, b, p, _ in found) == [
        ("k0", "k2", "relayed"), ("k1", "k3", "down"), ("k2", "k3", "mixed")]
    assert ("k0", "k2", "relayed", "r-0000000a") in found
    first, total = paths.exceptions(limit=1)
    assert len(first) == 1 and total == 3

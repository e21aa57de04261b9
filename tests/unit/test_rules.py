"""A node's compiled rules (pure): the plan, interpreted as nft would, decides as
``wire.policy.decide`` does (property test); set deltas keep contents equal to a fresh
build and never name an element twice or one that is missing; the nft text."""
from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from aircrew import nftext
from aircrew.rules import FORWARD, INPUT, Contents, compile_plan, needed
from wire import policy as P

TAGS = ("ops", "servers", "db")
NAMES = ("n0", "n1", "n2", "n3", "n4")
# Each node i owns 10.0.0.i (or fd00::i) and maybe 10.(i+1).0.0/24 and fd0i::/64.
PREFIX_SELECTORS = ("10.0.0.0/24", "10.0.0.2/32", "10.2.0.0/16", "10.2.0.128/25",
                    "fd00::/64", "fd02::/64", "10.0.0.0/8")


def member(i: int, tags, v6: bool, prefixes) -> P.Member:
    address = f"fd00::{i + 1}" if v6 else f"10.0.0.{i + 1}"
    return P.Member(f"k{i}", address, NAMES[i], frozenset(tags), tuple(prefixes))


def prefixes_of(i: int) -> st.SearchStrategy:
    return st.lists(st.sampled_from([f"10.{i + 1}.0.0/24", f"fd0{i + 1}::/64"]),
                    unique=True, max_size=2)


members = st.builds(
    lambda specs: [member(i, *spec) for i, spec in enumerate(specs)],
    st.tuples(*(st.tuples(st.sets(st.sampled_from(TAGS)), st.booleans(), prefixes_of(i))
                for i in range(len(NAMES)))))

selector_text = st.one_of(st.sampled_from([f"tag:{t}" for t in TAGS]), st.sampled_from(NAMES),
                          st.sampled_from(PREFIX_SELECTORS), st.just("*"))
port_text = st.one_of(st.sampled_from(["tcp", "udp", "icmp", "*"]),
                      st.builds(lambda p, lo, n: f"{p}/{lo}" + (f"-{lo + n}" if n else ""),
                                st.sampled_from(["tcp", "udp"]), st.integers(20, 25),
                                st.integers(0, 2)))
rules = st.lists(st.fixed_dictionaries({
    "from": st.lists(selector_text, min_size=1, max_size=3),
    "to": st.lists(selector_text, min_size=1, max_size=3),
    "ports": st.lists(port_text, min_size=1, max_size=3)}), max_size=5)


def owner(members, address: str) -> P.Member | None:
    addr = ipaddress.ip_address(address)
    for m in members:
        if any(addr.version == net.version and addr in net for net in m.owns()):
            return m
    return None


def in_set(contents: Contents, name: str, address: str) -> bool:
    addr = ipaddress.ip_address(address)
    return any(addr.version == (net := ipaddress.ip_network(e)).version and addr in net
               for e in contents.elements(name))


def nft_accepts(plan, contents, me: P.Member, src: str, dst: str, proto: str,
                port: int | None) -> bool:
    """What our chains do with a new packet arriving at ``me`` (the interpreter)."""
    d = ipaddress.ip_address(dst)
    chain = INPUT if d == ipaddress.ip_address(me.address) else FORWARD
    family = d.version
    for a in plan.accepts:
        if a.chain != chain or a.family != family:
            continue
        if a.source_set and not in_set(contents, a.source_set, src):
            continue
        if a.source_nets and not any(ipaddress.ip_address(src) in ipaddress.ip_network(n)
                                     for n in a.source_nets):
            continue
        if a.dest_nets and not any(d in ipaddress.ip_network(n) for n in a.dest_nets):
            continue
        if a.proto != "*" and a.proto != proto:
            continue
        if a.ports and not any(lo <= port <= hi for lo, hi in a.ports):
            continue
        return True
    return False


def addresses_of(m: P.Member) -> list[str]:
    out = [m.address]
    for p in m.prefixes:
        net = ipaddress.ip_network(p)
        out += [str(net.network_address + 5), str(net.network_address + 200)]
    return out


@settings(max_examples=300, deadline=None)
@given(members, rules, st.data())
def test_compiled_rules_decide_as_the_policy_does(nodes, raw_rules, data):
    policy = P.parse({"rules": raw_rules})
    strangers = ["192.0.2.7", "10.0.0.200", "fd00::99"]
    sources = [a for m in nodes for a in addresses_of(m)] + strangers
    for me in nodes:
        plan = compile_plan(policy, me)
        contents = Contents(plan)
        contents.update((m.key, m) for m in nodes)
        for dst in addresses_of(me):
            for src in data.draw(st.lists(st.sampled_from(sources), min_size=1, max_size=6)):
                if ipaddress.ip_address(src).version != ipaddress.ip_address(dst).version:
                    continue
                proto, port = data.draw(st.sampled_from(
                    [("tcp", 22), ("tcp", 23), ("udp", 22), ("udp", 26), ("icmp", None)]))
                expected = P.decide(policy, P.Endpoint(src, owner(nodes, src)),
                                    P.Endpoint(dst, me), proto, port)
                got = nft_accepts(plan, contents, me, src, dst, proto, port)
                assert got == expected.allow, (me, src, dst, proto, port, expected)


@settings(max_examples=200, deadline=None)
@given(members, rules, st.lists(st.lists(st.tuples(st.integers(0, 4), st.one_of(
    st.none(), st.tuples(st.sets(st.sampled_from(TAGS)), st.booleans()))), min_size=1,
    max_size=4), max_size=6), st.data())
def test_deltas_keep_contents_equal_to_a_fresh_build(nodes, raw_rules, batches, data):
    policy = P.parse({"rules": raw_rules})
    me = nodes[0]
    plan = compile_plan(policy, me)
    contents = Contents(plan)
    current = {m.key: m for m in nodes}
    contents.update(current.items())
    held = {d.name: set(contents.elements(d.name)) for d in plan.sets}
    for batch in batches:
        changed = []
        for i, spec in batch:
            key = f"k{i}"
            if spec is None:
                current.pop(key, None)
                changed.append((key, None))
            else:
                tags, v6 = spec
                prefixes = data.draw(prefixes_of(i))
                current[key] = member(i, tags, v6, prefixes)
                changed.append((key, current[key]))
        delta = contents.update(changed)
        for name, elements in delta.delete.items():
            assert elements <= held[name], "a delete names an element the set lacks"
            held[name] -= elements
        for name, elements in delta.add.items():
            assert not elements & held[name], "an add names an element the set holds"
            held[name] |= elements
        fresh = Contents(plan)
        fresh.update(current.items())
        for decl in plan.sets:
            assert contents.elements(decl.name) == fresh.elements(decl.name) == held[decl.name]


def test_a_server_plan_and_its_table():
    policy = P.parse({"rules": [
        {"from": ["tag:ops"], "to": ["tag:servers"], "ports": ["tcp/22", "tcp/8000-8100", "icmp"]},
        {"from": ["192.0.2.0/24"], "to": ["10.9.0.0/25"], "ports": ["udp/53"]},
        {"from": ["tag:servers"], "to": ["tag:ops"]},
    ]})
    web = P.Member("k2", "10.0.0.2", "web-1", frozenset({"servers"}), ("10.9.0.0/24",))
    ops = P.Member("k1", "10.0.0.1", "laptop", frozenset({"ops"}), ("10.5.0.0/24",))
    plan = compile_plan(policy, web)
    assert plan.rules == (0, 1)
    assert [d.name for d in plan.sets] == ["tag.ops_4", "tag.ops_4n", "tag.ops_6", "tag.ops_6n"]
    contents = Contents(plan)
    contents.update([("k1", ops), ("k2", web)])
    text = nftext.table("wg0", plan, contents)
    assert text.startswith("add table inet apexmesh_wg0\ndelete table inet apexmesh_wg0\n")
    assert "set tag.ops_4 { type ipv4_addr; elements = { 10.0.0.1 } }" in text
    assert "set tag.ops_4n { type ipv4_addr; flags interval; elements = { 10.5.0.0/24 } }" in text
    assert ('ip saddr @tag.ops_4 tcp dport { 22, 8000-8100 } counter accept comment "rule 0"'
            in text)
    assert 'ip saddr @tag.ops_4n meta l4proto icmp counter accept comment "rule 0"' in text
    assert ('ip saddr { 192.0.2.0/24 } ip daddr { 10.9.0.0/25 } udp dport { 53 } counter accept'
            ' comment "rule 1"') in text
    assert 'rule 2' not in text          # servers -> ops is enforced by ops, not here
    assert text.count('iifname "wg0" jump mesh_') == 2
    # ops leaves the tag, another joins it: one transaction of element changes
    delta = contents.update([("k1", P.Member("k1", "10.0.0.1", "laptop"))])
    delta2 = contents.update([("k3", P.Member("k3", "10.0.0.3", None, frozenset({"ops"})))])
    assert nftext.delta("wg0", delta) == (
        "delete element inet apexmesh_wg0 tag.ops_4 { 10.0.0.1 }\n"
        "delete element inet apexmesh_wg0 tag.ops_4n { 10.5.0.0/24 }\n")
    assert nftext.delta("wg0", delta2) == "add element inet apexmesh_wg0 tag.ops_4 { 10.0.0.3 }\n"
    assert nftext.removal("wg0") == "add table inet apexmesh_wg0\ndelete table inet apexmesh_wg0\n"


def test_needed_peers_are_those_some_rule_lets_talk_either_way():
    policy = P.parse({"rules": [{"from": ["tag:ops"], "to": ["tag:servers"], "ports": ["tcp/22"]}]})
    ops = P.Member("k1", "10.0.0.1", "a", frozenset({"ops"}))
    web = P.Member("k2", "10.0.0.2", "b", frozenset({"servers"}))
    db = P.Member("k3", "10.0.0.3", "c", frozenset({"db"}))
    assert needed(compile_plan(policy, web), ops) and needed(compile_plan(policy, ops), web)
    assert not needed(compile_plan(policy, web), db) and not needed(compile_plan(policy, db), ops)
    assert needed(None, db)


@settings(max_examples=150, deadline=None)
@given(members, rules, st.lists(st.tuples(st.integers(0, 4), st.one_of(
    st.none(), st.tuples(st.sets(st.sampled_from(TAGS)), st.booleans()))), max_size=6))
def test_sets_filled_from_the_groups_equal_sets_filled_from_the_zone(nodes, raw_rules, changes):
    from aircrew.rules import Groups
    plan = compile_plan(P.parse({"rules": raw_rules}), nodes[0])
    current = {m.key: m for m in nodes}
    groups = Groups(current)
    for i, spec in changes:
        member = None if spec is None else member_of(i, *spec)
        groups.set(f"k{i}", member)
        if member is None:
            current.pop(f"k{i}", None)
        else:
            current[f"k{i}"] = member
    assert groups.members == current
    from_groups, from_zone = Contents(plan), Contents(plan)
    from_groups.update(groups.of(plan))
    from_zone.update(current.items())
    for decl in plan.sets:
        assert from_groups.elements(decl.name) == from_zone.elements(decl.name)


def member_of(i: int, tags, v6: bool) -> P.Member:
    return member(i, tags, v6, ())

"""The rules one node enforces: the zone policy compiled for it, and its sets' contents
(pure; nft text is in ``nftext``, the applier in ``firewall``).

    policy + this node ──► compile_plan() ──► Plan: named sets, accept lines, the rules
                                              that apply, the selectors it talks to
    members changed    ──► Contents.update() ──► Delta: set elements to add and delete

The destination enforces: a node holds only the rules whose ``to`` covers it. Each
source group (a tag or a node name) becomes, per address family, a plain set of its
members' addresses and an interval set of their approved prefixes: nft 1.0.6 reads every
element of a table's interval sets on each element change (O(size)), while a plain set
changes in constant time, and prefixes are few. The plan depends on the policy and this
node only, so another node's change is a set-element delta, never a rule reload.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable

from wire.policy import Member, Network, Policy, PortSpec, Selector

INPUT, FORWARD = "in", "fwd"     # into the node itself; forwarded into its child prefixes
FAMILIES = (4, 6)


@dataclass(frozen=True)
class SetDecl:
    name: str
    family: int                  # 4 | 6
    interval: bool               # False: members' addresses; True: their approved prefixes
    selector: Selector           # a tag or a node name


@dataclass(frozen=True)
class Accept:
    """One accept line: every condition given holds."""
    chain: str                               # INPUT | FORWARD
    family: int
    rule: int                                # index of the policy rule it comes from
    source_set: str | None                   # the source is in this set, or
    source_nets: tuple[str, ...]             # in one of these prefixes, or (neither) any
    dest_nets: tuple[str, ...]               # the destination is in one of these; (): any
    proto: str                               # tcp | udp | icmp | *
    ports: tuple[tuple[int, int], ...]       # destination port ranges; (): any


@dataclass(frozen=True)
class Plan:
    sets: tuple[SetDecl, ...]
    accepts: tuple[Accept, ...]
    rules: tuple[int, ...]                   # the policy rules that apply to this node
    talk: tuple[Selector, ...]               # nodes covered by one of these are peers


def set_name(sel: Selector, family: int, interval: bool) -> str:
    kind = "tag" if sel.kind == "tag" else "node"
    return f"{kind}.{sel.value}_{family}{'n' if interval else ''}"


def family_of(text: str) -> int:
    return 6 if ":" in text else 4


def compile_plan(policy: Policy, me: Member) -> Plan:
    """What ``me`` enforces under ``policy``: O(rules), no other node involved."""
    sets: dict[str, SetDecl] = {}
    accepts: list[Accept] = []
    applied: list[int] = []
    talk: set[Selector] = set()
    mine = [ipaddress.ip_network(p) for p in me.prefixes]
    for rule in policy.rules:
        if any(me.matches(s) for s in rule.sources):
            talk.update(rule.dests)
        covering = [d for d in rule.dests if me.matches(d)]
        if not covering:
            continue
        applied.append(rule.index)
        talk.update(rule.sources)
        whole_node = any(d.kind != "prefix" for d in covering)
        literal = [d.network() for d in covering if d.kind == "prefix"]
        forwarded = mine if whole_node else _overlaps(literal, mine)
        for family in FAMILIES:
            targets: list[tuple[str, tuple[str, ...]]] = []
            if whole_node:
                targets.append((INPUT, ()))
            else:
                nets = tuple(str(n) for n in literal if n.version == family)
                if nets:
                    targets.append((INPUT, nets))
            nets = tuple(str(n) for n in forwarded if n.version == family)
            if nets:
                targets.append((FORWARD, nets))
            if not targets:
                continue
            sources = _sources(rule.sources, family, sets)
            for chain, dests in targets:
                for source_set, source_nets in sources:
                    for proto, ports in _protocols(rule.ports):
                        accepts.append(Accept(chain, family, rule.index, source_set,
                                              source_nets, dests, proto, ports))
    return Plan(tuple(sorted(sets.values(), key=lambda d: d.name)), tuple(accepts),
                tuple(applied), tuple(sorted(talk)))


def _overlaps(literal: list[Network], mine: list[Network]) -> list[Network]:
    """The parts of this node's prefixes that literal destinations cover (two CIDRs
    nest or are disjoint: an overlap is the smaller one)."""
    out = {net if net.subnet_of(own) else own                     # type: ignore[arg-type]
           for net in literal for own in mine
           if net.version == own.version and net.overlaps(own)}   # type: ignore[arg-type]
    return sorted(out, key=lambda n: (n.version, n))


def _sources(selectors: tuple[Selector, ...], family: int,
             sets: dict[str, SetDecl]) -> list[tuple[str | None, tuple[str, ...]]]:
    if any(s.kind == "any" for s in selectors):
        return [(None, ())]
    out: list[tuple[str | None, tuple[str, ...]]] = []
    for sel in selectors:
        if sel.kind in ("tag", "name"):
            for interval in (False, True):
                name = set_name(sel, family, interval)
                sets[name] = SetDecl(name, family, interval, sel)
                out.append((name, ()))
    nets = tuple(s.value for s in selectors
                 if s.kind == "prefix" and family_of(s.value) == family)
    if nets:
        out.append((None, nets))
    return out


def _protocols(specs: tuple[PortSpec, ...]) -> list[tuple[str, tuple[tuple[int, int], ...]]]:
    if any(p.proto == "*" for p in specs):
        return [("*", ())]
    out: list[tuple[str, tuple[tuple[int, int], ...]]] = []
    for proto in ("tcp", "udp", "icmp"):
        specs_of = [p for p in specs if p.proto == proto]
        if not specs_of:
            continue
        if proto == "icmp" or any(p.low == 0 for p in specs_of):
            out.append((proto, ()))
        else:
            out.append((proto, tuple(sorted({(p.low, p.high) for p in specs_of}))))
    return out


def needed(plan: Plan | None, member: Member) -> bool:
    """Whether this node configures ``member`` as a WireGuard peer: under a policy only
    when some rule lets one of the two reach the other (a tunnel is two-way)."""
    return plan is None or any(member.matches(s) for s in plan.talk)


# -- set contents ----------------------------------------------------------------------------

@dataclass
class Delta:
    """Set elements to add and to delete, by set name: one nft transaction."""
    add: dict[str, set[str]] = field(default_factory=dict)
    delete: dict[str, set[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(self.add.values()) or any(self.delete.values())

    def size(self) -> int:
        return sum(map(len, self.add.values())) + sum(map(len, self.delete.values()))


class Contents:
    """The elements of a plan's sets and who put each there (reference counts): a
    member's change is a diff of that member's own share, O(sets) at any zone size; a
    delete always names an element the set holds, an add one it lacks."""

    def __init__(self, plan: Plan) -> None:
        self._shares: dict[str, dict[str, frozenset[str]]] = {d.name: {} for d in plan.sets}
        self._counts: dict[str, dict[str, int]] = {d.name: {} for d in plan.sets}
        self.plan = plan

    @property
    def plan(self) -> Plan:
        return self._plan

    @plan.setter
    def plan(self, plan: Plan) -> None:
        """A plan with the same sets (``Firewall`` keeps the contents for it)."""
        self._plan = plan
        groups: dict[Selector, list[SetDecl]] = {}
        for decl in plan.sets:
            groups.setdefault(decl.selector, []).append(decl)
        self._groups = list(groups.items())

    def elements(self, name: str) -> frozenset[str]:
        return frozenset(self._counts[name])

    def sizes(self) -> dict[str, int]:
        return {name: len(counts) for name, counts in self._counts.items()}

    @staticmethod
    def share(decl: SetDecl, member: Member | None) -> frozenset[str]:
        """What ``member`` puts into the set ``decl``."""
        if member is None or not member.matches(decl.selector):
            return frozenset()
        if decl.interval:
            return frozenset(p for p in member.prefixes if family_of(p) == decl.family)
        return frozenset((member.address,)) if member.family == decl.family else frozenset()

    def update(self, changed: Iterable[tuple[str, Member | None]]) -> Delta:
        """Members changed (by key; None: gone): the elements that changed with them."""
        delta = Delta()
        for key, member in changed:
            for selector, decls in self._groups:     # a group's sets share one match
                if member is not None and member.matches(selector):
                    for decl in decls:
                        self._move(decl.name, key, self.share(decl, member), delta)
                else:
                    for decl in decls:
                        if key in self._shares[decl.name]:
                            self._move(decl.name, key, frozenset(), delta)
        return delta

    def _move(self, name: str, key: str, new: frozenset[str], delta: Delta) -> None:
        shares = self._shares[name]
        old = shares.get(key, frozenset())
        if new == old:
            return
        if new:
            shares[key] = new
        else:
            del shares[key]
        counts = self._counts[name]
        added = delta.add.setdefault(name, set())
        deleted = delta.delete.setdefault(name, set())
        for element in old - new:
            counts[element] -= 1
            if counts[element] == 0:
                del counts[element]
                if element in added:
                    added.discard(element)        # added earlier in this delta
                else:
                    deleted.add(element)
        for element in new - old:
            counts[element] = counts.get(element, 0) + 1
            if counts[element] == 1:
                if element in deleted:
                    deleted.discard(element)      # deleted earlier in this delta
                else:
                    added.add(element)


class Groups:
    """The zone's members, indexed by tag and by name: a plan's sets (every one is a tag's
    or a name's) are filled from their groups' members only, so a new policy costs this
    node O(its groups' members), not O(the zone)."""

    def __init__(self, members: dict[str, Member] | None = None) -> None:
        self.members: dict[str, Member] = {}
        self._by: dict[Selector, set[str]] = {}
        for key, member in (members or {}).items():
            self.set(key, member)

    @staticmethod
    def _selectors(member: Member) -> list[Selector]:
        out = [Selector("tag", t) for t in member.tags]
        if member.name:
            out.append(Selector("name", member.name))
        return out

    def set(self, key: str, member: Member | None) -> None:
        old = self.members.pop(key, None)
        if old is not None:
            for sel in self._selectors(old):
                self._by[sel].discard(key)
        if member is not None:
            self.members[key] = member
            for sel in self._selectors(member):
                self._by.setdefault(sel, set()).add(key)

    def of(self, plan: Plan) -> list[tuple[str, Member]]:
        """The members some set of ``plan`` may hold."""
        keys: set[str] = set()
        for sel in {d.selector for d in plan.sets}:
            keys |= self._by.get(sel, set())
        return [(key, self.members[key]) for key in keys]

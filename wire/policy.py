"""A zone's access policy (pure): the document, its validation, and what it decides.

The tower validates a document before storing it and answers ``policy test`` with
``decide``; every agent compiles the rules that cover its own node (``aircrew.rules``).
docs/policy.md has the format and the enforcement model. A document::

    {"rules": [{"from": ["tag:ops"], "to": ["tag:servers"], "ports": ["tcp/22", "icmp"],
                "description": "ops may ssh into servers"}]}

Selectors: ``tag:NAME``, a node name, an address or prefix, ``*``. A tag or a name covers
the node's address and its approved child prefixes. Ports: ``tcp/22``, ``tcp/8000-8100``,
``udp/53``, ``tcp`` or ``udp`` (every port), ``icmp``, ``*`` (anything; the default).
Rules only allow: under a policy, what no rule allows into a node over the mesh is
refused; replies to connections the node opened always pass.
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

from . import addresses
from .errors import InvalidInput, brief
from .identity import node_name

MAX_DOCUMENT_BYTES = 65536
MAX_RULES = 1000
MAX_ITEMS = 256                  # selectors or port specs in one field
MAX_DESCRIPTION = 256
RULE_FIELDS = ("from", "to", "ports", "description")
PROTOCOLS = ("tcp", "udp", "icmp")
SHOWN_PROBLEMS = 10              # in the error's message; ``problems`` holds them all

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document, and where: rule index (None: the document) and
    field (``from``, ``ports[1]``; None: the rule as a whole)."""
    rule: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = "policy" if self.rule is None else f"rule {self.rule}"
        return f"{where} {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"Rule": self.rule, "Field": self.field, "Message": self.message}


class PolicyError(InvalidInput):
    """A refused document: ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        text = "; ".join(str(p) for p in problems[:SHOWN_PROBLEMS])
        if len(problems) > SHOWN_PROBLEMS:
            text += f" (and {len(problems) - SHOWN_PROBLEMS} more)"
        super().__init__(f"invalid policy: {text}")


@dataclass(frozen=True, order=True)
class Selector:
    """Who: ``kind`` is ``tag``, ``name``, ``prefix`` (canonical text) or ``any``."""
    kind: str
    value: str = ""

    def __str__(self) -> str:
        if self.kind == "tag":
            return f"tag:{self.value}"
        return "*" if self.kind == "any" else self.value

    def network(self) -> Network:
        return ipaddress.ip_network(self.value)


ANY = Selector("any")


@dataclass(frozen=True, order=True)
class PortSpec:
    """What: a protocol (``*`` for any) and a destination port range (0, 0: every port)."""
    proto: str
    low: int = 0
    high: int = 0

    def __str__(self) -> str:
        if self.low == 0:
            return self.proto
        return f"{self.proto}/{self.low}" + (f"-{self.high}" if self.high != self.low else "")

    def covers(self, proto: str, port: int | None) -> bool:
        if self.proto == "*":
            return True
        if self.proto != proto:
            return False
        return self.low == 0 or (port is not None and self.low <= port <= self.high)


EVERYTHING = PortSpec("*")


@dataclass(frozen=True)
class Rule:
    index: int
    sources: tuple[Selector, ...]
    dests: tuple[Selector, ...]
    ports: tuple[PortSpec, ...]
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"from": [str(s) for s in self.sources],
                               "to": [str(s) for s in self.dests],
                               "ports": [str(p) for p in self.ports]}
        if self.description:
            out["description"] = self.description
        return out

    def __str__(self) -> str:
        text = (f"rule {self.index}: from {', '.join(map(str, self.sources))} "
                f"to {', '.join(map(str, self.dests))} ports {', '.join(map(str, self.ports))}")
        return f"{text} ({self.description})" if self.description else text


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"rules": [rule.to_dict() for rule in self.rules]}

    def to_json(self) -> str:
        """The canonical document: what the tower stores and sends."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def selectors(self) -> set[Selector]:
        return {s for rule in self.rules for s in (*rule.sources, *rule.dests)}


# -- parsing -----------------------------------------------------------------------------

def selector(value: Any) -> Selector:
    """A selector from its text; ValueError says what is wrong."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    if value == "*":
        return ANY
    if value.startswith("tag:"):
        if not _is_name(value[4:]):
            raise ValueError(f"{brief(value)}: a tag is 'tag:' and 1-63 of a-z, 0-9 and '-'")
        return Selector("tag", value[4:])
    if _is_name(value) and not value.replace("-", "").isdigit():
        return Selector("name", value)
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        if "host bits" in str(exc):
            fixed = ipaddress.ip_network(value, strict=False)
            raise ValueError(f"{brief(value)} has host bits set (did you mean {fixed}?)") from None
    else:
        found = addresses.special_range(net)
        if found is not None and net.subnet_of(found[0]):       # type: ignore[arg-type]
            # No zone address or child prefix is ever there (wire.addresses): a rule
            # naming it could never match.
            raise ValueError(f"{brief(value)} is made of {found[1]} ({found[0]}): no node "
                             "of a mesh has such an address")
        return Selector("prefix", str(net))
    raise ValueError(f"{brief(value)} is none of tag:NAME, a node name (a-z, 0-9, '-'), "
                     "an address or prefix, or '*'")


def _is_name(text: str) -> bool:
    try:
        node_name(text)
    except InvalidInput:
        return False
    return True


def port_spec(value: Any) -> PortSpec:
    """A port spec from its text; ValueError says what is wrong."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be a string such as 'tcp/22', 'udp/1000-2000', 'icmp' or '*'")
    text = value.lower()
    if text == "*":
        return EVERYTHING
    proto, slash, ports = text.partition("/")
    if proto not in PROTOCOLS:
        raise ValueError(f"{brief(value)}: the protocol must be tcp, udp, icmp or '*'")
    if proto == "icmp":
        if slash:
            raise ValueError(f"{brief(value)}: icmp has no ports")
        return PortSpec("icmp")
    if not slash or ports == "*":
        return PortSpec(proto)
    low_text, dash, high_text = ports.partition("-")
    if not low_text.isdigit() or (dash and not high_text.isdigit()):
        raise ValueError(f"{brief(value)}: a port is a number 1-65535 or a range LOW-HIGH")
    low, high = int(low_text), int(high_text) if dash else int(low_text)
    if not (1 <= low <= 65535 and 1 <= high <= 65535):
        raise ValueError(f"{brief(value)}: ports are 1-65535")
    if low > high:
        raise ValueError(f"{brief(value)}: the range starts above its end")
    return PortSpec(proto, low, high)


def parse(doc: Any) -> Policy:
    """Validate a document (a dict, or JSON text or bytes). PolicyError lists every
    problem, each with its rule index and field."""
    if isinstance(doc, (str, bytes)):
        if len(doc) > MAX_DOCUMENT_BYTES:
            raise PolicyError([Problem(None, None, f"larger than {MAX_DOCUMENT_BYTES} bytes")])
        try:
            doc = json.loads(doc, parse_constant=_not_json)
        except (ValueError, RecursionError) as exc:
            raise PolicyError([Problem(None, None, f"not JSON ({brief(str(exc))[1:-1]})")]) from None
    if not isinstance(doc, dict):
        raise PolicyError([Problem(None, None, "must be an object with a list of 'rules'")])
    problems = [Problem(None, str(name), "unknown field (a policy has 'rules' only)")
                for name in sorted(map(str, set(doc) - {"rules"}))]
    raw_rules = doc.get("rules")
    if not isinstance(raw_rules, list) or len(raw_rules) > MAX_RULES:
        problems.append(Problem(None, "rules", f"must be a list of at most {MAX_RULES} rules"))
        raise PolicyError(problems)
    rules = [_rule(index, raw, problems) for index, raw in enumerate(raw_rules)]
    if problems:
        raise PolicyError(problems)
    return Policy(tuple(rule for rule in rules if rule is not None))


def _rule(index: int, raw: Any, problems: list[Problem]) -> Rule | None:
    if not isinstance(raw, dict):
        problems.append(Problem(index, None, "must be an object with 'from' and 'to'"))
        return None
    for name in sorted(map(str, set(raw) - set(RULE_FIELDS))):
        problems.append(Problem(index, name, f"unknown field (a rule has {', '.join(RULE_FIELDS)})"))
    sources = _items(raw, "from", selector, index, problems)
    dests = _items(raw, "to", selector, index, problems)
    ports = _items(raw, "ports", port_spec, index, problems) if "ports" in raw else (EVERYTHING,)
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION \
            or not _is_text(description):
        problems.append(Problem(index, "description",
                                f"must be a string of at most {MAX_DESCRIPTION} "
                                "printable characters"))
        description = ""
    if ANY in sources:
        sources = (ANY,)
    if ANY in dests:
        dests = (ANY,)
    return Rule(index, sources, dests, _simplest(ports), description)


def _items(raw: dict[str, Any], name: str, parse_item: Callable[[Any], T], index: int,
           problems: list[Problem]) -> tuple[T, ...]:
    if name not in raw:
        problems.append(Problem(index, name, "is required"))
        return ()
    values = raw[name]
    if not isinstance(values, list) or not values or len(values) > MAX_ITEMS:
        problems.append(Problem(index, name, f"must be a list of 1-{MAX_ITEMS} strings"))
        return ()
    out: list[T] = []
    for n, value in enumerate(values):
        try:
            out.append(parse_item(value))
        except ValueError as exc:
            problems.append(Problem(index, f"{name}[{n}]", str(exc)))
    return tuple(dict.fromkeys(out))              # document order, repeats dropped


def _not_json(name: str) -> Any:
    """NaN and Infinity: Python's decoder takes them, JSON has no such numbers."""
    raise ValueError(f"{name} is not JSON")


def _is_text(text: str) -> bool:
    """Printable Unicode (no lone surrogate, no control character): a description goes
    into ``aircrew status`` and logs."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return text.isprintable()


def _simplest(ports: tuple[PortSpec, ...]) -> tuple[PortSpec, ...]:
    """``*`` alone when present; a protocol's ranges dropped when its whole is present."""
    if EVERYTHING in ports:
        return (EVERYTHING,)
    whole = {p.proto for p in ports if p.low == 0}
    return tuple(p for p in ports if p.low == 0 or p.proto not in whole)


def load(text: str | bytes | None) -> Policy | None:
    """A document (JSON); None (or empty) for no policy."""
    return None if not text else parse(text)


def stored_text(rev: int, policy: Policy) -> str:
    """The form ``stored`` reads (what Redis and the agent's cache keep)."""
    return f'{{"rev":{int(rev)},"policy":{policy.to_json()}}}'


def stored(text: str | None) -> tuple[int, Policy] | None:
    """The zone's policy as Redis keeps it, ``{"rev": R, "policy": {...}}`` (R: the
    zone revision that set it); None for none."""
    if not text:
        return None
    try:
        data = json.loads(text)
        rev = data["rev"]
        document = data["policy"]
    except (ValueError, TypeError, KeyError):
        raise PolicyError([Problem(None, None, "stored policy is malformed")]) from None
    if not isinstance(rev, int) or isinstance(rev, bool):
        raise PolicyError([Problem(None, None, "stored policy has no revision")])
    return rev, parse(document)


# -- nodes -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Member:
    """What the policy needs of a node (from its peer record): tags are bare names."""
    key: str
    address: str
    name: str | None = None
    tags: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()         # approved child prefixes

    @classmethod
    def of(cls, peer: Any) -> Member:
        """From a ``wire.messages.Peer``."""
        return cls(peer.key, peer.address, peer.name or None, frozenset(peer.tags),
                   tuple(peer.child_prefixes))

    @property
    def family(self) -> int:
        return 6 if ":" in self.address else 4

    def owns(self) -> tuple[Network, ...]:
        """Its address and approved prefixes."""
        return tuple(ipaddress.ip_network(text) for text in (self.address, *self.prefixes))

    def matches(self, sel: Selector) -> bool:
        """Whether ``sel`` covers this node (a prefix: overlaps something it owns)."""
        if sel.kind == "any":
            return True
        if sel.kind == "tag":
            return sel.value in self.tags
        if sel.kind == "name":
            return sel.value == self.name
        net = sel.network()
        return any(net.version == own.version and net.overlaps(own) for own in self.owns())


def warnings(policy: Policy, members: Iterable[Member]) -> list[str]:
    """Tags and names the policy uses that no node of the zone has (yet): accepted."""
    members = list(members)
    tags = {t for m in members for t in m.tags}
    names = {m.name for m in members}
    used = policy.selectors()
    return ([f"tag:{s.value} is on no node of the zone" for s in sorted(used)
             if s.kind == "tag" and s.value not in tags]
            + [f"no node of the zone is named {s.value}" for s in sorted(used)
               if s.kind == "name" and s.value not in names])


# -- deciding (policy test) ----------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """One end of a packet: an address, and the node owning it when it is one of ours."""
    address: str
    member: Member | None = None

    def covered_by(self, sel: Selector) -> bool:
        if sel.kind == "any":
            return True
        if sel.kind == "prefix":
            address, net = ipaddress.ip_address(self.address), sel.network()
            return address.version == net.version and address in net
        return self.member is not None and self.member.matches(sel)


@dataclass(frozen=True)
class Decision:
    allow: bool
    rule: Rule | None          # the first rule that allows; None: denied, or no policy
    reason: str


def decide(policy: Policy | None, source: Endpoint, dest: Endpoint, proto: str,
           port: int | None) -> Decision:
    """Would the destination let a new connection's packet in? (Replies to connections
    it opened always pass and are not asked here.)"""
    if policy is None:
        return Decision(True, None, "the zone has no policy: everything is allowed")
    for rule in policy.rules:
        if (any(p.covers(proto, port) for p in rule.ports)
                and any(dest.covered_by(d) for d in rule.dests)
                and any(source.covered_by(s) for s in rule.sources)):
            return Decision(True, rule, f"allowed by {rule}")
    return Decision(False, None, "no rule allows it (default deny)")


def packet(text: str) -> tuple[str, int | None]:
    """``tcp/22``, ``udp/53``, ``icmp`` -> (protocol, port), for ``decide``."""
    try:
        spec = port_spec(text)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if spec.proto == "icmp":
        return "icmp", None
    if spec.proto == "*" or spec.low == 0 or spec.low != spec.high:
        raise InvalidInput(f"{brief(text)}: name one packet, such as tcp/22, udp/53 or icmp")
    return spec.proto, spec.low


def resolve(members: Iterable[Member], ref: str) -> Endpoint:
    """One end of a ``policy test``: a node by name or public key, or an address (the
    node owning it, if any)."""
    members = list(members)
    for m in members:
        if ref in (m.name, m.key):
            return Endpoint(m.address, m)
    try:
        address = ipaddress.ip_address(ref)
    except ValueError:
        raise InvalidInput(f"{brief(ref)} is no node name, public key or address of the zone") from None
    for m in members:
        if any(address.version == net.version and address in net for net in m.owns()):
            return Endpoint(str(address), m)
    return Endpoint(str(address))

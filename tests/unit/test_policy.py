"""The policy document: validation (every problem, with rule index and field), the
canonical form, warnings and ``decide`` (pure)."""
from __future__ import annotations

import json

import pytest

from wire import policy as P
from wire.errors import InvalidInput

OPS_SSH = {"rules": [{"from": ["tag:ops"], "to": ["tag:servers"], "ports": ["tcp/22", "icmp"],
                      "description": "ops may ssh into servers"}]}


def problems(doc) -> list[str]:
    with pytest.raises(P.PolicyError) as caught:
        P.parse(doc)
    return [str(p) for p in caught.value.problems]


def test_a_valid_document_round_trips_through_its_canonical_form():
    policy = P.parse(OPS_SSH)
    again = P.parse(policy.to_json())
    assert again == policy
    assert json.loads(policy.to_json()) == OPS_SSH


def test_every_problem_is_reported_with_its_rule_and_field():
    doc = {"rules": [
        {"from": ["tag:ops", "Bad_Name"], "to": ["10.0.0.1/8"], "ports": ["tcp/22", "icmp/3"]},
        {"to": ["*"], "ports": ["tcp/0", "udp/9-1", "sctp/1", "tcp/x"], "extra": 1},
        "nope",
        {"from": [], "to": "tag:a", "description": 5},
    ], "version": 2}
    found = problems(doc)
    assert found == [
        "policy version: unknown field (a policy has 'rules' only)",
        "rule 0 from[1]: 'Bad_Name' is none of tag:NAME, a node name (a-z, 0-9, '-'), "
        "an address or prefix, or '*'",
        "rule 0 to[0]: '10.0.0.1/8' has host bits set (did you mean 10.0.0.0/8?)",
        "rule 0 ports[1]: 'icmp/3': icmp has no ports",
        "rule 1 extra: unknown field (a rule has from, to, ports, description)",
        "rule 1 from: is required",
        "rule 1 ports[0]: 'tcp/0': ports are 1-65535",
        "rule 1 ports[1]: 'udp/9-1': the range starts above its end",
        "rule 1 ports[2]: 'sctp/1': the protocol must be tcp, udp, icmp or '*'",
        "rule 1 ports[3]: 'tcp/x': a port is a number 1-65535 or a range LOW-HIGH",
        "rule 2: must be an object with 'from' and 'to'",
        "rule 3 from: must be a list of 1-256 strings",
        "rule 3 to: must be a list of 1-256 strings",
        "rule 3 description: must be a string of at most 256 printable characters",
    ]


@pytest.mark.parametrize("prefix, kind", [
    ("127.0.0.1", "loopback"), ("224.0.0.0/4", "multicast"), ("169.254.1.0/24", "link-local"),
    ("fe80::/64", "link-local"), ("::ffff:10.0.0.1", "IPv4-mapped"), ("0.0.0.0/8", "this network"),
])
def test_a_prefix_no_mesh_address_can_be_in_is_refused(prefix, kind):
    """wire.addresses: zone CIDRs and child prefixes are never in these ranges, so a rule
    naming one could never match; a wider prefix that merely holds one is kept."""
    found = problems({"rules": [{"from": [prefix], "to": ["*"]}]})
    assert len(found) == 1 and found[0].startswith("rule 0 from[0]:") and kind in found[0]
    assert P.parse({"rules": [{"from": ["0.0.0.0/0", "::/0"], "to": ["*"]}]}).rules


@pytest.mark.parametrize("text, message", [
    ('{"rules": [{"from": [NaN], "to": ["*"]}]}', "NaN is not JSON"),
    ('{"rules": [], "x": -Infinity}', "-Infinity is not JSON"),
    ('{"rules": [{"from": ["*"], "to": ["*"], "description": "a\\ud800"}]}',
     "description: must be a string of at most 256 printable characters"),
    ('{"rules": [{"from": ["*"], "to": ["*"], "description": "a\\nb"}]}', "printable"),
])
def test_no_json_extensions_and_only_printable_descriptions(text, message):
    assert any(message in p for p in problems(text))


def test_a_long_value_is_quoted_briefly():
    (found,) = problems({"rules": [{"from": ["x" * 5000], "to": ["*"]}]})
    assert len(found) < 200 and "..." in found


@pytest.mark.parametrize("doc, message", [
    ("{", "policy: not JSON"),
    ("[]", "policy: must be an object"),
    ({"rules": {}}, "policy rules: must be a list"),
    ({}, "policy rules: must be a list"),
    ("x" * (P.MAX_DOCUMENT_BYTES + 1), "policy: larger than"),
    ({"rules": [{"from": ["*"], "to": ["*"]}] * (P.MAX_RULES + 1)}, "at most 1000 rules"),
    ({"rules": [{"from": ["tag:"], "to": ["*"]}]}, "rule 0 from[0]: 'tag:': a tag is"),
    ({"rules": [{"from": [7], "to": ["*"]}]}, "rule 0 from[0]: must be a non-empty string"),
])
def test_bad_documents(doc, message):
    assert any(message in p for p in problems(doc)), problems(doc)


def test_the_error_is_invalid_input_and_its_message_is_bounded():
    doc = {"rules": [{"from": ["B"], "to": ["*"]}] * 30}
    with pytest.raises(InvalidInput) as caught:
        P.parse(doc)
    assert len(caught.value.problems) == 30
    assert "(and 20 more)" in str(caught.value)


def test_canonical_form_drops_repeats_and_subsumed_ports():
    policy = P.parse({"rules": [
        {"from": ["tag:a", "tag:a", "10.1.2.3"], "to": ["x", "*"], "ports": ["tcp/22", "tcp", "udp/53"]},
        {"from": ["*", "tag:b"], "to": ["y"], "ports": ["icmp", "*"]},
        {"from": ["fd00::/64"], "to": ["y"]},
    ]})
    assert policy.to_dict()["rules"] == [
        {"from": ["tag:a", "10.1.2.3/32"], "to": ["*"], "ports": ["tcp", "udp/53"]},
        {"from": ["*"], "to": ["y"], "ports": ["*"]},
        {"from": ["fd00::/64"], "to": ["y"], "ports": ["*"]},
    ]


def test_load_of_nothing_is_no_policy():
    assert P.load(None) is None and P.load("") is None
    assert P.load(P.parse(OPS_SSH).to_json()) == P.parse(OPS_SSH)


OPS = P.Member("k1", "10.0.0.1", "laptop", frozenset({"ops"}))
WEB = P.Member("k2", "10.0.0.2", "web-1", frozenset({"servers"}), ("10.9.0.0/24",))
DB = P.Member("k3", "10.0.0.3", "db", frozenset({"db"}))


def end(member: P.Member, address: str | None = None) -> P.Endpoint:
    return P.Endpoint(address or member.address, member)


def test_decide_names_the_first_rule_that_allows():
    policy = P.parse({"rules": [
        {"from": ["tag:ops"], "to": ["tag:servers"], "ports": ["tcp/22", "icmp"]},
        {"from": ["*"], "to": ["web-1"], "ports": ["tcp/443"]},
        {"from": ["10.0.0.0/24"], "to": ["10.9.0.0/25"], "ports": ["udp/53"]},
    ]})
    allowed = P.decide(policy, end(OPS), end(WEB), "tcp", 22)
    assert allowed.allow and allowed.rule is policy.rules[0]
    assert "rule 0" in allowed.reason
    assert not P.decide(policy, end(OPS), end(WEB), "tcp", 23).allow
    assert P.decide(policy, end(OPS), end(WEB), "icmp", None).allow
    assert not P.decide(policy, end(WEB), end(OPS), "tcp", 22).allow          # one way
    assert P.decide(policy, end(DB), end(WEB), "tcp", 443).rule.index == 1
    assert not P.decide(policy, end(OPS), end(DB), "tcp", 22).allow
    # a tag covers its node's approved prefixes, as destination and as source
    assert P.decide(policy, end(OPS), end(WEB, "10.9.0.200"), "tcp", 22).allow
    # a literal destination prefix covers what it says
    assert P.decide(policy, end(DB), end(WEB, "10.9.0.5"), "udp", 53).rule.index == 2
    assert not P.decide(policy, end(DB), end(WEB, "10.9.0.200"), "udp", 53).allow
    denied = P.decide(policy, P.Endpoint("192.0.2.1"), end(WEB), "udp", 53)
    assert not denied.allow and denied.rule is None and "default deny" in denied.reason
    assert P.decide(None, end(WEB), end(OPS), "udp", 9).allow


def test_warnings_name_unknown_tags_and_names():
    policy = P.parse({"rules": [{"from": ["tag:ops", "tag:ghost"], "to": ["nobody", "db"]}]})
    assert P.warnings(policy, [OPS, WEB, DB]) == [
        "tag:ghost is on no node of the zone", "no node of the zone is named nobody"]


@pytest.mark.parametrize("text, expected", [("tcp/22", ("tcp", 22)), ("UDP/53", ("udp", 53)),
                                            ("icmp", ("icmp", None))])
def test_packet(text, expected):
    assert P.packet(text) == expected


@pytest.mark.parametrize("text", ["tcp", "tcp/1-2", "*", "gre", "tcp/70000"])
def test_packet_refuses_what_is_not_one_packet(text):
    with pytest.raises(InvalidInput):
        P.packet(text)

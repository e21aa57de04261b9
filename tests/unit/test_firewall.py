"""The firewall applier with a recording nft (pure): one transaction per change, a delta
for another node's change, a reload for a policy or own change, the failure ladder
(delta fails -> reload; reload fails -> previous rules stay, 'failed'; nothing in force
-> 'closed'), and the status it reports."""
from __future__ import annotations

import json

import pytest

from aircrew import nftext
from aircrew.firewall import APPLIED, CLOSED, FAILED, NONE, Firewall
from aircrew.nftables import NftError
from wire import policy as P

POLICY = P.parse({"rules": [{"from": ["tag:ops"], "to": ["tag:servers"], "ports": ["tcp/22"]}]})
ME = P.Member("me", "10.0.0.2", "web", frozenset({"servers"}))
OPS = P.Member("k1", "10.0.0.1", "laptop", frozenset({"ops"}))
DB = P.Member("k3", "10.0.0.3", "db")


class RecordingNft:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.fail: str | None = None          # "all", "delta" or None

    def run(self, text: str) -> None:
        kind = "delta" if text.startswith(("add element", "delete element")) else "table"
        if self.fail == "all" or self.fail == kind:
            raise NftError("Error: Could not process rule: Operation not permitted")
        self.texts.append(text)

    def list_table(self, family: str, name: str) -> str:
        return ""


@pytest.fixture
def nft():
    return RecordingNft()


def members(*ms):
    return {m.key: m for m in ms}


def test_policy_then_deltas_then_removal(nft, tmp_path):
    fw = Firewall("wg0", nft, tmp_path / "wg0-policy.json")
    fw.sync(POLICY, 7, ME, members(ME, OPS, DB))
    assert fw.state == APPLIED and len(nft.texts) == 1
    assert "elements = { 10.0.0.1 }" in nft.texts[0]
    # db joins ops: one set-element add, nothing else
    fw.update(POLICY, 8, [("k3", P.Member("k3", "10.0.0.3", "db", frozenset({"ops"})))], ME)
    assert nft.texts[-1] == "add element inet apexmesh_wg0 tag.ops_4 { 10.0.0.3 }\n"
    assert fw.last.kind == "delta" and fw.last.elements == 1
    # a change that touches no set: no transaction at all
    fw.update(POLICY, 9, [("k9", P.Member("k9", "10.0.0.9", "other"))], ME)
    assert len(nft.texts) == 2
    # laptop leaves: one delete
    fw.update(POLICY, 10, [("k1", None)], ME)
    assert nft.texts[-1] == "delete element inet apexmesh_wg0 tag.ops_4 { 10.0.0.1 }\n"
    status = json.loads((tmp_path / "wg0-policy.json").read_text())
    assert status["state"] == "applied" and status["rules"] == [str(POLICY.rules[0])]
    assert status["table"] == "apexmesh_wg0"
    # this node loses its tag: the plan changes, the table is replaced whole
    fw.update(POLICY, 11, [("me", P.Member("me", "10.0.0.2", "web"))], P.Member("me", "10.0.0.2", "web"))
    assert nft.texts[-1].startswith("add table inet apexmesh_wg0\ndelete table")
    assert 'rule 0' not in nft.texts[-1] and fw.status()["rules"] == []
    # the policy is deleted: the table goes
    fw.update(None, 12, [], ME)
    assert nft.texts[-1] == nftext.removal("wg0") and fw.state == NONE
    assert json.loads((tmp_path / "wg0-policy.json").read_text())["table"] is None
    count = len(nft.texts)
    fw.update(None, 13, [("k3", DB)], ME)                # no policy: nothing to do
    assert len(nft.texts) == count


def test_a_failed_delta_reloads_the_whole_table(nft):
    fw = Firewall("wg0", nft)
    fw.sync(POLICY, 1, ME, members(ME, OPS))
    nft.fail = "delta"
    fw.update(POLICY, 2, [("k3", P.Member("k3", "10.0.0.3", "db", frozenset({"ops"})))], ME)
    assert fw.state == APPLIED
    assert "elements = { 10.0.0.1, 10.0.0.3 }" in nft.texts[-1]


def test_a_failed_reload_keeps_the_previous_rules_then_retries(nft):
    fw = Firewall("wg0", nft)
    fw.sync(POLICY, 1, ME, members(ME, OPS))
    nft.fail = "all"
    newer = P.parse({"rules": [{"from": ["*"], "to": ["*"], "ports": ["icmp"]}]})
    fw.sync(newer, 2, ME, members(ME, OPS))
    assert fw.state == FAILED and "Operation not permitted" in fw.error
    assert not fw.closed and len(nft.texts) == 1       # the old table is what is in force
    nft.fail = None
    fw.retry()
    assert fw.state == APPLIED and "meta l4proto icmp" in nft.texts[-1]


def test_no_rules_in_force_is_closed_never_open(nft):
    nft.fail = "all"
    fw = Firewall("wg0", nft)
    fw.sync(POLICY, 1, ME, members(ME, OPS))
    assert fw.state == CLOSED and fw.closed
    nft.fail = None
    fw.update(POLICY, 2, [("k3", DB)], ME)              # any change retries in full
    assert fw.state == APPLIED and not fw.closed


def test_no_policy_looks_for_a_leftover_table_only_where_one_was_loaded(nft, tmp_path):
    path = tmp_path / "wg0-policy.json"
    fw = Firewall("wg0", nft, path)
    fw.sync(None, None, ME, members(ME))
    assert nft.texts == []                       # no earlier run loaded a table
    path.write_text(json.dumps({"state": "applied", "table": "apexmesh_wg0"}))
    fw = Firewall("wg0", nft, path)
    assert fw.leftover
    fw.sync(None, None, ME, members(ME))
    assert nft.texts == [nftext.removal("wg0")] and fw.state == NONE


def test_a_policy_change_between_the_same_groups_keeps_the_sets(nft):
    fw = Firewall("wg0", nft)
    fw.sync(POLICY, 1, ME, members(ME, OPS, DB))
    contents = fw.contents
    more_ports = P.parse({"rules": [{"from": ["tag:ops"], "to": ["tag:servers"],
                                     "ports": ["tcp/22", "tcp/443"]}]})
    joined = P.Member("k4", "10.0.0.4", "new", frozenset({"ops"}))
    fw.update(more_ports, 2, [("k4", joined)], ME)      # with a membership change at once
    assert fw.contents is contents and fw.state == APPLIED
    assert "tcp dport { 22, 443 }" in nft.texts[-1]
    assert "elements = { 10.0.0.1, 10.0.0.4 }" in nft.texts[-1]
    # only the description changed: the same plan, nothing to load
    count = len(nft.texts)
    described = P.parse({"rules": [{**more_ports.rules[0].to_dict(), "description": "x"}]})
    fw.update(described, 3, [], ME)
    assert len(nft.texts) == count and fw.status()["rules"][0].endswith("(x)")
    # other groups: the sets are built again
    other = P.parse({"rules": [{"from": ["db"], "to": ["*"]}]})
    fw.update(other, 4, [], ME)
    assert fw.contents is not contents and "set node.db_4 { type ipv4_addr; elements = { " \
        "10.0.0.3 } }" in nft.texts[-1]

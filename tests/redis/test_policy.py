"""Zone policies against a real Redis: stored with their change (one message on the zone
channel, in revision order), refused whole when invalid, in the agent's snapshot; the
REST API (set, show, delete, test) and node tags."""
from __future__ import annotations

import json
import time

import pytest

from controltower.acl import AgentCredentials
from ipam.policies import Policies
from wire import messages
from wire import snapshot as snapshots
from wire.policy import parse
from wire.proof import generate_private_key, public_key_of

OPS_SSH = {"rules": [{"from": ["tag:ops"], "to": ["tag:servers"], "ports": ["tcp/22", "icmp"]}]}


def listen(store, zone="default"):
    p = store.redis.pubsub(ignore_subscribe_messages=True)
    p.subscribe(store.keys.updates(zone))
    while p.get_message(timeout=0.2) is not None:
        pass
    return p


def next_update(p, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = p.get_message(timeout=0.2)
        if msg is not None:
            return msg["data"], messages.parse_update(msg["data"])
    raise AssertionError("no zone update")


def test_a_policy_change_is_one_message_and_rides_the_revisions(store):
    policies = Policies(store)
    p = listen(store)
    before = store.snapshot("default").rev
    stored, warnings = policies.set("default", OPS_SSH)
    assert stored.rev == before + 1 and stored.policy == parse(OPS_SSH)
    assert warnings == ["tag:ops is on no node of the zone", "tag:servers is on no node of the zone"]
    raw, update = next_update(p)
    assert (update.since, update.rev) == (before, before + 1)
    [change] = update.changes
    assert change.op == "policy" and change.policy == parse(OPS_SSH)
    assert len(raw) < 300                    # the document's size, not the zone's
    # the same document again changes nothing; deleting logs one change with no policy
    assert policies.set("default", json.dumps(OPS_SSH))[0].rev == stored.rev
    assert policies.delete("default") == before + 2
    _, update = next_update(p)
    assert update.changes[0].op == "policy" and update.changes[0].policy is None
    assert policies.get("default") is None
    assert policies.delete("default") == before + 2     # nothing to delete: no change


def test_an_invalid_policy_is_refused_whole_and_the_old_one_stays(store):
    policies = Policies(store)
    stored, _ = policies.set("default", OPS_SSH)
    rev = store.snapshot("default").rev
    with pytest.raises(Exception) as caught:
        policies.set("default", {"rules": [OPS_SSH["rules"][0], {"from": ["tag:x"], "to": []}]})
    assert "rule 1 to: must be a list" in str(caught.value)
    assert policies.get("default") == stored and store.snapshot("default").rev == rev


def test_the_snapshot_carries_the_policy_and_zone_deletion_removes_it(store):
    store.create_zone("zone-blue", "10.140.0.0/20")
    Policies(store).set("zone-blue", OPS_SSH)
    read = snapshots.Read("zone-blue", policy=True)
    with store.redis.pipeline(transaction=True) as pipe:
        snapshots.queue(pipe, snapshots.commands(store.keys, read))
        snap = snapshots.parse(read, pipe.execute())
    assert json.loads(snap.policy) == {"rev": snap.rev, "policy": OPS_SSH}
    store.delete_zone("zone-blue", force=True)
    assert not store.redis.exists(store.keys.policy("zone-blue"))


@pytest.fixture
def enrolled(store, client):
    """Three enrolled, registered nodes of the default zone: laptop (ops), web (servers),
    db (no tag), by public key."""
    creds = AgentCredentials(store.redis, store.keys)
    creds.set("default", "zone-secret-of-the-test")
    out = {}
    for name, tags in (("laptop", ["ops"]), ("web", ["servers"]), ("db", [])):
        key = public_key_of(generate_private_key())
        node = store.run(creds.registry.enroll_call("default", "zone", key, "0" * 64, name))
        if tags:
            creds.registry.update_node("default", node, tags=tuple(tags))
        store.run(store.enrolled_register_call(store.get_zone("default"), key, listen_port=51820,
                                               session="s"))
        out[name] = key
    store.flush("default")
    return out


def test_rest_set_show_test_delete(client, enrolled):
    bad = client.put("/zones/default/policy", json={"rules": [
        {"from": ["tag:ops"], "to": ["tag:servers"], "ports": ["tcp/99999"]}, {"to": ["x"]}]})
    assert bad.status_code == 400
    assert bad.json["problems"] == [
        {"Rule": 0, "Field": "ports[0]", "Message": "'tcp/99999': ports are 1-65535"},
        {"Rule": 1, "Field": "from", "Message": "is required"}]
    assert client.get("/zones/default/policy").json["Policy"] is None
    assert client.put("/zones/default/policy", data="{").status_code == 400
    ok = client.put("/zones/default/policy", json={"rules": [
        *OPS_SSH["rules"], {"from": ["tag:ghost"], "to": ["web"], "ports": ["udp/53"]}]})
    assert ok.status_code == 200, ok.json
    assert ok.json["Warnings"] == ["tag:ghost is on no node of the zone"]
    shown = client.get("/zones/default/policy").json
    assert shown["Revision"] == ok.json["Revision"] and len(shown["Policy"]["rules"]) == 2

    def test(src, dst, port):
        r = client.get("/zones/default/policy/test", query_string={"from": src, "to": dst,
                                                                    "port": port})
        assert r.status_code == 200, r.json
        return r.json["Allow"], r.json["Rule"]
    assert test("laptop", "web", "tcp/22") == (True, 0)
    assert test("laptop", "web", "tcp/23") == (False, None)
    assert test("web", "laptop", "tcp/22") == (False, None)
    assert test(enrolled["laptop"], "web", "icmp") == (True, 0)
    assert test("db", "web", "tcp/22") == (False, None)
    assert client.get("/zones/default/policy/test?from=laptop&to=web&port=tcp").status_code == 400
    assert client.get("/zones/default/policy/test?from=nobody&to=web&port=tcp/1").status_code == 400
    assert client.get("/zones/nozone/policy").status_code == 404
    deleted = client.delete("/zones/default/policy").json
    assert deleted["Deleted"] is True and deleted["Revision"] > shown["Revision"]
    assert test("db", "web", "tcp/22") == (True, None)


def test_tags_are_set_by_rest_and_reach_the_zone_as_one_upsert(client, store, enrolled):
    p = listen(store)
    r = client.put("/peers/db/tags", json={"Tags": ["tag:ops", "db"]})
    assert r.status_code == 200, r.json
    assert r.json["Tags"] == ["db", "ops"]
    _, update = next_update(p)
    [change] = update.changes
    assert change.op == "upsert" and change.peer.key == enrolled["db"]
    assert change.peer.tags == ("db", "ops")
    listed = client.get(f"/peers/{enrolled['db']}").json
    assert listed["Tags"] == ["db", "ops"]
    assert client.put("/peers/db/tags", json={"Tags": ["Bad Tag"]}).status_code == 400
    assert client.put("/peers/db/tags", json={"Tags": "ops"}).status_code == 400
    assert client.put("/peers/nobody/tags", json={"Tags": []}).status_code == 404
    assert client.get(f"/peers/{enrolled['db']}").json["Tags"] == ["db", "ops"]


def test_nodes_rule_states_show_in_the_policy_the_peer_and_metrics(client, store, enrolled):
    client.put("/zones/default/policy", json=OPS_SSH)
    rev = client.get("/zones/default/policy").json["Revision"]
    states = {"laptop": {"rev": rev, "state": "applied", "error": ""},
              "web": {"rev": rev - 1, "state": "applied", "error": ""},
              "db": {"rev": rev - 1, "state": "failed", "error": "nft: Operation not permitted"}}
    for name, state in states.items():
        store.run(store.heartbeat_call("default", enrolled[name], "s", policy=state))
    nodes = client.get("/zones/default/policy").json["Nodes"]
    assert nodes["Counts"] == {"applied": 1, "behind": 1, "failed": 1, "closed": 0, "none": 0}
    assert {(n["PublicKey"], n["State"]) for n in nodes["NotApplying"]} == {
        (enrolled["web"], "behind"), (enrolled["db"], "failed")}
    shown = client.get(f"/peers/{enrolled['db']}").json["Policy"]
    assert shown == {"State": "failed", "Revision": rev - 1,
                     "Error": "nft: Operation not permitted"}
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'controltower_policy_nodes{state="failed",zone="default"} 1.0' in metrics
    assert 'controltower_policy_nodes{state="behind",zone="default"} 1.0' in metrics
    # a removed node's state goes with it
    assert client.delete(f"/peers/{enrolled['db']}").status_code == 200
    assert not store.redis.hexists(store.keys.fwstate("default"), enrolled["db"])

"""Bad input to what identity added to the REST API (join keys, zone settings, route
approval, names): a clear 4xx, and nothing written, not even in part (issue 15, the class
of items 2 and 3)."""
from __future__ import annotations

import json

import pytest

from controltower.acl import AgentCredentials
from tests.redisstate import refused_unchanged, state
from ipam.store import ZoneStore
from wire.keys import Keys
from wire.proof import generate_private_key, public_key_of

KEY_A, KEY_B = (public_key_of(generate_private_key()) for _ in range(2))


@pytest.fixture
def app_config():
    return {"AGENT_ACL": True}


@pytest.fixture
def world(app, client, redis_client):
    """Nodes a and b enrolled in the default zone; b routes 172.24.0.0/24 (approved), a
    announces it too (pending)."""
    store, creds = ZoneStore(redis_client), AgentCredentials(redis_client, Keys())
    creds.set("default", "the-zone-secret-of-this-test")
    zone = store.get_zone("default")
    for key, name in ((KEY_B, "b"), (KEY_A, "a")):
        store.run(creds.registry.enroll_call("default", "zone", key, "0" * 64, name))
        store.run(store.enrolled_register_call(zone, key, listen_port=51820, session=name,
                                               child_prefixes=["172.24.0.0/24"]))
        if name == "b":
            assert client.post("/peers/b/routes", json={"Approve": ["172.24.0.0/24"]}).status_code == 200
    return store


TOO_MANY = json.dumps([f"172.30.{n}.0/24" for n in range(65)])
BAD = [
    ("POST", "/zones/default/join-keys", '{"ExpiresIn": NaN}', "not valid JSON"),
    ("POST", "/zones/default/join-keys", '{"ExpiresIn": Infinity}', "not valid JSON"),
    ("POST", "/zones/default/join-keys", '{"Uses": 100000000000000000000000}', "uses must be"),
    ("POST", "/zones/default/join-keys", '{"Uses": 2, "Reusable": true}', "Reusable or Uses"),
    ("POST", "/zones/default/join-keys", '{"Tags": ["\\ud800"]}', "not valid Unicode"),
    ("POST", "/zones/default/join-keys", '{"Tags": [["x"]]}', "a tag"),
    ("POST", "/zones/default/join-keys", '{"Tags": ["Not A Label"]}', "a tag"),
    ("POST", "/zones/default/join-keys", '{"Routes": [5]}', "routes must be"),
    ("POST", "/zones/default/join-keys", '{"Routes": ["::/0"]}', "default route"),
    ("POST", "/zones/default/join-keys", '{"Routes": ["64.0.0.0/2"]}', "loopback"),
    ("POST", "/zones/default/join-keys", '{"Routes": ["10.200.0.0/24"]}', "zone's own CIDR"),
    ("POST", "/zones/default/join-keys", '{"Routes": ' + TOO_MANY + "}", "at most 64"),
    ("POST", "/zones/default/join-keys", '{"Description": "' + "x" * 300 + '"}', "256"),
    ("POST", "/zones/default/join-keys", '{"Ephemeral": true, "EphemeralAfter": 1}', "ephemeral"),
    ("POST", "/zones/nozone/join-keys", "{}", "does not exist"),
    ("DELETE", "/zones/default/join-keys/nothex", "", "12 hex"),
    ("PATCH", "/zones/default", '{"KeyExpiryDays": NaN}', "not valid JSON"),
    ("PATCH", "/zones/default", '{"KeyExpiryDays": 0.00001}', "1 minute to 10 years"),
    ("PATCH", "/zones/default", '{"KeyExpiryDays": 1e300}', "1 minute to 10 years"),
    ("PATCH", "/zones/default", '{"ZoneSecret": "off"}', "ZoneSecret must be a bool"),
    # a valid setting beside a bad one: neither is applied
    ("PATCH", "/zones/default", '{"ZoneSecret": false, "AutoApprove": ["nonsense"]}', "child prefix"),
    ("PATCH", "/zones/default", '{"ZoneSecret": false, "AutoApprove": [1]}', "AutoApprove must be"),
    ("PATCH", "/zones/default", '{"ZoneSecret": false, "KeyExpiryDays": -1}', "1 minute"),
    ("PATCH", "/zones/default", '{"AutoApprove": ' + TOO_MANY + "}", "at most 64"),
    ("POST", "/peers/a/routes", '{"Approve": [5]}', "lists of prefixes"),
    ("POST", "/peers/a/routes", '{"Approve": ["x"]}', "child prefix"),
    ("POST", "/peers/a/routes", '{"Approve": ["::/0"]}', "default route"),
    ("POST", "/peers/a/routes", '{"Approve": ["224.0.0.0/24"]}', "multicast"),
    ("POST", "/peers/a/routes", '{"Revoke": "172.24.0.0/24"}', "Revoke must be a list"),
    ("POST", "/peers/a/routes", '{"Approve": ' + TOO_MANY + "}", "at most 64"),
    ("POST", "/peers/Not_A_Name/routes", '{"Approve": []}', "a node name"),
    ("GET", "/peers/a?zone=bad%20zone", "", "zone name"),
    ("POST", "/peers/a/renew", "", "has no key expiry"),
]


@pytest.mark.parametrize("method, path, body, words", BAD, ids=[f"{m} {p} {b[:40]}" for m, p, b, _ in BAD])
def test_bad_input_is_a_clear_4xx_and_changes_nothing(world, client, redis_client,
                                                      method, path, body, words):
    refused_unchanged(client, redis_client, method, path, body, words)


def test_an_approval_another_node_holds_is_refused_and_not_kept(world, client, redis_client):
    """a announces what b routes: approving it for a is a 409, and the approval is not
    stored (b releasing the prefix later must not make a route it unasked)."""
    before = state(redis_client)
    answer = client.post("/peers/a/routes", json={"Approve": ["172.24.0.0/24"]})
    assert answer.status_code == 409, answer.get_json()
    assert state(redis_client) == before


def test_approvals_are_kept_in_canonical_form(world, client):
    """'FD00:0::/64' and 'fd00::/64' are one prefix: the approval matches what the node
    announces."""
    answer = client.post("/peers/a/routes", json={"Approve": ["FD00:0::/64"]})
    assert answer.status_code == 200 and answer.get_json()["Approved"] == ["fd00::/64"]


def test_auto_approval_leaves_a_held_prefix_pending(world, client):
    """A range covering a prefix another node routes: the setting is applied, that prefix
    stays pending (no 409 after half the nodes were re-registered)."""
    answer = client.patch("/zones/default", json={"AutoApprove": ["172.16.0.0/12"]})
    assert answer.status_code == 200 and answer.get_json()["AutoApprove"] == ["172.16.0.0/12"]
    rows = client.get("/zones/default/routes").get_json()
    assert {(r["Name"], r["State"]) for r in rows} == {("b", "approved"), ("a", "pending")}

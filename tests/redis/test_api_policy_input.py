"""Bad input to the policy routes (PUT/GET/DELETE /zones/<zone>/policy, .../policy/test,
PUT /peers/<key>/tags): a clear 4xx, and nothing written, not even in part; the policy in
force stays (issue 16 under issue 15's rules)."""
from __future__ import annotations

import pytest

from controltower.acl import AgentCredentials
from ipam.store import ZoneStore
from tests.redisstate import refused_unchanged, state
from wire.keys import Keys
from wire.proof import generate_private_key, public_key_of

GOOD = {"rules": [{"from": ["a"], "to": ["b"], "ports": ["tcp/22"]}]}
DEEP = '{"rules": ' + "[" * 30_000 + "]" * 30_000 + "}"
BAD = [
    ("PUT", "/zones/default/policy", '{"rules": [{"from": [NaN], "to": ["*"]}]}', "not valid JSON"),
    ("PUT", "/zones/default/policy", '{"rules": [], "x": -Infinity}', "not valid JSON"),
    ("PUT", "/zones/default/policy", "{", "not valid JSON"),
    ("PUT", "/zones/default/policy", DEEP, "nested too deeply"),
    ("PUT", "/zones/default/policy", "[]", "must be an object"),
    ("PUT", "/zones/default/policy", '{"rules": [{"from": ["*"], "to": ["*"], '
                                     '"description": "\\ud800"}]}', "not valid Unicode"),
    ("PUT", "/zones/default/policy", '{"rules": [{"from": ["127.0.0.1"], "to": ["*"]}]}',
     "loopback"),
    ("PUT", "/zones/default/policy", '{"rules": [{"from": ["fe80::/64"], "to": ["*"]}]}',
     "link-local"),
    ("PUT", "/zones/default/policy", '{"rules": [{"from": ["10.0.0.1/8"], "to": ["*"]}]}',
     "host bits"),
    # a valid rule beside a bad one: neither is stored
    ("PUT", "/zones/default/policy", '{"rules": [{"from": ["*"], "to": ["*"]}, {"from": ["*"]}]}',
     "rule 1 to: is required"),
    ("PUT", "/zones/default/policy", '{"rules": [{"from": ["' + "x" * 5000 + '"], "to": ["*"]}]}',
     "..."),
    ("PUT", "/zones/nozone/policy", '{"rules": []}', "does not exist"),
    ("DELETE", "/zones/nozone/policy", "", "does not exist"),
    ("GET", "/zones/default/policy/test?from=a&to=b&port=tcp/0", "", "ports are 1-65535"),
    ("GET", "/zones/default/policy/test?from=a&to=b", "", "give port"),
    ("PUT", "/peers/a/tags", '{"Tags": ["\\ud800"]}', "not valid Unicode"),
    ("PUT", "/peers/a/tags", '{"Tags": ["Not A Label"]}', "a tag"),
    ("PUT", "/peers/a/tags", '{"Tags": NaN}', "not valid JSON"),
    ("PUT", "/peers/a/tags", '{"Tags": ' + str([f"t{n}" for n in range(33)]).replace("'", '"')
     + "}", "at most 32"),
    ("PUT", "/peers/a/tags", '{"Tags": [], "Routes": []}', "unknown fields"),
    ("PUT", "/peers/a/tags", "{}", "Tags is required"),
    ("PUT", "/peers/nobody/tags", '{"Tags": []}', "nobody"),
]


@pytest.fixture
def app_config():
    return {"AGENT_ACL": True}


@pytest.fixture
def with_policy(app, client, redis_client):
    """Nodes a and b enrolled and registered in the default zone, and a policy in force."""
    store, creds = ZoneStore(redis_client), AgentCredentials(redis_client, Keys())
    creds.set("default", "the-zone-secret-of-this-test")
    for name in ("a", "b"):
        key = public_key_of(generate_private_key())
        store.run(creds.registry.enroll_call("default", "zone", key, "0" * 64, name))
        store.run(store.enrolled_register_call(store.get_zone("default"), key,
                                               listen_port=51820, session=name))
    assert client.put("/zones/default/policy", json=GOOD).status_code == 200
    return store


@pytest.mark.parametrize("method, path, body, words", BAD,
                         ids=[f"{m} {p} {b[:40]}" for m, p, b, _ in BAD])
def test_bad_policy_input_is_a_clear_4xx_and_changes_nothing(with_policy, client, redis_client,
                                                             method, path, body, words):
    refused_unchanged(client, redis_client, method, path, body, words)
    assert client.get("/zones/default/policy").get_json()["Policy"] == GOOD


def test_a_policy_over_64_kib_is_a_413_and_changes_nothing(with_policy, client, redis_client):
    before = state(redis_client)
    rules = [{"from": ["a"], "to": ["b"], "ports": [f"tcp/{n + 1}"]} for n in range(2000)]
    answer = client.put("/zones/default/policy", json={"rules": rules})
    assert answer.status_code == 413 and "error" in answer.get_json()
    assert state(redis_client) == before


def test_tags_of_a_node_that_was_not_enrolled_are_refused(with_policy, client, redis_client):
    """A node registered without enrollment (the seed's flow) has no record to tag: 409."""
    key = public_key_of(generate_private_key())
    with_policy.register("default", key, listen_port=1, session="s")
    before = state(redis_client)
    answer = client.put(f"/peers/{key}/tags", json={"Tags": ["ops"]})
    assert answer.status_code == 409 and "not enrolled" in answer.get_json()["error"]
    assert state(redis_client) == before


def test_tags_are_not_kept_when_the_zone_cannot_be_told(with_policy, app, client, redis_client,
                                                        monkeypatch):
    """The record and what the zone's agents heard stay equal: a re-registration that
    fails (here: made to raise) takes the new tags back."""
    def fail(zone_name, peer):
        raise ConnectionError("Redis went away")
    monkeypatch.setattr(app.extensions["nodes"], "reregister", fail)
    before = state(redis_client)
    answer = client.put("/peers/a/tags", json={"Tags": ["ops"]})
    assert answer.status_code >= 500
    assert state(redis_client) == before

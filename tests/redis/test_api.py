"""The REST API through Flask's test client against a real Redis."""
from __future__ import annotations

import urllib.parse

import pytest

from wire.proof import generate_private_key, public_key_of


def add_node(store, zone="default", **kw):
    key = public_key_of(generate_private_key())
    store.register(zone, key, listen_port=51820, session="s", **kw)
    return key


def test_seed_curl_shapes(client, store):
    r = client.post("/zone", json={"Name": "zone-blue", "Description": "Tenant - Zone Blue",
                                   "CIDR": "10.140.0.0/20"})
    assert r.status_code == 201
    assert r.json == {"Name": "zone-blue", "Description": "Tenant - Zone Blue",
                      "IpCidr": "10.140.0.0/20"}
    zones = client.get("/zones").json
    assert {"Name": "default", "Description": "Default zone", "IpCidr": "10.200.0.0/20"} in zones
    key = add_node(store, "zone-blue", endpoint="203.0.113.4:51820", child_prefixes=["172.24.0.0/24"])
    peers = client.get("/peers").json
    assert len(peers) == 1
    p = peers[0]
    assert (p["PublicKey"], p["EndpointIP"], p["AllowedIPs"], p["Zone"]) == (
        key, "203.0.113.4:51820", "10.140.0.1/32,172.24.0.0/24", "zone-blue")
    assert p["NodeAddress"] == "10.140.0.1" and p["ChildPrefix"] == ["172.24.0.0/24"]
    assert p["Online"] is True and p["LastSeen"]
    assert client.get("/peers/" + key).json == p
    assert client.get("/peers/" + urllib.parse.quote(key, safe="")).json == p
    assert client.get("/peers?zone=default").json == []
    leases = client.get("/ipam/leases/zone-blue").json
    assert leases == [{"Cidr": "10.140.0.0/20", "IPs": {
        "10.140.0.0": True, "10.140.0.1": True, "10.140.15.255": True}}]
    assert client.get("/ipam/leases/default").json[0]["Cidr"] == "10.200.0.0/20"


@pytest.mark.parametrize("body, message", [
    ({"Name": "z", "CIDR": "10.0.0.1/24"}, "host bits set"),
    ({"Name": "z", "CIDR": "banana/8"}, "not a valid CIDR"),
    ({"Name": "z", "CIDR": 10}, "CIDR must be a str"),
    ({"Name": "z"}, "CIDR is required"),
    ({"Name": "z", "CIDR": "10.0.0.0/24", "Extra": 1}, "unknown fields: Extra"),
    ([1, 2], "must be a JSON object"),
    ({"Name": "a b", "CIDR": "10.0.0.0/24"}, "zone name"),
    ({"Name": "z", "CIDR": "0.0.0.0/0"}, "'this network' addresses"),      # issue 15, item 4
    ({"Name": "z", "CIDR": "127.0.0.0/8"}, "loopback"),
    ({"Name": "z", "CIDR": "224.0.0.0/4"}, "multicast"),
    ({"Name": "z", "CIDR": "::/0"}, "unspecified"),
    ({"Name": "z", "CIDR": "fe80::/64"}, "link-local"),
])
def test_bad_zone_input_is_400_and_writes_nothing(client, body, message):
    r = client.post("/zone", json=body)
    assert r.status_code == 400 and message in r.json["error"]
    assert [z["Name"] for z in client.get("/zones").json] == ["default"]


def test_malformed_json_is_400(client):
    r = client.post("/zone", data="{nope", content_type="application/json")
    assert r.status_code == 400 and "JSON object" in r.json["error"]


def test_conflicts_and_not_found(client, store):
    assert client.post("/zone", json={"Name": "default", "CIDR": "10.0.0.0/24"}).status_code == 409
    assert client.get("/zones/nope").status_code == 404
    assert client.get("/ipam/leases/nope").json == {"error": "zone nope does not exist"}
    assert client.get("/peers?zone=nope").status_code == 404
    missing = public_key_of(generate_private_key())
    assert client.get("/peers/" + missing).status_code == 404
    assert client.get("/peers/not-a-key").json == {"error": "no node is named not-a-key"}
    assert client.get("/peers/Not_a key!").status_code == 400     # neither a key nor a name
    assert client.get("/no/such/route").status_code == 404
    assert client.put("/zones").status_code == 405


def test_delete_zone_and_peer(client, store):
    client.post("/zone", json={"Name": "zone-red", "CIDR": "172.20.0.0/20"})
    key = add_node(store, "zone-red", child_prefixes=["192.168.50.0/24"])
    r = client.delete("/zones/zone-red")
    assert r.status_code == 409 and "still has 1 nodes" in r.json["error"]
    r = client.delete("/peers/" + key)
    assert r.json["ReleasedAddress"] == "172.20.0.1"
    assert client.get("/ipam/leases/zone-red").json[0]["IPs"] == {
        "172.20.0.0": True, "172.20.15.255": True}
    assert client.delete("/zones/zone-red").status_code == 200
    assert client.get("/zones/zone-red").status_code == 404
    add_node(store)
    assert client.delete("/zones/default?force=true").status_code == 200


def test_health(client, redis_proc):
    assert client.get("/health").json == {"status": "ok"}
    redis_proc.stop()
    r = client.get("/health")
    assert r.status_code == 503 and "unreachable" in r.json["error"]


def test_keys_starting_with_a_slash(client, store):
    key = "/" + public_key_of(generate_private_key())[1:]
    store.register("default", key, listen_port=51820, session="s")
    assert client.get("/peers/" + key).json["PublicKey"] == key
    assert client.get("/peers/%2F" + key[1:]).json["PublicKey"] == key
    assert client.delete("/peers/" + key).json["Deleted"] == key

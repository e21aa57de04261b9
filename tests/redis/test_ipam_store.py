"""The zone store against a real redis-server."""
from __future__ import annotations

import ipaddress
import json
import time

import pytest

from ipam.calls import Call, queue, settle_all
from ipam.store import Guard, order_score
from wire.errors import Conflict, Forbidden, InvalidInput, NotFound, Superseded
from wire.proof import generate_private_key, public_key_of


def new_key() -> str:
    return public_key_of(generate_private_key())


def register(store, zone="default", key=None, **kw):
    kw.setdefault("listen_port", 51820)
    kw.setdefault("session", "s1")
    return store.register(zone, key or new_key(), **kw)


def test_default_zone_exists_with_network_address(store):
    zone = store.get_zone("default")
    assert zone.cidr == "10.200.0.0/20"
    assert [z.name for z in store.list_zones()] == ["default"]


def test_create_zone_rejects_duplicates_and_bad_cidrs(store):
    store.create_zone("zone-blue", "10.140.0.0/20", "Tenant - Zone Blue")
    with pytest.raises(Conflict, match="already exists"):
        store.create_zone("zone-blue", "10.150.0.0/20")
    with pytest.raises(InvalidInput, match="host bits set; did you mean 10.200.0.0/20"):
        store.create_zone("z2", "10.200.1.0/20")
    with pytest.raises(InvalidInput, match="not a valid CIDR"):
        store.create_zone("z3", "10.300.0.0/20")
    with pytest.raises(InvalidInput, match="zone name"):
        store.create_zone("bad{name}", "10.0.0.0/24")
    assert sorted(z.name for z in store.list_zones()) == ["default", "zone-blue"]


def test_addresses_are_sequential_unique_and_skip_network(store):
    store.create_zone("small", "10.9.0.0/29")  # 6 usable addresses
    got = [register(store, "small").address for _ in range(6)]
    assert got == [f"10.9.0.{i}" for i in range(1, 7)]
    with pytest.raises(Conflict, match="no free address"):
        register(store, "small")


def test_reregistration_keeps_address_and_release_returns_it(store):
    key = new_key()
    first = register(store, key=key, endpoint="203.0.113.5:51820")
    again = register(store, key=key, endpoint="198.51.100.7:40000", session="s2")
    assert again.address == first.address
    assert again.rev == first.rev + 1
    unchanged = register(store, key=key, endpoint="198.51.100.7:40000", session="s2")
    assert unchanged.rev == again.rev
    store.remove_peer("default", key, "deleted")
    other = register(store)
    assert other.address == first.address


def test_requested_ip_granted_refused_and_taken_from_expired(store):
    holder = new_key()
    got = register(store, key=holder, request_ip="10.200.0.50", now=1000.0)
    assert got.address == "10.200.0.50"
    with pytest.raises(Conflict, match="10.200.0.50 is held by another node"):
        register(store, request_ip="10.200.0.50", now=1030.0)
    with pytest.raises(InvalidInput, match="not inside the zone"):
        register(store, request_ip="10.201.0.1")
    with pytest.raises(InvalidInput, match="broadcast"):
        register(store, request_ip="10.200.15.255")
    thief = new_key()
    taken = register(store, key=thief, request_ip="10.200.0.50", now=1061.0)
    assert taken.address == "10.200.0.50"
    peers = {p.key for p in store.peers("default")}
    assert holder not in peers and thief in peers
    assert store.leases("default") == {"10.200.0.50": thief}


def test_child_prefixes_conflict_and_release(store):
    a, b = new_key(), new_key()
    register(store, key=a, child_prefixes=["172.24.0.0/24"])
    with pytest.raises(Conflict, match="172.24.0.0/25 overlaps 172.24.0.0/24"):
        register(store, key=b, child_prefixes=["172.24.0.0/25"])
    assert b not in {p.key for p in store.peers("default")}  # nothing half-written
    with pytest.raises(InvalidInput, match="overlaps the zone's own CIDR"):
        register(store, key=b, child_prefixes=["10.200.4.0/24"])
    register(store, key=a, child_prefixes=[])  # re-register without it releases it
    register(store, key=b, child_prefixes=["172.24.0.0/25"])
    store.create_zone("other", "10.200.0.0/20")  # overlapping zones are fine
    register(store, "other", child_prefixes=["172.24.0.0/24"])


def test_ipv6_zone(store):
    store.create_zone("v6", "fd00:1::/64")
    got = register(store, "v6", child_prefixes=["fd00:2::/64"])
    assert got.address == "fd00:1::1" and got.prefix_len == 64
    with pytest.raises(Conflict):
        register(store, "v6", child_prefixes=["fd00:2::/80"])


def test_changes_are_published_in_order_and_coalesced(store, redis_client):
    pubsub = redis_client.pubsub()
    pubsub.subscribe(store.keys.updates("default"))
    pubsub.get_message(timeout=1)
    keys = [new_key() for _ in range(3)]
    for key in keys:
        register(store, key=key)
    store.remove_peer("default", keys[0], "left")
    assert store.flush("default") == 1
    msg = pubsub.get_message(timeout=2)
    update = json.loads(msg["data"])
    assert (update["since"], update["rev"]) == (0, 4)
    assert [c["op"] for c in update["changes"]] == ["upsert"] * 3 + ["remove"]
    assert update["changes"][3] == {"rev": 4, "op": "remove", "key": keys[0], "reason": "left"}
    assert store.flush("default") == 0
    snap = store.snapshot("default")
    assert snap.rev == 4 and set(snap.peers) == set(keys[1:])
    pubsub.close()


def test_heartbeat_session_and_expiry(store):
    key = new_key()
    register(store, key=key, session="one", now=1000.0)
    store.heartbeat("default", key, "one", now=1050.0)
    with pytest.raises(Superseded):
        store.heartbeat("default", key, "two")
    assert store.expire("default", now=1100.0) == []
    assert store.expire("default", now=1111.0) == [key]
    with pytest.raises(NotFound):
        store.heartbeat("default", key, "one")


def test_delete_zone_refuses_with_nodes_unless_forced(store):
    store.create_zone("zone-red", "172.20.0.0/20")
    register(store, "zone-red")
    with pytest.raises(Conflict, match="still has 1 nodes"):
        store.delete_zone("zone-red")
    store.delete_zone("zone-red", force=True)
    with pytest.raises(NotFound):
        store.get_zone("zone-red")
    assert not store.redis.keys("ct:{zone-red}:*")


def test_endpoint_update(store):
    key = new_key()
    register(store, key=key, session="s")
    rev = store.update_endpoint("default", key, "s", "192.0.2.9:5000", "cone")
    _, peer = store.find_peer(key)
    assert peer.endpoint == "192.0.2.9:5000" and peer.nat_type == "cone"
    assert store.update_endpoint("default", key, "s", "192.0.2.9:5000", "cone") == rev


def test_addresses_never_collide_across_free_and_cursor(store):
    store.create_zone("z", "10.1.0.0/24")
    keys = [new_key() for _ in range(20)]
    for key in keys:
        register(store, "z", key=key)
    for key in keys[::2]:
        store.remove_peer("z", key, "left")
    register(store, "z", request_ip="10.1.0.30")
    addrs = [register(store, "z").address for _ in range(15)]
    leases = store.leases("z")
    assert len(set(addrs)) == 15
    assert len(leases) == len(set(leases)) == 10 + 1 + 15
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.1.0.0/24") for a in leases)


# -- request order: a request older than the last applied one of its key changes nothing --

def test_order_score_compares_stream_entry_ids():
    assert float(order_score("1763781234567-0")) < float(order_score("1763781234567-1"))
    assert float(order_score("1763781234567-4095")) < float(order_score("1763781234568-0"))
    assert order_score("1763781234567-5000") == order_score("1763781234567-4095")  # capped


def test_older_register_is_ignored_and_answered_with_the_current_address(store):
    key = new_key()
    first = register(store, key=key, endpoint="203.0.113.5:51820", session="old",
                     order="1000-0")
    newer = register(store, key=key, endpoint="198.51.100.7:4000", session="new",
                     order="2000-0")
    again = register(store, key=key, endpoint="203.0.113.5:51820", session="old",
                     order="1000-0")
    assert again == newer and newer.address == first.address
    _, peer = store.find_peer(key)
    assert (peer.session, peer.endpoint) == ("new", "198.51.100.7:4000")
    # The same request again (a redelivery with nothing newer) is applied again: no change.
    assert register(store, key=key, endpoint="198.51.100.7:4000", session="new",
                    order="2000-0") == newer
    # Requests without an order (not from the request stream) are never ignored.
    assert register(store, key=key, session="admin").rev == newer.rev + 1


def test_older_endpoint_update_and_leave_are_ignored(store):
    key = new_key()
    register(store, key=key, session="s", order="1000-0")
    rev = store.update_endpoint("default", key, "s", "192.0.2.9:5000", None, order="3000-0")
    assert store.update_endpoint("default", key, "s", "192.0.2.1:1", None, order="2000-0") == rev
    assert store.remove_peer("default", key, "left", session="s", order="2500-0") == rev
    _, peer = store.find_peer(key)
    assert peer.endpoint == "192.0.2.9:5000"
    # An older request of a superseded session is ignored too, not refused.
    register(store, key=key, session="moved", order="4000-0")
    assert store.update_endpoint("default", key, "s", "192.0.2.1:1", None, order="3500-0") > rev
    with pytest.raises(Superseded):
        store.update_endpoint("default", key, "s", "192.0.2.1:1", None, order="5000-0")


def test_register_older_than_a_leave_does_not_bring_the_node_back(store):
    key, other = new_key(), new_key()
    got = register(store, key=key, session="s", order="1000-0")
    store.remove_peer("default", key, "left", session="s", order="2000-0")
    with pytest.raises(Conflict, match="a newer request of this node was handled already"):
        register(store, key=key, session="s", order="1000-0")
    assert key not in {p.key for p in store.peers("default")}
    assert register(store, key=other).address == got.address   # the address went back
    # A request after the leave registers the node again.
    assert register(store, key=key, session="s2", order="3000-0").address != got.address


def test_forget_orders_drops_only_old_ones(store, redis_client):
    old, recent = new_key(), new_key()
    register(store, key=old, order="1000-0")           # 1 s after the epoch
    register(store, key=recent, order=f"{int(time.time() * 1000)}-0")
    assert store.forget_orders(["default", "nothing-here"], time.time() - 600) == 1
    assert redis_client.zrange(store.keys.applied("default"), 0, -1) == [recent]
    # Forgotten: an old request of that key is applied again (it would be refused for
    # its timestamp long before reaching the store).
    assert register(store, key=old, session="x", order="999-0").address


def test_delete_zone_removes_the_request_orders(store, redis_client):
    store.create_zone("zone-red", "172.20.0.0/20")
    register(store, "zone-red", order="1000-0")
    store.delete_zone("zone-red", force=True)
    assert not redis_client.exists(store.keys.applied("zone-red"))


# -- calls in one pipeline (as the request worker sends them) -----------------------------

@pytest.fixture
def loaded(store):
    """The scripts loaded, as the request worker loads them when it starts."""
    store.scripts.load()
    return store


def pipeline(redis_client, calls):
    """One round trip of calls; each one's outcome."""
    with redis_client.pipeline(transaction=False) as pipe:
        for call in calls:
            queue(pipe, call)
        return settle_all(calls, pipe.execute(raise_on_error=False))


def test_calls_in_one_pipeline_settle_each_on_its_own(loaded, redis_client):
    store = loaded
    keys = [new_key() for _ in range(3)]
    zone = store.get_zone("default")
    calls = [store.register_call(zone, keys[0], listen_port=51820, session="s"),
             store.register_call(zone, keys[1], listen_port=51820, session="s",
                                 request_ip="10.200.0.1"),     # taken by the first
             store.heartbeat_call("default", keys[2], "s"),    # not registered
             store.register_call(zone, keys[2], listen_port=51820, session="s")]
    first, held, missing, last = pipeline(redis_client, calls)
    assert first.address == "10.200.0.1" and last.address == "10.200.0.2"
    assert isinstance(held, Conflict) and "is held by another node" in str(held)
    assert isinstance(missing, NotFound)


def test_calls_whose_scripts_redis_lost_come_back_with_their_scripts(store, redis_client):
    redis_client.script_flush()
    zone = store.get_zone("default")
    calls = [store.register_call(zone, new_key(), listen_port=51820, session="s")
             for _ in range(3)]
    again = pipeline(redis_client, calls)
    assert all(isinstance(call, Call) and call.reload for call in again)
    assert not store.peers("default")                  # nothing ran
    assert [a.address for a in pipeline(redis_client, again)] == [
        f"10.200.0.{i}" for i in (1, 2, 3)]


def test_an_ipv6_registration_takes_its_steps(loaded, redis_client):
    store = loaded
    store.create_zone("v6", "fd00:1::/64")
    call = store.register_call(store.get_zone("v6"), new_key(), listen_port=51820, session="s")
    steps = 0
    while isinstance(call, Call):
        [call] = pipeline(redis_client, [call])
        steps += 1
    assert call.address == "fd00:1::1" and steps == 3   # need, candidate, register


def test_an_endpoint_update_overtaken_between_read_and_write_reads_again(loaded, redis_client):
    store = loaded
    key = new_key()
    register(store, key=key, session="s")
    [write] = pipeline(redis_client, [store.endpoint_call("default", key, "s",
                                                          "192.0.2.9:5000", None)])
    store.update_endpoint("default", key, "s", "192.0.2.1:1", "cone")   # meanwhile
    [read] = pipeline(redis_client, [write])
    assert isinstance(read, Call)                     # the record changed: read again
    assert isinstance(rev := store.run(read), int)
    _, peer = store.find_peer(key)
    assert (peer.endpoint, peer.nat_type) == ("192.0.2.9:5000", None)
    assert int(redis_client.get(store.keys.rev("default"))) == rev


def test_publications_of_two_replicas_never_repeat_a_change(loaded, redis_client):
    """Two replicas read the same unpublished changes; the first to publish wins, the
    other reads again and publishes only what came since."""
    store = loaded
    pubsub = redis_client.pubsub()
    pubsub.subscribe(store.keys.updates("default"))
    pubsub.get_message(timeout=1)
    register(store)
    a, b = pipeline(redis_client, [store.flush_call("default"), store.flush_call("default")])
    register(store)
    assert pipeline(redis_client, [a]) == [1]
    [b_again] = pipeline(redis_client, [b])
    assert isinstance(b_again, Call)
    assert store.run(b_again) == 1
    got = [json.loads(pubsub.get_message(timeout=2)["data"]) for _ in range(2)]
    assert [(u["since"], u["rev"]) for u in got] == [(0, 1), (1, 2)]
    assert pubsub.get_message(timeout=0.2) is None
    pubsub.close()


def test_ipv4_addresses_come_from_the_script_itself(store, redis_client):
    store.create_zone("tiny", "10.9.0.0/30")           # 2 usable addresses
    a, b = register(store, "tiny"), register(store, "tiny", request_ip="10.9.0.2")
    assert (a.address, b.address) == ("10.9.0.1", "10.9.0.2")
    with pytest.raises(Conflict, match="no free address left"):
        register(store, "tiny")
    assert redis_client.get(store.keys.cursor("tiny")) == "2"   # skipped .2, not past the pool


def test_the_scripts_refuse_a_replayed_request_but_not_the_same_entry_again(store, redis_client):
    key = new_key()
    nonce = store.keys.nonce("default", key, "cd" * 8)
    zone = store.get_zone("default")
    first = store.run(store.register_call(zone, key, listen_port=51820, session="s",
                                          order="1000-0", guard=Guard(nonce, "1000-0", 120)))
    again = store.run(store.register_call(zone, key, listen_port=51820, session="s",
                                          order="1000-0", guard=Guard(nonce, "1000-0", 120)))
    assert again == first                         # a redelivery: answered again
    for call in (store.register_call(zone, key, listen_port=51820, session="s",
                                     order="2000-0", guard=Guard(nonce, "2000-0", 120)),
                 store.heartbeat_call("default", key, "s", guard=Guard(nonce, "2000-0", 120)),
                 store.remove_call("default", key, "left", session="s", order="2000-0",
                                   guard=Guard(nonce, "2000-0", 120)),
                 store.endpoint_call("default", key, "s", "192.0.2.1:1", None,
                                     order="2000-0", guard=Guard(nonce, "2000-0", 120))):
        with pytest.raises(Forbidden, match="replayed request refused"):
            store.run(call)
    assert redis_client.get(nonce) == "1000-0" and 0 < redis_client.ttl(nonce) <= 120
    _, peer = store.find_peer(key)
    assert peer.endpoint is None                  # nothing of the replays was applied

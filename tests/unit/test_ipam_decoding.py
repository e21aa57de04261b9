"""The store's pure side, without Redis: script replies decoded into results, refusals
and next steps (ipam/store.py, ipam/calls.py, ipam/refusals.py), and the protocol
messages the tower builds from what the scripts return (wire/messages.py)."""
from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from ipam.calls import Call, queue, settle, settle_all
from ipam.refusals import REFUSALS, UnexpectedStatus, refusal
from ipam.store import (ENDPOINT_ATTEMPTS, REGISTER_ATTEMPTS, Assignment, Guard, Zone,
                        ZoneStore, updates)
from wire import messages
from wire.errors import (CLASSES, Conflict, Forbidden, InvalidInput, MeshError, NotFound,
                         Superseded, classify)
from wire.messages import Peer

KEY = base64.b64encode(b"\xfb\xff\xbf" * 10 + b"\x00\x01").decode()   # "+/+/...": JSON
OTHER = base64.b64encode(bytes(range(32))).decode()                # writers may escape "/"
V4 = Zone("z4", "", "10.9.0.0/24", 0.0)
V6 = Zone("z6", "", "fd00:1::/64", 0.0)


@pytest.fixture(scope="module")
def store():
    # Never connected: building and decoding calls does no I/O.
    return ZoneStore(redis.Redis(port=1, decode_responses=True), expiry=60)


def argv(call: Call) -> list:
    """The ARGV of a one-script call."""
    [command] = call.commands
    assert command[0] == "EVALSHA"
    return list(command[3 + command[2]:])


def register(store, zone=V4, **kw) -> Call:
    kw.setdefault("listen_port", 51820)
    kw.setdefault("session", "s1")
    return store.register_call(zone, KEY, now=1000.0, **kw)


def decode(call: Call, *replies):
    """settle() of replies that are the call's own (its commands' replies)."""
    return settle(call, list(replies))


# -- the refusal table -------------------------------------------------------------------

def test_every_refusal_is_a_listed_domain_error_with_its_code():
    for status, (cls, _) in REFUSALS.items():
        assert issubclass(cls, MeshError), status
        assert any(issubclass(cls, listed) for listed in CLASSES if listed is not MeshError)
    exc = refusal("superseded")
    assert isinstance(exc, Superseded) and classify(exc) == (409, "superseded")
    assert classify(refusal("nozone", zone="z")) == (404, "not-found")


def test_an_unknown_status_is_a_bug_not_a_refusal():
    with pytest.raises(UnexpectedStatus, match="'bogus'"):
        refusal("bogus")
    outcome = decode(register(store=ZoneStore(redis.Redis(port=1))), ["bogus"])
    assert isinstance(outcome, UnexpectedStatus) and not isinstance(outcome, MeshError)


# -- register ----------------------------------------------------------------------------

def test_register_results(store):
    call = register(store)
    assert decode(call, ["ok", "10.9.0.7", 12]) == Assignment("10.9.0.7", 24, "10.9.0.0/24", 12)
    assert decode(call, ["stale", "10.9.0.3", 15]) == Assignment("10.9.0.3", 24,
                                                                   "10.9.0.0/24", 15)
    overtaken = decode(call, ["stale", "", 15])
    assert isinstance(overtaken, Conflict)
    assert str(overtaken) == "a newer request of this node was handled already"


@pytest.mark.parametrize("reply, cls, text", [
    (["nozone"], NotFound, "zone z4 does not exist"),
    (["full"], Conflict, "zone z4 has no free address left in 10.9.0.0/24"),
    (["held", OTHER, "955.5"], Conflict,
     "10.9.0.9 is held by another node (last seen 44s ago)"),
    (["prefix", "172.24.0.0/25", "172.24.0.0/24", OTHER], Conflict,
     "child prefix 172.24.0.0/25 overlaps 172.24.0.0/24, already used by another node "
     "in this zone"),
])
def test_register_refusals(store, reply, cls, text):
    outcome = decode(register(store, request_ip="10.9.0.9"), reply)
    assert type(outcome) is cls and str(outcome) == text


def test_register_sends_the_record_the_messages_module_builds(store):
    call = register(store, endpoint="203.0.113.5:51820", child_prefixes=["172.24.0.0/24"],
                    nat_type="cone", hostname="n1")
    args = argv(call)
    assert args[0] == KEY
    record = args[1] + "10.9.0.7" + args[2]
    assert record == messages.peer_record(Peer(
        KEY, "10.9.0.7", "203.0.113.5:51820", ("172.24.0.0/24",), 51820, "cone", "s1", "n1"))
    assert args[10] == str(int(V4.network.network_address))     # IPv4: the script picks


def test_register_bad_input_is_refused_before_any_call(store):
    with pytest.raises(InvalidInput, match="not inside the zone"):
        register(store, request_ip="10.10.0.1")
    with pytest.raises(InvalidInput, match="overlaps the zone's own CIDR"):
        register(store, child_prefixes=["10.9.0.0/25"])


def test_an_ipv6_register_takes_a_candidate_in_two_more_steps(store):
    first = register(store, V6)
    assert argv(first)[6] == "" and argv(first)[10] == ""
    candidate = decode(first, ["need"])
    assert isinstance(candidate, Call)
    [command] = candidate.commands
    assert command[3:5] == (store.keys.free("z6"), store.keys.cursor("z6"))
    again = decode(candidate, ["o", 5])
    assert isinstance(again, Call) and argv(again)[6] == "fd00:1::5"
    assert argv(decode(candidate, ["a", "fd00:1::2"]))[6] == "fd00:1::2"
    # The candidate was leased meanwhile: another candidate, then register again.
    assert isinstance(decode(again, ["retry"]), Call)
    full = decode(candidate, ["full"])
    assert isinstance(full, Conflict) and "no free address left in fd00:1::/64" in str(full)
    assert decode(again, ["ok", "fd00:1::5", 3]).address == "fd00:1::5"


def test_register_retries_are_bounded(store):
    call = register(store)
    for _ in range(REGISTER_ATTEMPTS - 1):
        call = decode(call, ["retry"])
        assert isinstance(call, Call) and argv(call)[6] == ""   # IPv4: no candidate
    exhausted = decode(call, ["retry"])
    assert isinstance(exhausted, Conflict)
    assert str(exhausted) == "could not find a free address in zone z4"


# -- heartbeat, leave, endpoint update ----------------------------------------------------

def test_heartbeat(store):
    call = store.heartbeat_call("z4", KEY, "s1", now=5.0)
    assert decode(call, ["ok"]) is None
    missing = decode(call, ["missing"])
    assert type(missing) is NotFound and str(missing) == "this node is not registered in zone z4"
    assert type(decode(call, ["superseded"])) is Superseded


def test_remove(store):
    call = store.remove_call("z4", KEY, "left", session="s1", order="1000-0")
    assert argv(call) == [KEY, "left", "s1", "", store.change_log_length, "1000.0"]
    assert decode(call, ["ok", 8]) == 8 and decode(call, ["stale", 7]) == 7
    assert decode(call, ["alive"]) is None
    assert str(decode(call, ["missing"])) == f"peer {KEY} is not registered in zone z4"
    assert type(decode(call, ["superseded"])) is Superseded


def test_endpoint_update_reads_then_compares_and_sets(store):
    peer = Peer(KEY, "10.9.0.7", "203.0.113.5:51820", (), 51820, "cone", "s1", "n1")
    stored = messages.peer_record(peer)
    read = store.endpoint_call("z4", KEY, "s1", "192.0.2.9:5000", None, now=7.0,
                               order="3000-0")
    assert [c[0] for c in read.commands] == ["HGET", "ZSCORE", "GET"]
    assert decode(read, stored, 4000.0, "9") == 9                    # newer applied: stale
    assert type(decode(read, None, None, "9")) is NotFound
    assert type(decode(read, messages.peer_record(replace(peer, session="s2")), None,
                       "9")) is Superseded
    write = decode(read, stored, 2000.0, "9")
    assert isinstance(write, Call)
    args = argv(write)
    assert args[:3] == [KEY, stored, messages.peer_record(
        replace(peer, endpoint="192.0.2.9:5000", nat_type=None))]
    assert decode(write, ["ok", 10]) == 10 and decode(write, ["stale", 9]) == 9
    again = decode(write, ["retry"])      # changed since the read: read again
    assert isinstance(again, Call) and again.commands == read.commands
    assert type(decode(write, ["missing"])) is NotFound


def test_endpoint_compare_and_set_is_bounded(store):
    stored = messages.peer_record(Peer(KEY, "10.9.0.7", session="s1"))
    read = store.endpoint_call("z4", KEY, "s1", "192.0.2.9:5000", None)
    for _ in range(ENDPOINT_ATTEMPTS - 1):
        read = decode(decode(read, stored, None, "1"), ["retry"])
        assert isinstance(read, Call)
    gave_up = decode(decode(read, stored, None, "1"), ["retry"])
    assert isinstance(gave_up, Conflict)
    assert str(gave_up) == "the peer record kept changing; try again"


def test_the_replay_guard_rides_with_each_requests_first_call(store):
    guard = Guard(store.keys.nonce("z4", KEY, "ab" * 8), "1000-0", 121)
    calls = {
        "register": register(store, guard=guard),
        "heartbeat": store.heartbeat_call("z4", KEY, "s1", guard=guard),
        "leave": store.remove_call("z4", KEY, "left", session="s1", guard=guard),
    }
    for name, call in calls.items():
        [command] = call.commands
        keys = command[3:3 + command[2]]
        assert keys[-1] == guard.key and argv(call)[-2:] == ["1000-0", 121], name
        replayed = decode(call, ["replayed"])
        assert type(replayed) is Forbidden and str(replayed) == "replayed request refused"
    # Without a guard (REST, tools) no nonce key is passed.
    assert store.heartbeat_call("z4", KEY, "s1").commands[0][2] == 2
    # The endpoint update checks it with its read: another entry holds the nonce.
    stored = messages.peer_record(Peer(KEY, "10.9.0.7", session="s1"))
    read = store.endpoint_call("z4", KEY, "s1", "192.0.2.9:5000", None, guard=guard)
    assert read.commands[0][:2] == ("SET", guard.key)
    assert type(decode(read, "999-0", stored, None, "3")) is Forbidden
    assert isinstance(decode(read, None, stored, None, "3"), Call)       # first use
    assert isinstance(decode(read, "1000-0", stored, None, "3"), Call)   # same entry again


# -- publication ---------------------------------------------------------------------------

def upsert_entry(rev: int, peer: Peer) -> list:
    return [f"{rev}-1", ["op", "upsert", "peer", messages.peer_record(peer)]]


def remove_entry(rev: int, key: str, reason: str = "left") -> list:
    return [f"{rev}-1", ["op", "remove", "key", key, "reason", reason]]


def test_flush_reads_then_publishes_what_python_built(store):
    peer = Peer(KEY, "10.9.0.7", "203.0.113.5:51820", ("172.24.0.0/24",), 51820, "cone",
                "s1", "n1")
    read = store.flush_call("z4")
    assert decode(read, [4, []]) == 0                 # nothing unpublished
    publish = decode(read, [4, [upsert_entry(5, peer), remove_entry(6, OTHER)]])
    assert isinstance(publish, Call)
    channel, since, command, rev, message = argv(publish)
    assert (channel, since, command, rev) == (store.keys.updates("z4"), 4, "PUBLISH", 6)
    update = messages.parse_update(message)
    assert (update.zone, update.since, update.rev) == ("z4", 4, 6)
    assert update.changes == (messages.Change(5, "upsert", peer=peer),
                              messages.Change(6, "remove", key=OTHER, reason="left"))
    assert decode(publish, ["ok", 1]) == 1
    moved = decode(publish, ["moved", 6])          # another replica published: read again
    assert isinstance(moved, Call) and moved.commands == read.commands


def test_a_large_backlog_goes_out_in_messages_of_at_most_max_changes(store):
    entries = [remove_entry(rev, OTHER, "expired") for rev in range(11, 11 + 25)]
    sent = updates("z4", entries, max_changes=10)
    assert [rev for rev, _ in sent] == [20, 30, 35]
    parsed = [messages.parse_update(text) for _, text in sent]
    assert [(u.since, u.rev, len(u.changes)) for u in parsed] == [(10, 20, 10), (20, 30, 10),
                                                                   (30, 35, 5)]
    # A read that got as many changes as it asks for publishes, then reads again.
    read = store.flush_call("z4", max_changes=2)
    publish = decode(read, [10, entries[:20]])
    again = decode(publish, ["ok", 10])
    assert isinstance(again, Call)
    assert decode(again, [30, []]) == 10            # the messages counted over both


def test_change_log_entries_of_an_older_tower_are_published_as_they_are(store):
    legacy = json.dumps({"rev": 3, "op": "remove", "key": OTHER, "reason": "left"})
    [(rev, text)] = updates("z4", [["3-1", ["c", legacy]]])
    assert rev == 3 and json.loads(text)["changes"] == [json.loads(legacy)]
    malformed = decode(store.flush_call("z4"), [2, [["3-1", ["what", "ever"]]]])
    assert isinstance(malformed, ValueError)


def test_delete_zone_reads_the_revision_then_publishes_its_last_update(store):
    read = store._delete_zone_call("z4", False, 0)
    delete = decode(read, "41")
    args = argv(delete)
    assert args[:3] == [0, store.keys.updates("z4"), 41]
    assert args[4] == "PUBLISH"          # SPUBLISH on a Redis Cluster
    update = messages.parse_update(args[3])
    assert (update.since, update.rev, update.changes) == (41, 42, (messages.Change(42, "zone-deleted"),))
    assert decode(delete, ["ok"]) is None
    assert str(decode(delete, ["busy", 3])) == ("zone z4 still has 3 nodes; delete them first "
                                                "or use force=true")
    assert str(decode(delete, ["nozone"])) == "zone z4 does not exist"
    assert isinstance(decode(delete, ["moved", 43]), Call)


# -- settling ------------------------------------------------------------------------------

class Recorder:
    def __init__(self) -> None:
        self.commands: list[tuple] = []

    def execute_command(self, *args) -> None:
        self.commands.append(args)


def test_a_call_whose_script_redis_lost_is_sent_again_with_the_script(store):
    call = store.heartbeat_call("z4", KEY, "s1", now=1.0)
    again = settle(call, [redis.exceptions.NoScriptError("NOSCRIPT")])
    assert isinstance(again, Call) and again.reload and again.size == 1
    pipe = Recorder()
    queue(pipe, again)
    # EVAL with the source (a key routes it, on a Redis Cluster too), not SCRIPT LOAD
    assert pipe.commands == [("EVAL", store.scripts.heartbeat.script, *call.commands[0][2:])]
    assert settle(again, [["ok"]]) is None


def test_each_call_settles_on_its_own(store):
    calls = [store.heartbeat_call("z4", KEY, "s1"),
             store.endpoint_call("z4", KEY, "s1", "192.0.2.9:5000", None),
             store.remove_call("z4", KEY, "left")]
    error = redis.exceptions.ResponseError("ERR boom")
    replies = [["ok"], None, error, "3", ["ok", 4]]
    outcomes = settle_all(calls, replies)
    assert outcomes[0] is None and outcomes[1] is error and outcomes[2] == 4
    # A malformed stored record is that call's failure, not the batch's.
    broken = settle(calls[1], ["not a record", None, "3"])
    assert isinstance(broken, InvalidInput)


# -- the messages --------------------------------------------------------------------------

addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
peers = st.builds(
    Peer, key=st.just(KEY), address=addresses,
    endpoint=st.one_of(st.none(), st.just("[2001:db8::1]:51820"), st.just("192.0.2.1:1")),
    child_prefixes=st.lists(st.sampled_from(["172.24.0.0/24", "fd00:2::/64"]),
                            unique=True).map(tuple),
    listen_port=st.integers(1, 65535), nat_type=st.sampled_from([None, *messages.NAT_TYPES]),
    session=st.text("abc0-_", min_size=1, max_size=8),
    hostname=st.one_of(st.none(), st.text("ab.-_\\\"", max_size=8)))


@given(peers, addresses)
def test_a_record_split_around_its_address_joins_to_the_record_of_any_address(peer, address):
    before, after = messages.peer_record_parts(peer)
    record = before + address + after
    assert record == messages.peer_record(replace(peer, address=address))
    assert messages.parse_peer(record) == replace(peer, address=address, registered=0.0)


def test_the_record_keeps_the_layout_stored_records_have():
    peer = Peer(KEY, "10.9.0.7", "203.0.113.5:51820", ("172.24.0.0/24",), 51820, None, "s", None)
    assert messages.peer_record(peer) == (
        '{"key":"' + KEY + '","endpoint":"203.0.113.5:51820","child_prefixes":'
        '["172.24.0.0/24"],"listen_port":51820,"nat_type":null,"session":"s",'
        '"hostname":null,"address":"10.9.0.7"}')


def test_updates_and_their_changes():
    peer = Peer(KEY, "10.9.0.7", session="s")
    text = messages.update("zone-blue", 16, 18, [
        messages.upsert_change(17, messages.peer_record(peer)),
        messages.remove_change(18, OTHER, "evicted")])
    assert json.loads(text) == {"v": 1, "zone": "zone-blue", "since": 16, "rev": 18, "changes": [
        {"rev": 17, "op": "upsert", "peer": json.loads(messages.peer_record(peer))},
        {"rev": 18, "op": "remove", "key": OTHER, "reason": "evicted"}]}
    deleted = messages.parse_update(messages.zone_deleted("zone-blue", 19))
    assert (deleted.since, deleted.rev, deleted.changes) == (18, 19, (messages.Change(19, "zone-deleted"),))

"""GET /peers from the per-process peer cache (controltower/api/peercache.py), real Redis.

The cache lives for an hour in these apps, so any answer that follows a change can only
be right if the revision check caught the change."""
from __future__ import annotations

import json
import threading
import time

import pytest

from controltower.api import peercache, render
from controltower.api.peercache import PeerCache
from wire.proof import generate_private_key, public_key_of

LONG = 3600.0


@pytest.fixture
def app_config():
    return {"PEERS_CACHE_SECONDS": LONG}


def add_node(store, zone="default", session="s", **kw) -> str:
    key = public_key_of(generate_private_key())
    store.register(zone, key, listen_port=51820, session=session, **kw)
    return key


def uncached_body(app, store, zones: list[str]) -> bytes:
    """What the API answered before the cache: records parsed now, through jsonify."""
    rows = []
    for name in zones:
        seen = store.last_seen(name)
        for p in sorted(store.peers(name), key=lambda p: p.key):
            rows.append(render.peer(name, p, seen.get(p.key), app.config["OFFLINE_AFTER"],
                                    time.time()))
    with app.app_context():
        return app.json.response(rows).get_data()


def keys_of(client, zone="default") -> set[str]:
    r = client.get(f"/peers?zone={zone}")
    assert r.status_code == 200
    return {p["PublicKey"] for p in r.json}


def test_body_is_byte_for_byte_what_jsonify_made(app, client, store):
    store.create_zone("zone-blue", "10.140.0.0/20", "blue")
    add_node(store, "zone-blue", endpoint="203.0.113.4:51820", child_prefixes=["172.24.0.0/24"],
             nat_type="cone", hostname="node1")
    add_node(store, "zone-blue", now=time.time() - 100)            # offline
    silent = add_node(store, "zone-blue")
    store.redis.zrem(store.keys.seen("zone-blue"), silent)        # never seen: null
    add_node(store, "default", endpoint="[2001:db8::1]:51820")
    store.create_zone("six", "fd00:1::/64")
    add_node(store, "six", child_prefixes=["fd00:2::/64"], hostname="v6-node")
    for path, zones in (("/peers?zone=zone-blue", ["zone-blue"]),
                        ("/peers?zone=default", ["default"]),
                        ("/peers?zone=six", ["six"]),
                        ("/peers", ["default", "six", "zone-blue"])):
        r = client.get(path)
        assert r.status_code == 200 and r.mimetype == "application/json"
        assert r.get_data() == uncached_body(app, store, zones), path
    rows = client.get("/peers").json
    assert [p["Zone"] for p in rows] == ["default", "six"] + ["zone-blue"] * 3
    assert rows[1]["AllowedIPs"] == "fd00:1::1/128,fd00:2::/64"
    assert sorted((p["Online"], p["LastSeen"] is None) for p in rows) == [
        (False, False), (False, True), (True, False), (True, False), (True, False)]


def test_empty_zones_and_no_zones(app, client, store):
    assert client.get("/peers").get_data() == b"[]\n"
    store.create_zone("empty", "10.9.0.0/24")
    key = add_node(store)
    assert [p["PublicKey"] for p in client.get("/peers").json] == [key]
    assert client.get("/peers?zone=empty").get_data() == b"[]\n"


def test_every_change_is_seen_at_once(client, store):
    assert keys_of(client) == set()
    a = add_node(store, session="a")
    assert keys_of(client) == {a}
    b = add_node(store, session="b", child_prefixes=["172.30.0.0/24"])
    assert keys_of(client) == {a, b}

    store.update_endpoint("default", a, "a", "198.51.100.7:4000", "symmetric")
    row = next(p for p in client.get("/peers?zone=default").json if p["PublicKey"] == a)
    assert (row["EndpointIP"], row["NatType"]) == ("198.51.100.7:4000", "symmetric")

    store.register("default", b, listen_port=51820, session="b2", child_prefixes=["172.31.0.0/24"])
    row = next(p for p in client.get("/peers?zone=default").json if p["PublicKey"] == b)
    assert row["ChildPrefix"] == ["172.31.0.0/24"]
    assert row["AllowedIPs"].endswith(",172.31.0.0/24")

    store.remove_peer("default", a, "deleted")
    assert keys_of(client) == {b}
    assert client.delete("/peers/" + b).status_code == 200
    assert keys_of(client) == set()


def test_zone_deleted_and_recreated_at_the_same_revision(client, store):
    store.create_zone("z", "10.7.0.0/24")
    old = [add_node(store, "z", session=str(i)) for i in range(3)]
    assert keys_of(client, "z") == set(old)
    rev = int(store.redis.get(store.keys.rev("z")))
    store.delete_zone("z", force=True)          # no request while it is gone
    store.create_zone("z", "10.7.0.0/24")
    new = [add_node(store, "z", session=str(i)) for i in range(3)]
    assert int(store.redis.get(store.keys.rev("z"))) == rev      # same revision, other peers
    assert keys_of(client, "z") == set(new)
    store.delete_zone("z", force=True)
    assert client.get("/peers?zone=z").status_code == 404
    assert "z" not in {p["Zone"] for p in client.get("/peers").json}


def test_bad_and_unknown_zone(client):
    r = client.get("/peers?zone=a b")
    assert r.status_code == 400 and "zone name" in r.json["error"]
    r = client.get("/peers?zone=nope")
    assert r.status_code == 404 and r.json == {"error": "zone nope does not exist"}


def test_etag_and_if_none_match(client, store):
    add_node(store)
    first = client.get("/peers?zone=default")
    etag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "no-cache"
    again = client.get("/peers?zone=default", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.get_data() == b"" and again.headers["ETag"] == etag
    add_node(store)
    changed = client.get("/peers?zone=default", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and len(changed.json) == 2
    assert changed.headers["ETag"] != etag
    every = client.get("/peers")
    assert every.headers["ETag"] != changed.headers["ETag"]
    assert client.get("/peers", headers={"If-None-Match": every.headers["ETag"]}).status_code == 304


def test_heartbeat_fields_refresh_after_max_age(store):
    """LastSeen/Online may be up to max_age old; the peer set never is."""
    ticks = [0.0]
    wall = [1_800_000_000.0]
    cache = PeerCache(store, offline_after=30.0, max_age=1.0, clock=lambda: ticks[0],
                      wall_clock=lambda: wall[0])
    key = add_node(store, session="s", now=wall[0])

    def row():
        return json.loads(cache.answer("default").body)[0]

    assert row()["LastSeen"] == "2027-01-15T08:00:00+00:00" and row()["Online"] is True
    wall[0] += 40
    ticks[0] += 0.5
    assert row()["Online"] is True                      # cached for up to one second
    ticks[0] += 0.6
    assert row()["Online"] is False                     # reloaded: silent for 40 s
    store.heartbeat("default", key, "s", now=wall[0])
    assert row()["Online"] is False
    ticks[0] += 1.0
    assert row()["LastSeen"] == "2027-01-15T08:00:40+00:00" and row()["Online"] is True


def test_unchanged_records_are_not_parsed_again(store, monkeypatch):
    keys = [add_node(store, session=str(i)) for i in range(5)]
    cache = PeerCache(store, offline_after=30.0, max_age=LONG)
    first = cache.answer("default")
    store.update_endpoint("default", keys[2], "2", "192.0.2.9:1", None)
    parsed = []
    real = peercache.messages.parse_peer
    monkeypatch.setattr(peercache.messages, "parse_peer", lambda r: parsed.append(r) or real(r))
    second = cache.answer("default")
    assert len(parsed) == 1 and keys[2] in parsed[0]
    assert second.records[keys[0]] is first.records[keys[0]]
    assert b"192.0.2.9:1" in second.body


def test_readers_never_see_a_set_older_than_the_last_write(app, store):
    """Readers in threads while nodes come and go: every answer that starts after a
    write has returned shows that write (or a later one)."""
    history: list[frozenset[str]] = [frozenset()]
    seen: list[tuple[int, frozenset[str]]] = []     # (writes done before the GET, answer)
    done = threading.Event()

    def reader() -> None:
        client = app.test_client()
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            step = len(history) - 1
            r = client.get("/peers?zone=default")
            seen.append((step, frozenset(p["PublicKey"] for p in r.json)))

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    try:
        current: set[str] = set()
        for i in range(40):
            if i % 3 == 2:
                store.remove_peer("default", sorted(current)[0], "deleted")
                current.remove(sorted(current)[0])
            else:
                current.add(add_node(store, session=str(i)))
            history.append(frozenset(current))
    finally:
        done.set()
        for t in readers:
            t.join(30)
    stale = [step for step, got in seen if got not in history[step:]]
    assert len(seen) > 40 and not stale, f"{len(stale)} stale answers, after writes {stale[:5]}"
    assert keys_of(app.test_client()) == current


def test_zones_beyond_the_bound_are_forgotten_not_wrong(store):
    cache = PeerCache(store, offline_after=30.0, max_age=LONG, max_zones=2)
    members = {}
    for i in range(4):
        store.create_zone(f"z{i}", f"10.{i}.0.0/24")
        members[f"z{i}"] = add_node(store, f"z{i}")
    for _ in range(2):
        for name, key in members.items():
            assert [p["PublicKey"] for p in json.loads(cache.answer(name).body)] == [key]
    assert len(cache._slots) == 2

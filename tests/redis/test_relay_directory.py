"""The relay in Redis: its announcement, zone members with the miss look-up, pruning."""
import base64
import json
import os
import time

from controltower.relay.directory import Directory, RelayRecord, prune, read_relays
from wire.keys import Keys


def test_membership_announce_and_prune(redis_client):
    r, keys = redis_client, Keys()
    k1, k2 = os.urandom(32), os.urandom(32)
    r.sadd(keys.zones, "z")
    r.hset(keys.peers("z"), base64.b64encode(k1).decode(), "{}")
    d = Directory(r, RelayRecord("t-1", "t", None, 3480, "pk", ("*",), 1.0), keys)
    d.announce()
    d.refresh_members()
    relays = read_relays(r, keys)
    assert [x["id"] for x in relays] == ["t-1"] and relays[0]["seen"] > time.time() - 5
    assert d.serves("z") and d.is_member("z", k1) and not d.is_member("z", k2)
    r.hset(keys.peers("z"), base64.b64encode(k2).decode(), "{}")
    assert not d.is_member("z", k2)          # the miss is remembered for a second
    time.sleep(1.05)
    assert d.is_member("z", k2)              # then looked up: a node binds as it registers
    r.hdel(keys.peers("z"), base64.b64encode(k1).decode())
    d.refresh_members()
    assert not d.is_member("z", k1)
    only = Directory(r, RelayRecord("t-2", "t", "198.51.100.1", 3480, "pk", ("a",), 1.0), keys)
    assert only.serves("a") and not only.serves("z")
    r.zadd(keys.relays_seen, {"t-1": time.time() - 120})
    assert prune(r, keys) == ["t-1"] and read_relays(r, keys) == []
    d.announce()
    d.withdraw()
    assert not r.hget(keys.relays, "t-1")

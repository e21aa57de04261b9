"""Zone-scoped agent credentials against a real Redis: what they may and may not do."""
from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis

from aircrew.session import TowerSession
from controltower.acl import AgentCredentials, new_secret
from ipam.store import ZoneStore
from wire.keys import Keys
from wire.proof import generate_private_key, public_key_of


@pytest.fixture
def zones(redis_client):
    store = ZoneStore(redis_client)
    creds = AgentCredentials(redis_client, store.keys)
    secrets = {}
    for name, cidr in (("zone-blue", "10.140.0.0/20"), ("zone-red", "172.20.0.0/20")):
        store.create_zone(name, cidr)
        secrets[name] = new_secret()
        creds.set(name, secrets[name])
    store.register("zone-red", "M+BTP8LbMikKLufoTTI7tPL5Jf3SHhNki6SXEXa5Uic=", listen_port=1,
                   session="s")
    return store, creds, secrets


def agent(redis_proc, zone, secret):
    return redis.Redis(port=redis_proc.port, username=Keys().agent_user(zone), password=secret,
                       decode_responses=True)


def test_agent_may_do_its_job(zones, redis_proc):
    store, _, secrets = zones
    k = store.keys
    blue = agent(redis_proc, "zone-blue", secrets["zone-blue"])
    assert blue.ping()
    assert blue.xadd(k.requests("zone-blue"), {"m": "x", "mac": "y"}, nomkstream=True)
    with blue.pipeline(transaction=True) as pipe:
        pipe.hget(k.zone("zone-blue"), "cidr").get(k.rev("zone-blue")).hgetall(k.peers("zone-blue"))
        assert pipe.execute()[0] == "10.140.0.0/20"
    pubsub = blue.pubsub()
    pubsub.subscribe(k.updates("zone-blue"), k.reply("zone-blue", "somekey"))
    pubsub.close()


@pytest.mark.parametrize("attempt", [
    lambda c, k: c.hset(k.leases("zone-blue"), "10.140.0.9", "stolen"),
    lambda c, k: c.hset(k.peers("zone-blue"), "x", "{}"),
    lambda c, k: c.hgetall(k.peers("zone-red")),
    lambda c, k: c.hgetall(k.leases("zone-blue")),
    lambda c, k: c.get(k.tower_private),
    lambda c, k: c.xadd(k.requests("zone-red"), {"m": "x"}),
    lambda c, k: c.xrange(k.requests("zone-blue")),
    lambda c, k: c.flushall(),
    lambda c, k: c.keys("*"),
    lambda c, k: c.config_get("*"),
    lambda c, k: c.execute_command("ACL", "LIST"),
    lambda c, k: c.publish(k.updates("zone-blue"), "forged"),
    lambda c, k: c.eval("return 1", 0),
    lambda c, k: c.xadd(k.published("zone-blue"), {"m": "x"}),
    lambda c, k: c.set(k.published("zone-blue"), "99"),
    lambda c, k: c.get(k.published("zone-red")),
], ids=["write-lease", "write-peer", "read-other-zone", "read-leases", "tower-private-key",
        "other-zone-stream", "read-requests", "flushall", "keys", "config", "acl", "publish", "eval",
        "stream-to-published", "set-published", "read-other-zone-published"])
def test_agent_is_denied(zones, redis_proc, attempt):
    store, _, secrets = zones
    blue = agent(redis_proc, "zone-blue", secrets["zone-blue"])
    with pytest.raises(redis.exceptions.NoPermissionError):
        attempt(blue, store.keys)
    assert store.redis.hlen(store.keys.peers("zone-red")) == 1


def test_agent_reads_the_published_revision(zones, redis_proc):
    """The revision check reads ``published`` (not ``rev``, which runs ahead of it until
    the changes are published), with the zone's agent credentials."""
    store, _, secrets = zones
    k = store.keys
    store.register("zone-blue", public_key_of(generate_private_key()), listen_port=1, session="s")
    assert store.flush("zone-blue") == 1
    store.register("zone-blue", public_key_of(generate_private_key()), listen_port=2, session="t")
    assert store.redis.get(k.rev("zone-blue")) == "2"       # committed, not yet published

    async def check() -> int:
        client = aioredis.Redis(port=redis_proc.port, username=k.agent_user("zone-blue"),
                                password=secrets["zone-blue"], decode_responses=True)
        try:
            session = TowerSession(client, "zone-blue", generate_private_key(), keys=k)
            return await session.revision()
        finally:
            await client.aclose()
    assert asyncio.run(check()) == 1
    assert store.redis.get(k.published("zone-blue")) == "1"


def test_agent_cannot_subscribe_to_another_zone(zones, redis_proc):
    store, _, secrets = zones
    blue = agent(redis_proc, "zone-blue", secrets["zone-blue"])
    pubsub = blue.pubsub()
    with pytest.raises(redis.exceptions.NoPermissionError):
        pubsub.subscribe(store.keys.updates("zone-red"))
        pubsub.get_message(timeout=1)


def test_rotation_and_deletion(zones, redis_proc):
    store, creds, secrets = zones
    new = creds.rotate("zone-blue")
    with pytest.raises(redis.exceptions.AuthenticationError):
        agent(redis_proc, "zone-blue", secrets["zone-blue"]).ping()
    assert agent(redis_proc, "zone-blue", new).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        agent(redis_proc, "zone-red", secrets["zone-blue"]).ping()
    creds.delete("zone-red")
    with pytest.raises(redis.exceptions.AuthenticationError):
        agent(redis_proc, "zone-red", secrets["zone-red"]).ping()


def test_users_are_reapplied_from_digests(zones, redis_proc):
    store, creds, secrets = zones
    store.redis.execute_command("ACL", "DELUSER", store.keys.agent_user("zone-blue"))
    creds.sync(store.zone_names())
    assert agent(redis_proc, "zone-blue", secrets["zone-blue"]).ping()

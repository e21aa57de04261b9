"""wire.snapshot: the one reader of a zone's snapshot, pure and against a real Redis (a
blocking and an asyncio client, the agent's least-privilege user among them)."""
from __future__ import annotations

import asyncio
import json

import pytest
import redis
import redis.asyncio as aioredis

from wire import identity
from controltower.acl import AgentCredentials, new_secret
from ipam.store import ZoneStore
from wire import snapshot
from wire.errors import InvalidInput, NotFound
from wire.keys import Keys
from wire.proof import generate_private_key, public_key_of

K = Keys("t:")
KEY_A = public_key_of(generate_private_key())
KEY_B = public_key_of(generate_private_key())


def record(key: str, address: str) -> str:
    return json.dumps({"key": key, "address": address, "listen_port": 51820})


# -- pure -------------------------------------------------------------------------------

def test_commands_name_one_transaction_in_reply_order():
    full = snapshot.commands(K, snapshot.Read("blue", seen=True))
    assert [(c.method, c.args, dict(c.options)) for c in full] == [
        ("hmget", (K.zone("blue"), "name", "description", "cidr", "created"), {}),
        ("get", (K.rev("blue"),), {}),
        ("hgetall", (K.peers("blue"),), {}),
        ("zrange", (K.seen("blue"), 0, -1), {"withscores": True}),
    ]
    # one field: HGET, the command the agent's Redis user may run
    agent = snapshot.commands(K, snapshot.Read("blue", fields=("cidr",)))
    assert [(c.method, c.args) for c in agent] == [
        ("hget", (K.zone("blue"), "cidr")), ("get", (K.rev("blue"),)),
        ("hgetall", (K.peers("blue"),))]
    state = snapshot.commands(K, snapshot.Read("blue", ("name", "created"), peers=False))
    assert [c.method for c in state] == ["hmget", "get"]


def test_parse_reads_the_replies_in_order():
    read = snapshot.Read("blue", ("name", "created"), seen=True)
    records = {KEY_A: record(KEY_A, "10.0.0.2")}
    found = snapshot.parse(read, [["blue", None], "7", records, [(KEY_A, 12.5)]])
    assert found.fields == {"name": "blue", "created": None}
    assert (found.zone, found.rev, found.records, found.seen) == ("blue", 7, records,
                                                                  {KEY_A: 12.5})
    one = snapshot.parse(snapshot.Read("blue", ("cidr",), peers=False), ["10.0.0.0/24", None])
    assert one.fields == {"cidr": "10.0.0.0/24"} and one.rev == 0 and one.records == {}


def test_parse_refuses_a_missing_zone_and_replies_that_do_not_match():
    with pytest.raises(NotFound, match="zone blue does not exist"):
        snapshot.parse(snapshot.Read("blue"), [[None] * 4, None, {}])
    with pytest.raises(NotFound):
        snapshot.parse(snapshot.Read("blue", ("cidr",)), [None, "3", {}])
    with pytest.raises(InvalidInput):
        snapshot.parse(snapshot.Read("blue"), [["blue", "", "10.0.0.0/24", "1"], "1"])
    with pytest.raises(InvalidInput):
        snapshot.parse(snapshot.Read("blue"), [["blue", "10.0.0.0/24"], "1", {}])
    with pytest.raises(InvalidInput):
        snapshot.Read("blue", fields=())


def test_peers_are_strict_unless_told_to_skip():
    records = {KEY_A: record(KEY_A, "10.0.0.2"), KEY_B: "{not json"}
    with pytest.raises(InvalidInput):
        snapshot.peers(records)
    skipped: list[InvalidInput] = []
    peers = snapshot.peers(records, skipped.append)
    assert list(peers) == [KEY_A] and peers[KEY_A].address == "10.0.0.2"
    assert len(skipped) == 1 and "not JSON" in str(skipped[0])


# -- against Redis ----------------------------------------------------------------------

@pytest.fixture
def zone(redis_client):
    store = ZoneStore(redis_client, K)
    store.create_zone("blue", "10.140.0.0/20", "the blue zone")
    store.register("blue", KEY_A, listen_port=51820, session="s")
    store.heartbeat("blue", KEY_A, "s", now=1000.0)
    return store


def test_a_blocking_client_reads_what_the_store_holds(zone, redis_client):
    read = snapshot.Read("blue", seen=True)
    with redis_client.pipeline(transaction=True) as pipe:
        snapshot.queue(pipe, snapshot.commands(K, read))
        found = snapshot.parse(read, pipe.execute())
    assert found.fields["name"] == "blue" and found.fields["cidr"] == "10.140.0.0/20"
    assert found.fields["description"] == "the blue zone"
    assert found.rev == int(redis_client.get(K.rev("blue")))
    assert list(snapshot.peers(found.records)) == [KEY_A]
    assert found.seen == {KEY_A: 1000.0}
    store_view = zone.snapshot("blue")           # ipam's reader is this one
    assert (store_view.zone.cidr, store_view.rev, list(store_view.peers)) == (
        "10.140.0.0/20", found.rev, [KEY_A])
    with pytest.raises(NotFound):
        zone.snapshot("red")


def test_the_agents_user_reads_it_with_an_asyncio_client(zone, redis_client, redis_proc):
    """A node's own user (aircrew): the snapshot in one transaction."""
    secret = new_secret()
    creds = AgentCredentials(redis_client, K)
    creds.set("blue", secret)
    node = zone.run(creds.registry.enroll_call("blue", "zone", KEY_A, identity.digest(secret), "a"))
    creds.apply_node("blue", node)

    async def main() -> tuple[snapshot.Snapshot, Exception]:
        client = aioredis.Redis(port=redis_proc.port, username=node.user,
                                password=secret, decode_responses=True)
        try:
            read = snapshot.Read("blue", fields=("cidr",))
            async with client.pipeline(transaction=True) as pipe:
                snapshot.queue(pipe, snapshot.commands(K, read))
                found = snapshot.parse(read, await pipe.execute())
            refused = None
            try:      # several fields need HMGET, which the agent's user may not run
                async with client.pipeline(transaction=True) as pipe:
                    snapshot.queue(pipe, snapshot.commands(K, snapshot.Read("blue")))
                    await pipe.execute()
            except redis.exceptions.RedisError as exc:
                refused = exc
            return found, refused
        finally:
            await client.aclose()

    found, refused = asyncio.run(main())
    assert found.fields == {"cidr": "10.140.0.0/20"}
    assert list(snapshot.peers(found.records)) == [KEY_A]
    assert isinstance(refused, (redis.exceptions.NoPermissionError,
                                redis.exceptions.ExecAbortError,
                                redis.exceptions.ResponseError))

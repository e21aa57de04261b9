"""The wire protocol end to end: agent sessions against a real worker and Redis."""
from __future__ import annotations

import asyncio
import json
import threading

import pytest
import redis.asyncio as aioredis

from aircrew.mirror import Outcome, ZoneMirror
from aircrew.session import TowerRefused, TowerSession
from controltower.worker import RequestWorker
from ipam.store import ZoneStore
from wire.messages import Request
from wire.proof import generate_private_key, public_key_of


@pytest.fixture
def tower(redis_client):
    store = ZoneStore(redis_client, expiry=60)
    store.ensure_default_zone()
    worker = RequestWorker(store, publish_window=0.005, zone_refresh=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    yield worker
    stop.set()
    thread.join(10)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def open_session(redis_proc, zone="default", key=None):
    client = aioredis.Redis(port=redis_proc.port, decode_responses=True)
    session = TowerSession(client, zone, key or generate_private_key())
    await session.open()
    return session


async def next_applied(session, mirror):
    """Apply updates until one changes the mirror (updates older than the snapshot are stale)."""
    while True:
        outcome = mirror.apply(await asyncio.wait_for(session.updates.get(), 5))
        if outcome is not Outcome.STALE:
            return outcome


REGISTER = {"listen_port": 51820, "endpoint": "203.0.113.7:51820"}


def test_register_snapshot_and_updates(tower, redis_proc):
    async def scenario():
        a = await open_session(redis_proc)
        reply = await a.request("register", REGISTER)
        assert reply["address"] == "10.200.0.1" and reply["prefix_len"] == 20
        mirror = ZoneMirror()
        snap = await a.snapshot()
        mirror.load(snap.rev, snap.peers)
        assert set(mirror.peers) == {a.public_key}
        b = await open_session(redis_proc)
        await b.request("register", dict(REGISTER, child_prefixes=["172.24.0.0/24"]))
        assert await next_applied(a, mirror) is Outcome.APPLIED
        assert mirror.peers[b.public_key].child_prefixes == ("172.24.0.0/24",)
        await b.request("leave")
        assert await next_applied(a, mirror) is Outcome.APPLIED
        assert b.public_key not in mirror.peers and mirror.removed == {b.public_key: "left"}
        await a.request("heartbeat")
        for s in (a, b):
            await s.close()
    run(scenario())


def test_unknown_zone_and_conflicts_are_clear_errors(tower, redis_proc):
    async def scenario():
        with pytest.raises(TowerRefused, match="zone zone-x does not exist"):
            s = await open_session(redis_proc, "zone-x")
            await s.request("register", REGISTER)
        a = await open_session(redis_proc)
        await a.request("register", dict(REGISTER, request_ip="10.200.0.9"))
        b = await open_session(redis_proc)
        with pytest.raises(TowerRefused, match="10.200.0.9 is held by another node"):
            await b.request("register", dict(REGISTER, request_ip="10.200.0.9"))
        with pytest.raises(TowerRefused, match="listen port must be an integer"):
            await b.request("register", {"listen_port": "x"})
    run(scenario())


def test_forged_and_replayed_requests_are_refused(tower, redis_proc, redis_client):
    victim_private = generate_private_key()
    victim = public_key_of(victim_private)
    keys = tower.keys
    pubsub = redis_client.pubsub()
    pubsub.subscribe(keys.reply("default", victim))
    pubsub.get_message(timeout=1)

    def send(fields):
        redis_client.xadd(keys.requests("default"), fields)
        while True:
            msg = pubsub.get_message(timeout=5)
            assert msg is not None, "no reply"
            if msg["type"] == "message":
                return json.loads(msg["data"])

    forged = Request("register", "default", victim, REGISTER).signed(
        generate_private_key(), tower.tower_public)  # right public key, wrong private key
    reply = send(forged)
    assert not reply["ok"] and "bad proof of possession" in reply["error"]
    assert redis_client.hlen(keys.peers("default")) == 0

    genuine = Request("register", "default", victim, REGISTER).signed(
        victim_private, tower.tower_public)
    assert send(genuine)["ok"]
    replay = send(genuine)
    assert not replay["ok"] and replay["error"] == "replayed request refused"

    stale = Request("register", "default", victim, REGISTER, ts=0.0).signed(
        victim_private, tower.tower_public)
    assert "off the tower's clock" in send(stale)["error"]
    pubsub.close()


def test_malformed_messages_never_kill_the_worker(tower, redis_proc, redis_client):
    stream = tower.keys.requests("default")
    before = tower.handled
    for fields in ({"m": "not json"}, {"m": "[]"}, {"x": "y"}, {"m": json.dumps({"v": 1})},
                   {"m": "\xff" * 20000}, {"m": json.dumps({"v": 1, "type": "register",
                                                            "key": "A" * 43 + "="})}):
        redis_client.xadd(stream, fields)

    async def scenario():
        a = await open_session(redis_proc)
        reply = await a.request("register", REGISTER)
        assert reply["ok"]
    run(scenario())
    assert tower.handled >= before + 7
    assert redis_client.hlen(tower.keys.peers("default")) == 1

"""One of two ControlTower replicas SIGKILLed in the middle of a registration storm.

Two real `controltower serve` replicas on one real Redis. 400 requests: 300 new nodes,
50 nodes registering again from a new session once answered (mobility), 50 nodes asking
for one of 25 addresses (half must be refused). Replica A is SIGKILLed while it holds
read-but-unacknowledged requests; B claims them after the claim idle time (5 s).
Three real agents and a raw subscriber watch the zone. Then:
- nothing lost: every request is answered (by A before it died, or by B);
- nothing duplicated: no address held twice, no node with two addresses, every node
  registering again kept its address, every published revision appears exactly once
  and in order, and replaying the published changes gives the zone's peers exactly;
- every agent's device equals the zone.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import threading
import time

import pytest
import redis.asyncio as aioredis

from aircrew.session import TowerRefused, TowerSession
from testbed import simagent
from testbed.tower import TowerProcess
from wire.keys import REQUEST_GROUP, Keys
from wire.proof import generate_private_key

pytestmark = pytest.mark.slow

NEW, AGAIN, WANTED = 300, 50, 50
ADDRESSES = [f"10.200.9.{i}" for i in range(1, 26)]
KILL_AFTER = 80


@pytest.fixture
def replicas(redis_proc, tmp_path):
    towers: list[TowerProcess] = []
    try:
        client = redis_proc.client()
        stream = Keys().requests("default")

        def start(name: str) -> tuple[TowerProcess, str]:
            """Start a replica; returns it with its consumer name in the group."""
            before = _consumers(client, stream)
            tower = TowerProcess(redis_proc.url, tmp_path / name, extra=["--stun-port", "0"])
            towers.append(tower)
            tower.start()
            deadline = time.monotonic() + 10
            while not (new := _consumers(client, stream) - before):
                # Redis 7.0 creates a consumer when it first reads an entry: feed the
                # group entries every worker drops as malformed until the new one reads.
                assert time.monotonic() < deadline, "the replica's worker never read"
                client.xadd(stream, {"x": "warm-up"})
                time.sleep(0.05)
            (consumer,) = new
            return tower, consumer

        a = start("a")
        b = start("b")
        yield redis_proc, client, a, b
    finally:
        for tower in towers:
            if tower.proc is not None and tower.proc.poll() is None:
                os.kill(tower.proc.pid, signal.SIGCONT)  # in case the test froze it
            tower.stop()


def _consumers(client, stream: str) -> set[str]:
    try:
        return {c["name"] for c in client.xinfo_consumers(stream, REQUEST_GROUP)}
    except Exception:  # noqa: BLE001 - no stream or group yet
        return set()


async def collect_updates(port: int, channel: str, into: list[dict], ready: asyncio.Event):
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", decode_responses=True)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(channel)
        ready.set()
        while True:
            msg = await pubsub.get_message(timeout=1.0)
            if msg is not None:
                into.append(json.loads(msg["data"]))
    finally:
        await pubsub.aclose()
        await client.aclose()


def test_sigkilled_replica_loses_and_duplicates_nothing(replicas, tmp_path):
    redis_proc, client, (tower_a, consumer_a), (tower_b, consumer_b) = replicas
    keys = Keys()
    stream = keys.requests("default")
    rng = random.Random()

    async def scenario():
        updates: list[dict] = []
        ready = asyncio.Event()
        collector = asyncio.create_task(collect_updates(redis_proc.port, keys.updates("default"),
                                                        updates, ready))
        await ready.wait()
        sims = [simagent.make_agent(redis_proc.url, tmp_path / f"agent{i}", i) for i in range(3)]
        for sim in sims:
            simagent.start(sim)
        storm_client = await simagent.open_client(redis_proc.port)
        try:
            await simagent.wait_in_sync(sims, client, 15)
            privates = [generate_private_key() for _ in range(NEW)]
            first: dict[int, asyncio.Future] = {}
            results: list[tuple[str, int, object]] = []   # (kind, index, reply or error)
            sem = asyncio.Semaphore(100)

            async def send(private: str, body: dict, timeout: float = 30.0):
                async with sem:
                    session = TowerSession(storm_client, "default", private)
                    try:
                        await session.open()
                        return await session.request("register", body, timeout=timeout)
                    except Exception as exc:  # noqa: BLE001 - counted: must not happen
                        return exc
                    finally:
                        await session.close()

            async def new(i: int):
                reply = await send(privates[i], {"listen_port": 51820,
                                                 "endpoint": f"203.0.113.{i % 250 + 1}:51820"})
                results.append(("new", i, reply))
                first[i].set_result(reply)

            async def again(i: int):
                await first[i]  # once its first registration is answered
                reply = await send(privates[i], {"listen_port": 51820,
                                                 "endpoint": f"198.51.100.{i % 250 + 1}:4000"})
                results.append(("again", i, reply))

            async def wanted(i: int):
                reply = await send(generate_private_key(),
                                   {"listen_port": 51820, "request_ip": ADDRESSES[i % 25]})
                results.append(("wanted", i, reply))

            loop = asyncio.get_running_loop()
            for i in range(NEW):
                first[i] = loop.create_future()
            jobs = ([new(i) for i in range(NEW)]
                    + [again(i) for i in rng.sample(range(NEW), AGAIN)]
                    + [wanted(i) for i in range(WANTED)])
            rng.shuffle(jobs)
            storm = asyncio.gather(*jobs)

            # SIGKILL replica A while it holds requests it has read but not acknowledged:
            # freeze it (SIGSTOP), look, and kill it or let it go on and look again.
            deadline = time.monotonic() + 30
            pending_a = 0
            while True:
                assert time.monotonic() < deadline, "replica A never held pending requests"
                assert not storm.done(), "the storm ended before A held pending requests"
                await asyncio.sleep(0.002)
                if sum(1 for _, _, r in results if isinstance(r, dict)) < KILL_AFTER:
                    continue
                os.kill(tower_a.proc.pid, signal.SIGSTOP)
                # Redis may still hold part of a pipeline A wrote before it froze (its XACKs
                # last) and runs it even after A is killed: look once that has run.
                await asyncio.sleep(0.3)
                pending_a = next((c["pending"] for c in client.xinfo_consumers(
                    stream, REQUEST_GROUP) if c["name"] == consumer_a), 0)
                if pending_a:
                    break
                os.kill(tower_a.proc.pid, signal.SIGCONT)
            await asyncio.to_thread(tower_a.kill)
            killed_at = time.monotonic()
            answered_at_kill = sum(1 for _, _, r in results if isinstance(r, dict))
            await asyncio.wait_for(storm, 60)
            print(f"\nreplica A SIGKILLed after {answered_at_kill} answers with {pending_a} "
                  f"pending; the storm finished {time.monotonic() - killed_at:.1f}s later")

            # Nothing lost: every request answered, by A or B.
            errors = [(k, r) for k, _, r in results
                      if not isinstance(r, dict) and not isinstance(r, TowerRefused)]
            assert not errors, f"{len(errors)} requests not answered: {errors[:3]}"
            assert len(results) == NEW + AGAIN + WANTED
            refused = [(k, r) for k, _, r in results if isinstance(r, TowerRefused)]
            assert all(k == "wanted" and "is held by another node" in str(r)
                       for k, r in refused), refused[:3]
            granted_wanted = [r["address"] for k, _, r in results
                              if k == "wanted" and isinstance(r, dict)]
            assert sorted(granted_wanted) == sorted(set(granted_wanted)) == sorted(ADDRESSES), \
                "each wanted address granted exactly once"
            drained = time.monotonic() + 10   # (agents' heartbeats come and go)
            while client.xlen(stream) or client.xpending(stream, REQUEST_GROUP)["pending"]:
                assert time.monotonic() < drained, "requests left in the stream"
                await asyncio.sleep(0.05)
            assert "claimed" in tower_b.log_text(), "B never claimed A's pending requests"

            # Nothing duplicated in the zone.
            peers = {k: json.loads(v) for k, v in client.hgetall(keys.peers("default")).items()}
            leases = client.hgetall(keys.leases("default"))
            assert len(peers) == NEW + len(ADDRESSES) + len(sims)
            assert leases == {p["address"]: k for k, p in peers.items()}, "leases != peers"
            assert len(set(leases.values())) == len(leases), "a node holds two addresses"
            by_index = {i: r for k, i, r in results if k == "new"}
            for k, i, r in results:
                if k == "again":  # (its endpoint: see the redelivery test below)
                    assert r["address"] == by_index[i]["address"], "mobility moved a node"

            # Every published revision exactly once, in order; replaying them = the zone.
            rev = int(client.get(keys.rev("default")))
            deadline = time.monotonic() + 10
            while not updates or updates[-1]["rev"] < rev:
                assert time.monotonic() < deadline, "the last revisions were never published"
                await asyncio.sleep(0.05)
            revs = [c["rev"] for u in updates for c in u["changes"]]
            assert revs == list(range(1, rev + 1)), "a revision published twice or never"
            assert all(u["since"] == prev["rev"] for prev, u in zip(updates, updates[1:]))
            replayed: dict[str, dict] = {}
            for u in updates:
                for c in u["changes"]:
                    if c["op"] == "upsert":
                        replayed[c["peer"]["key"]] = c["peer"]
                    elif c["op"] == "remove":
                        replayed.pop(c["key"], None)
            assert replayed == peers

            await simagent.wait_in_sync(sims, client, 5)
            for sim in sims:
                assert not sim.errors and not sim.task.done(), sim.errors
        finally:
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)
            await storm_client.aclose()
            await simagent.stop(sims)

    asyncio.run(asyncio.wait_for(scenario(), 150))


@pytest.mark.parametrize("then", ["moves", "leaves"])
def test_redelivered_old_registration_does_not_undo_a_newer_request(redis_proc, redis_client,
                                                                     then):
    """Bug 9 (fixed): a request a dead replica handled but never acknowledged is claimed
    and handled again after claim_idle (the nonce check lets the same entry through as a
    redelivery). If the node registered again meanwhile (new session and endpoint: it
    moved), the old register put back the old record, and the moved node's agent saw a
    foreign session and stopped; if the node left meanwhile, it came back as a ghost.
    Now the store orders requests by stream entry id and ignores the older one: the
    redelivered request is answered again (with the current address), changing nothing."""
    from controltower.worker import RequestWorker
    from ipam.store import ZoneStore
    from wire.messages import Request, parse_peer
    from wire.proof import public_key_of

    keys = Keys()
    stream = keys.requests("default")
    ZoneStore(redis_client).ensure_default_zone()
    replica_a = RequestWorker(ZoneStore(redis_proc.client()), consumer="replica-a")
    replica_b = RequestWorker(ZoneStore(redis_proc.client()), consumer="replica-b",
                              claim_idle=1.0, zone_refresh=0.2)
    private = generate_private_key()
    key = public_key_of(private)
    replies = redis_client.pubsub(ignore_subscribe_messages=True)
    replies.subscribe(keys.reply("default", key))

    def peer():
        record = redis_client.hget(keys.peers("default"), key)
        return parse_peer(record) if record else None

    # Replica A reads and answers the node's registration, then dies before acknowledging.
    old = Request("register", "default", key, {"listen_port": 51820,
                                               "endpoint": "203.0.113.5:51820"}, session="old")
    redis_client.xadd(stream, old.signed(private, replica_a.tower_public))
    [[_, [(entry_id, fields)]]] = redis_client.xreadgroup(REQUEST_GROUP, "replica-a",
                                                          {stream: ">"}, count=1)
    replica_a.handle("default", entry_id, fields)
    assert peer().endpoint == "203.0.113.5:51820"
    address = peer().address

    # The node moves (same key, new agent session, new endpoint), or leaves; replica B
    # answers it.
    if then == "moves":
        newer = Request("register", "default", key, {"listen_port": 51820,
                                                     "endpoint": "198.51.100.7:4000"},
                        session="new")
    else:
        newer = Request("leave", "default", key, session="old")
    stop = threading.Event()
    thread = threading.Thread(target=replica_b.run, args=(stop,), daemon=True)
    thread.start()
    try:
        redis_client.xadd(stream, newer.signed(private, replica_b.tower_public))
        deadline = time.monotonic() + 10
        while (peer() is not None) if then == "leaves" else (peer().session != "new"):
            assert time.monotonic() < deadline, "replica B never handled the newer request"
            time.sleep(0.02)
        # B claims what A left pending (after claim_idle) and handles it again.
        while redis_client.xpending(stream, REQUEST_GROUP)["pending"]:
            assert time.monotonic() < deadline, "replica B never claimed A's entry"
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join(10)
    current = peer()
    if then == "moves":
        assert (current.session, current.endpoint, current.address) == (
            "new", "198.51.100.7:4000", address), \
            f"the redelivered old request put back {current.session}/{current.endpoint}"
    else:
        assert current is None, "the redelivered old request brought back a node that left"
        assert not redis_client.hgetall(keys.leases("default"))
    answers = []
    quiet_until = time.monotonic() + 1.0     # (an ignored subscribe message reads as None)
    while time.monotonic() < quiet_until:
        msg = replies.get_message(timeout=0.2)
        if msg is not None:
            answers.append(json.loads(msg["data"]))
    replies.close()
    to_old = [a for a in answers if a["id"] == old.id]
    assert len(to_old) == 2, f"A and B should both have answered: {answers}"
    if then == "moves":
        assert all(a["ok"] and a["address"] == address for a in to_old), to_old
    else:
        assert to_old[0]["ok"] and not to_old[1]["ok"], to_old
        assert "a newer request of this node was handled already" in to_old[1]["error"]

"""Several `controltower serve` replicas on one real Redis: atomic IPAM, claims, AOF."""
from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import pytest
import redis.asyncio as aioredis

from aircrew.session import TowerRefused, TowerSession
from testbed.tower import TowerProcess
from wire.keys import REQUEST_GROUP, Keys
from wire.proof import generate_private_key

pytestmark = pytest.mark.slow


@pytest.fixture
def towers(redis_proc, tmp_path):
    started: list[TowerProcess] = []

    def start(n: int = 1) -> list[TowerProcess]:
        new = [TowerProcess(redis_proc.url, tmp_path / f"tower{len(started) + i}",
                            extra=["--stun-port", "0"]).start() for i in range(n)]
        started.extend(new)
        return new
    yield start
    for tower in started:
        tower.stop()


async def register_all(port: int, jobs: list[tuple[str, dict]], timeout: float, attempts: int = 3):
    """Run every (private key, register body) concurrently; returns replies or exceptions."""
    client = aioredis.Redis(port=port, decode_responses=True, max_connections=2000)

    async def one(private_key: str, body: dict):
        session = TowerSession(client, "default", private_key)
        await session.open()
        try:
            return await session.request("register", body, timeout=timeout, attempts=attempts)
        except TowerRefused as exc:
            return exc
        finally:
            await session.close()

    sem = asyncio.Semaphore(500)

    async def limited(job):
        async with sem:
            return await one(*job)
    try:
        return await asyncio.gather(*(limited(job) for job in jobs))
    finally:
        await client.aclose()


def test_two_replicas_1000_concurrent_registrations(towers, redis_proc, redis_client):
    towers(2)
    rng = random.Random(7)
    keys = [generate_private_key() for _ in range(700)]
    body = {"listen_port": 51820, "endpoint": "203.0.113.5:51820"}
    jobs = [(k, body) for k in keys]
    jobs += [(rng.choice(keys), dict(body, endpoint="198.51.100.9:4000")) for _ in range(200)]
    wanted = [f"10.200.8.{i}" for i in range(1, 51)]  # 100 requests for 50 addresses
    jobs += [(generate_private_key(), dict(body, request_ip=rng.choice(wanted))) for _ in range(100)]
    rng.shuffle(jobs)
    replies = asyncio.run(register_all(redis_proc.port, jobs, timeout=30, attempts=1))

    assert len(replies) == 1000
    refused = [r for r in replies if isinstance(r, Exception)]
    assert all("is held by another node" in str(r) for r in refused)  # only real conflicts
    leases = redis_client.hgetall(Keys().leases("default"))
    holders = list(leases.values())
    assert len(holders) == len(set(holders)), "a node holds two addresses"
    peers = redis_client.hgetall(Keys().peers("default"))
    assert len(peers) == len(leases)
    by_key = {}
    for reply in replies:
        if not isinstance(reply, Exception):
            assert leases[reply["address"]]  # every granted address is leased
    for key, address in ((v, k) for k, v in leases.items()):
        by_key.setdefault(key, []).append(address)
    assert all(len(a) == 1 for a in by_key.values())
    granted_wanted = {a for a in leases if a in wanted}
    assert len(refused) == sum(1 for _, b in jobs if "request_ip" in b) - len(
        [r for r in replies if not isinstance(r, Exception) and r["address"] in granted_wanted])


def test_sigkilled_replica_has_its_pending_requests_answered(towers, redis_proc, redis_client):
    (first,) = towers(1)
    jobs = [(generate_private_key(), {"listen_port": 51820}) for _ in range(400)]
    keys = Keys()
    stream = keys.requests("default")

    def freeze_holding_pending() -> int:
        """SIGSTOP the first replica at a moment it holds read-but-unanswered requests
        (looking again and again, from a thread: the event loop is busy registering);
        returns how many. A replica holds a batch for about a millisecond, so the look
        is XPENDING itself, not a sleep: stopping on anything coarser missed every batch
        of a fast machine's run."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if redis_client.xpending(stream, REQUEST_GROUP)["pending"]:
                os.kill(first.proc.pid, signal.SIGSTOP)
                pending = redis_client.xpending(stream, REQUEST_GROUP)["pending"]
                if pending:
                    return pending
                os.kill(first.proc.pid, signal.SIGCONT)
        return 0

    async def scenario():
        # Requests admitted into the stream before the freeze are claimed by the other
        # replica; those published to the frozen replica's gate are lost with it, and
        # the agents send them again (as aircrew does: 3 attempts).
        task = asyncio.create_task(register_all(redis_proc.port, jobs, timeout=15, attempts=3))
        try:
            pending_at_kill = await asyncio.to_thread(freeze_holding_pending)
        finally:
            first.kill()
        towers(1)  # the other replica
        return pending_at_kill, await task

    pending_at_kill, replies = asyncio.run(scenario())
    assert pending_at_kill > 0, "the kill came too late to leave pending requests"
    assert all(not isinstance(r, Exception) for r in replies), replies
    assert len({r["address"] for r in replies}) == 400
    assert redis_client.xpending(stream, REQUEST_GROUP)["pending"] == 0


def test_redis_restart_from_aof_keeps_everything(towers, redis_proc):
    (tower,) = towers(1)
    assert tower.request("POST", "/zone", {"Name": "zone-blue", "CIDR": "10.140.0.0/20"})[0] == 201
    jobs = [(generate_private_key(), {"listen_port": 51820, "child_prefixes": [f"172.24.{i}.0/24"]})
            for i in range(20)]
    asyncio.run(register_all(redis_proc.port, jobs, timeout=10))
    before = [tower.get(p)[1] for p in ("/zones", "/peers", "/ipam/leases/default")]
    redis_proc.kill()
    redis_proc.start()
    after = [tower.get(p)[1] for p in ("/zones", "/peers", "/ipam/leases/default")]
    for b, a in zip(before, after):
        if isinstance(b, list) and b and "LastSeen" in b[0]:
            for row in b + a:
                row.pop("Online")
        assert a == b
    assert len(after[1]) == 20

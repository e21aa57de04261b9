"""The agent's follow loop against a real Redis and a real `controltower serve`.

The agent is aircrew's own Agent (testbed/simagent.py: only the WireGuard device is a
RecordingDevice). Zone changes are committed with ZoneStore (the tower's own Lua scripts)
and published with ``ZoneStore.flush``, as the tower's worker does, so a test decides
when (or whether) a change is published.
"""
from __future__ import annotations

import asyncio
import stat
import time

import pytest

from aircrew.agent import REVISION_RECHECK
from aircrew.statewriter import SAVE_INTERVAL
from aircrew.device import RecordingDevice
from aircrew.device_errors import DeviceError
from aircrew.state import StateFiles
from ipam.store import ZoneStore
from testbed import simagent
from wire.proof import generate_private_key, public_key_of

pytestmark = pytest.mark.slow

ZONE = "default"
SYNC_WITHIN = 10.0


@pytest.fixture(scope="module")
def world(module_redis, module_tower):
    """(Redis, its zone store) with a tower and 20 nodes in the zone, for the module."""
    client = module_redis.client()
    store = ZoneStore(client)
    for i in range(20):
        join(store, i)
    store.flush(ZONE)
    yield module_redis, store
    client.close()


def join(store: ZoneStore, i: int, prefixes: tuple[str, ...] = ()) -> str:
    key = public_key_of(generate_private_key())
    store.register(ZONE, key, listen_port=51820, session=f"s{i}",
                   endpoint=f"203.0.113.{i % 250 + 1}:{40000 + i}", child_prefixes=prefixes)
    return key


class CountingDevice(RecordingDevice):
    """A RecordingDevice that also counts reads; ``fail_next`` makes one upsert fail."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.fail_next = False

    def read(self):
        self.reads += 1
        return super().read()

    def upsert_peer(self, peer):
        if self.fail_next:
            self.fail_next = False
            self.operations += 1
            raise DeviceError("wg0: upsert peers: refused by the device: errno -5")
        super().upsert_peer(peer)


class CountingFiles(StateFiles):
    """The real state files, noting when each write started."""

    def __init__(self, directory, interface):
        super().__init__(directory, interface)
        self.writes: list[float] = []

    def save(self, cache, records, wg_quick):
        self.writes.append(time.monotonic())
        super().save(cache, records, wg_quick)


def agent_with(redis_proc, tmp_path, index, **settings) -> simagent.SimAgent:
    sim = simagent.make_agent(redis_proc.url, tmp_path / f"agent{index}", index,
                               heartbeat_interval=3600, endpoint_interval=3600, **settings)
    sim.device = sim.agent.device = CountingDevice()
    sim.agent.state = CountingFiles(sim.agent.state.directory, "wg0")
    return sim


async def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def started(sim, client) -> None:
    simagent.start(sim)
    await simagent.wait_in_sync([sim], client, SYNC_WITHIN)
    await asyncio.sleep(0.3)    # our own registration's update has come and gone


def run(scenario):
    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_one_change_is_one_device_operation_without_a_device_read(world, tmp_path):
    redis_proc, store = world

    async def scenario():
        sim = agent_with(redis_proc, tmp_path, 1, drift_interval=3600)
        try:
            await started(sim, store.redis)
            device, resyncs = sim.device, sim.agent.resyncs
            reads, operations = device.reads, device.operations
            key = join(store, 100, ("172.20.5.0/24",))
            store.flush(ZONE)
            await until(lambda: key in device.state.peers, 5, "the join")
            store.remove_peer(ZONE, key, "left")
            store.flush(ZONE)
            await until(lambda: key not in device.state.peers, 5, "the leave")
            await asyncio.sleep(0.2)
            assert device.log[-2:] == [("upsert_peer", key), ("remove_peer", key)]
            assert device.operations - operations == 2
            assert device.reads == reads, "a one-peer update read the whole device"
            assert sim.links.route_set == set()       # added with the join, removed again
            assert sim.agent.resyncs == resyncs and not sim.errors
            assert simagent.in_sync(sim, simagent.zone_view(store.redis))
        finally:
            await simagent.stop([sim])
    run(scenario)


def test_revision_check_waits_for_publication_and_catches_a_lost_update(world, tmp_path):
    """A committed change not yet published is not missing; a published one that never
    arrived (its message lost, simulated by moving ``published`` without publishing) is,
    and the check resyncs for it."""
    redis_proc, store = world
    k = store.keys

    async def scenario():
        sim = agent_with(redis_proc, tmp_path, 2, revision_interval=0.2, drift_interval=3600)
        try:
            await started(sim, store.redis)
            resyncs = sim.agent.resyncs
            key = join(store, 101)              # committed; the tower has not published it
            rev = int(store.redis.get(k.rev(ZONE)))
            assert int(store.redis.get(k.published(ZONE))) < rev
            await asyncio.sleep(REVISION_RECHECK + 1)   # several checks, a recheck too
            assert sim.agent.resyncs == resyncs, "resynced for a revision not yet published"
            store.redis.set(k.published(ZONE), rev)     # published, but the message is lost
            # (resyncs counts a resync when it starts; the device holds the key once done)
            await until(lambda: sim.agent.resyncs > resyncs and key in sim.device.state.peers,
                        6, "the revision check's resync")
            assert simagent.in_sync(sim, simagent.zone_view(store.redis)) and not sim.errors
        finally:
            await simagent.stop([sim])
    run(scenario)


def test_drift_check_repairs_a_changed_device(world, tmp_path):
    redis_proc, store = world

    async def scenario():
        sim = agent_with(redis_proc, tmp_path, 3, drift_interval=0.3)
        try:
            await started(sim, store.redis)
            victim = next(iter(sim.device.state.peers))
            del sim.device.state.peers[victim]          # `wg set wg0 peer ... remove`
            await until(lambda: victim in sim.device.state.peers, 5, "the drift repair")
            assert simagent.in_sync(sim, simagent.zone_view(store.redis)) and not sim.errors
        finally:
            await simagent.stop([sim])
    run(scenario)


def test_failed_device_operation_reconciles_the_whole_zone(world, tmp_path):
    redis_proc, store = world

    async def scenario():
        sim = agent_with(redis_proc, tmp_path, 4, drift_interval=3600)
        try:
            await started(sim, store.redis)
            reads = sim.device.reads
            sim.device.fail_next = True
            key = join(store, 102)
            store.flush(ZONE)
            await until(lambda: key in sim.device.state.peers, 5, "the retried join")
            assert sim.device.reads == reads + 1 and not sim.device.fail_next
            assert not sim.task.done() and not sim.errors
            assert simagent.in_sync(sim, simagent.zone_view(store.redis))
        finally:
            await simagent.stop([sim])
    run(scenario)


def test_state_files_are_written_at_most_once_a_second_and_on_exit(world, tmp_path):
    redis_proc, store = world

    async def scenario():
        sim = agent_with(redis_proc, tmp_path, 5, drift_interval=3600)
        files = sim.agent.state
        try:
            await started(sim, store.redis)
            await asyncio.sleep(SAVE_INTERVAL)
            before = len(files.writes)
            burst_started = time.monotonic()
            for i in range(12):
                join(store, 110 + i)
                store.flush(ZONE)
                await asyncio.sleep(0.1)
            burst = files.writes[before:]
            assert 1 <= len(burst) <= 3, burst
            gaps = [b - a for a, b in zip(files.writes[before - 1:], burst)]
            assert all(gap >= SAVE_INTERVAL for gap in gaps), gaps
            assert burst[0] >= burst_started
        finally:
            await simagent.stop([sim])
        cache = files.load()
        assert cache.rev == sim.agent.mirror.rev          # the last change, written on exit
        assert set(cache.peer_map()) == set(sim.agent.mirror.peers)
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files.all())
    run(scenario)


def test_a_published_revision_below_ours_resyncs(world, tmp_path):
    """A failover that lost the last change (Redis replication is asynchronous): the
    zone's published revision goes below the agent's. Updates up to the agent's revision
    would be dropped as stale, so two looks below it take a snapshot."""
    redis_proc, store = world
    k = store.keys

    async def scenario():
        sim = agent_with(redis_proc, tmp_path, 3, revision_interval=0.2, drift_interval=3600)
        try:
            await started(sim, store.redis)
            key = join(store, 102)
            store.flush(ZONE)
            await until(lambda: key in sim.device.state.peers, 5, "the join")
            resyncs, rev = sim.agent.resyncs, int(store.redis.get(k.published(ZONE)))
            # the change is lost: as if the primary that had it died unreplicated
            store.redis.hdel(k.peers(ZONE), key)
            store.redis.set(k.rev(ZONE), rev - 1)
            store.redis.set(k.published(ZONE), rev - 1)
            await until(lambda: sim.agent.resyncs > resyncs and key not in sim.device.state.peers,
                        REVISION_RECHECK * 3 + 2, "the resync")
            assert sim.agent.mirror.rev == rev - 1
            assert simagent.in_sync(sim, simagent.zone_view(store.redis)) and not sim.errors
        finally:
            await simagent.stop([sim])
    run(scenario)

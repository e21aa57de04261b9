"""The agent enforcing a zone policy against a real Redis and `controltower serve`
(aircrew's own Agent; the device and nft are recording fakes): the policy arrives as one
full table, another node's tag change as one set-element transaction, a deletion
removes the table; a failing nft closes the node (no peers) until nft works again."""
from __future__ import annotations

import asyncio
import time

import pytest

from ipam.policies import Policies
from ipam.store import ZoneStore
from testbed import simagent
from wire.proof import generate_private_key, public_key_of

ZONE = "default"
POLICY = {"rules": [{"from": ["tag:ops"], "to": ["*"], "ports": ["tcp/22"]}]}


@pytest.fixture(scope="module")
def world(module_redis, module_tower):
    client = module_redis.client()
    yield module_redis, ZoneStore(client)
    client.close()


def join(store, i, tags=()):
    key = public_key_of(generate_private_key())
    store.register(ZONE, key, listen_port=51820, session=f"s{i}", tags=tuple(tags),
                   endpoint=f"203.0.113.{i + 1}:51820", request_ip=f"10.200.1.{i + 1}")
    store.flush(ZONE)
    return key


async def until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_policy_table_then_deltas_then_removal(world, tmp_path):
    redis_proc, store = world
    nft = simagent.RecordingNft()

    async def scenario():
        sim = simagent.make_agent(redis_proc.url, tmp_path / "a", 1, nft=nft,
                                  heartbeat_interval=3600, endpoint_interval=3600)
        ops = join(store, 1, ["ops"])
        try:
            simagent.start(sim)
            await simagent.wait_in_sync([sim], store.redis, 10)
            # no policy: no table (only the look for a leftover one, as no status file says
            # none was ever loaded)
            assert [k for _, k, _ in nft.log] == ["removal"]
            nft.log.clear()
            Policies(store).set(ZONE, POLICY)
            await until(lambda: nft.log, 5, "the policy")
            _, kind, text = nft.log[-1]
            assert kind == "table" and "elements = { 10.200.1.2 }" in text
            assert sim.agent.firewall.state == "applied"
            # the agent tells the tower at once (a heartbeat on the state change)
            policies = Policies(store)
            rev = policies.get(ZONE).rev
            await until(lambda: (policies.node_state(ZONE, sim.public_key) or {}).get("rev")
                        == rev, 5, "the state reported")
            assert policies.node_state(ZONE, sim.public_key)["state"] == "applied"
            # another node tagged ops joins: one set-element add
            started = time.monotonic()
            other = join(store, 2, ["ops"])
            await until(lambda: len(nft.log) == 2, 5, "the delta")
            assert nft.log[-1][1:] == ("delta", "add element inet apexmesh_wg0 tag.ops_4 "
                                                "{ 10.200.1.3 }\n")
            assert nft.log[-1][0] - started < 1.0
            # it leaves: one delete; the policy goes: the table goes
            store.remove_peer(ZONE, other, "left")
            store.flush(ZONE)
            await until(lambda: len(nft.log) == 3, 5, "the delete")
            assert nft.log[-1][2].startswith("delete element")
            Policies(store).delete(ZONE)
            await until(lambda: len(nft.log) == 4, 5, "the removal")
            assert nft.log[-1][1] == "removal" and sim.agent.firewall.state == "none"
            assert sim.agent.mirror.policy is None and not sim.errors
        finally:
            await simagent.stop([sim])
            Policies(store).delete(ZONE)
            store.remove_peer(ZONE, ops, "left")
            store.flush(ZONE)
    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_node_whose_rules_cannot_load_configures_no_peers(world, tmp_path):
    redis_proc, store = world
    nft = simagent.RecordingNft()
    nft.fail = True

    async def scenario():
        ops = join(store, 5, ["ops"])
        Policies(store).set(ZONE, POLICY)
        sim = simagent.make_agent(redis_proc.url, tmp_path / "b", 2, nft=nft,
                                  heartbeat_interval=0.5, endpoint_interval=3600)
        try:
            simagent.start(sim)
            await until(lambda: sim.agent.firewall is not None
                        and sim.agent.firewall.state == "closed", 10, "closed")
            await asyncio.sleep(0.3)
            assert ops not in sim.device.state.peers      # never open
            policies = Policies(store)
            await until(lambda: (policies.node_state(ZONE, sim.public_key) or {}).get("state")
                        == "closed", 5, "closed reported")
            assert "Operation not permitted" in policies.node_state(ZONE, sim.public_key)["error"]
            summary = policies.summary(ZONE, policies.get(ZONE).rev)
            assert summary["Counts"]["closed"] == 1
            assert summary["NotApplying"][0]["PublicKey"] == sim.public_key
            nft.fail = False                               # retried on the heartbeat
            await until(lambda: sim.agent.firewall.state == "applied", 5, "applied")
            await until(lambda: ops in sim.device.state.peers, 5, "the peers back")
        finally:
            await simagent.stop([sim])
            Policies(store).delete(ZONE)
            store.remove_peer(ZONE, ops, "left")
            store.flush(ZONE)
    asyncio.run(asyncio.wait_for(scenario(), 60))

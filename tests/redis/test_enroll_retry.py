"""An enrollment the tower cannot finish (it could not make the node's Redis user) is
undone and answered `unavailable`: the join key keeps its use and the agent tries again,
against a real Redis, the tower's real worker and gate, and a real Agent."""
from __future__ import annotations

import asyncio
import threading

from aircrew.credential import CredentialFile
from controltower.acl import AgentCredentials
from controltower.worker import RequestWorker
from ipam.store import ZoneStore
from testbed import simagent
from wire.errors import Unavailable
from wire import identity
from wire.proof import generate_private_key, public_key_of

SYNC_WITHIN = 20.0


def uses(registry, key_id: str) -> int:
    return next(r.uses for r in registry.join_keys("default") if r.id == key_id)


def test_a_failed_enrollment_is_undone_and_the_agent_enrolls_on_its_retry(
        redis_client, redis_proc, tmp_path, monkeypatch):
    store = ZoneStore(redis_client)
    store.ensure_default_zone()
    creds = AgentCredentials(redis_client, store.keys)
    key, record = creds.registry.create_join_key("default", store.get_zone("default").network)
    creds.apply_join_key("default", record.id, record.sha256)        # one use only

    applied, made = [], creds.apply_node

    def apply_node(zone, node):       # the first attempt meets a Redis refusing ACL changes
        applied.append(node.name)
        if len(applied) == 1:
            raise Unavailable("cannot manage Redis ACL users (injected)")
        made(zone, node)
    monkeypatch.setattr(creds, "apply_node", apply_node)

    worker = RequestWorker(store, credentials=creds)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()

    async def scenario():
        sim = simagent.make_agent(redis_proc.url, None, 1, join_key=str(key), name="laptop",
                                  credentials=CredentialFile(tmp_path, "wg0"),
                                  heartbeat_interval=3600, endpoint_interval=3600)
        simagent.start(sim)
        try:
            await simagent.wait_in_sync([sim], redis_client, SYNC_WITHIN)
        finally:
            await simagent.stop([sim])
        return sim
    try:
        sim = asyncio.run(asyncio.wait_for(scenario(), SYNC_WITHIN + 10))
    finally:
        stop.set()
        thread.join(10)

    assert applied == ["laptop", "laptop"]                 # refused once, then enrolled
    assert sim.agent.s.credentials.load().user            # its own credential, saved
    used = uses(creds.registry, record.id)
    assert used == 1, used                                 # the failed attempt gave its use back
    nodes = creds.registry.nodes("default")
    assert [n.name for n in nodes.values()] == ["laptop"]  # one record, its first name


def test_undo_enroll_returns_the_use_and_frees_the_name(redis_client):
    store = ZoneStore(redis_client)
    store.ensure_default_zone()
    registry = AgentCredentials(redis_client, store.keys).registry
    once, record = registry.create_join_key("default", store.get_zone("default").network)
    public = public_key_of(generate_private_key())
    store.run(registry.enroll_call("default", once.key_id, public, "0" * 64, "laptop"))
    assert registry.undo_enroll("default", once.key_id, public)
    assert registry.nodes("default") == {} and registry.node_by_name("default", "laptop") is None
    assert uses(registry, record.id) == 0
    assert not registry.undo_enroll("default", once.key_id, public)     # nothing left to undo
    assert uses(registry, record.id) == 0          # and no use given twice
    other = public_key_of(generate_private_key())                      # the key works again
    assert store.run(registry.enroll_call("default", once.key_id, other, "0" * 64,
                                          "laptop")).name == "laptop"
    zone_secret = public_key_of(generate_private_key())
    store.run(registry.enroll_call("default", identity.ZONE_SECRET_ID, zone_secret, "0" * 64, "z"))
    assert registry.undo_enroll("default", identity.ZONE_SECRET_ID, zone_secret)

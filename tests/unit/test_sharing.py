"""testbed.sharing and the simulated agent's parts, without Redis: what many agents of one
process share gives each of them what it would have computed itself."""
from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from aircrew import reconcile
from aircrew.mirror import Outcome, ZoneMirror
from aircrew.session import TowerSession, ZoneSnapshot
from bench import fulllist
from testbed.sharing import ProcessShared, SharedMirror, StartGate
from testbed.simagent import AppliedLog, InlineExecutor, NotingDevice, make_agent
from wire import messages
from wire.messages import Change, Peer, ZoneUpdate
from wire.proof import encode_key


def peer(n: int, endpoint: str | None = None) -> Peer:
    return Peer(key=encode_key(n.to_bytes(32, "big")), address=f"10.64.0.{n}",
                endpoint=endpoint or f"192.0.2.{n}:51820", session="s")


def update_json(since: int, rev: int, *peers: Peer) -> str:
    changes = [{"rev": rev, "op": "upsert", "peer": json.loads(p.to_json())} for p in peers]
    return json.dumps({"v": 1, "zone": "bench", "since": since, "rev": rev,
                       "changes": changes})


def test_parsing_is_shared_and_counted_and_gives_the_agents_own_result():
    data = update_json(1, 2, peer(1), peer(2))
    with ProcessShared() as shared:
        first, second = messages.parse_update(data), messages.parse_update(data.encode())
    assert messages.parse_update is not shared.parse_update      # uninstalled again
    assert first is second and first == messages.parse_update(data)
    assert (shared.parses, shared.update_messages, shared.update_bytes) == (1, 2, 2 * len(data))
    with ProcessShared(parse_shared=False) as each:
        assert messages.parse_update(data) is not messages.parse_update(data)
    assert each.parses == 2


def test_peer_configs_are_computed_once_per_record():
    a, b = peer(1), peer(2)
    original = reconcile.peer_config
    with ProcessShared():
        assert reconcile.peer_config(a) is reconcile.peer_config(a)
        assert reconcile.peer_config(a) == original(a)
        assert reconcile.peer_config(b) == original(b)
        moved = replace(a, endpoint="203.0.113.1:4000")            # a new record: a new config
        assert reconcile.peer_config(moved).endpoint == "203.0.113.1:4000"
        assert reconcile.desired("own", [a, b]).peers == {a.key: original(a), b.key: original(b)}
    assert reconcile.peer_config is original


def test_snapshot_records_are_parsed_once_per_record_text():
    from wire import snapshot as snapshots
    from wire.errors import InvalidInput
    a, b = peer(1), peer(2)
    records = {a.key: messages.peer_record(a), b.key: messages.peer_record(b)}
    original = snapshots.peers
    with ProcessShared() as shared:
        first = snapshots.peers(records)
        again = snapshots.peers(dict(records))
        assert first == original(records) == {a.key: a, b.key: b}
        assert all(again[k] is first[k] for k in first)
        assert shared.record_parses == 2
        moved = replace(a, endpoint="203.0.113.1:4000")
        changed = snapshots.peers({**records, a.key: messages.peer_record(moved)})
        assert changed[a.key] == moved and changed[b.key] is first[b.key]
        skipped: list[InvalidInput] = []
        assert snapshots.peers({**records, "x": "{not json"}, skipped.append) == first
        assert len(skipped) == 1
        with pytest.raises(InvalidInput):
            snapshots.peers({"x": "{not json"})
    assert snapshots.peers is original


def test_rev_only_mirror_keeps_its_own_and_changed_records_and_counts_gaps():
    own, a, b = peer(1), peer(2), peer(3)
    shared = ProcessShared(keep_peers=False)
    shared.initial = {p.key: p for p in (own, a, b)}
    mirror = SharedMirror(shared, own.key)
    moved = replace(b, endpoint="203.0.113.3:1")
    mirror.load(5, {own.key: own, a.key: a, b.key: moved})
    assert set(mirror.peers) == {own.key, b.key} and mirror.rev == 5
    c = peer(4)
    assert mirror.apply(ZoneUpdate("bench", 5, 6, (Change(6, "upsert", peer=c),))) is Outcome.APPLIED
    assert set(mirror.peers) == {own.key, b.key, c.key} and mirror.gaps == 0
    assert mirror.apply(ZoneUpdate("bench", 8, 9, ())) is Outcome.GAP
    assert mirror.gaps == 1
    full = SharedMirror(ProcessShared(), own.key)
    full.load(5, shared.initial)
    assert set(full.peers) == set(shared.initial)


def test_the_start_gate_reads_one_snapshot_for_every_waiting_agent():
    snapshot = ZoneSnapshot("10.64.0.0/16", 7, {})
    reads: list[object] = []

    async def read(session):
        reads.append(session)
        return snapshot

    async def main():
        gate = StartGate()
        waiting = [gate.arrive(object()) for _ in range(3)]
        assert gate.arrived == 3 and not any(f.done() for f in waiting)
        assert await gate.release(read, spread=0.05) is snapshot
        assert await asyncio.gather(*waiting) == [snapshot] * 3
        assert gate.open and gate.served == 3 and len(reads) == 1
        assert await StartGate().release(read) is None              # nobody waits
    asyncio.run(main())


def test_after_start_up_snapshots_are_each_agents_own(monkeypatch):
    calls: list[TowerSession] = []

    async def own_snapshot(session):
        calls.append(session)
        return ZoneSnapshot("10.64.0.0/16", len(calls), {})
    monkeypatch.setattr(TowerSession, "snapshot", own_snapshot)

    async def main():
        with ProcessShared() as shared:
            session = object.__new__(TowerSession)
            waiting = asyncio.ensure_future(TowerSession.snapshot(session))
            await asyncio.sleep(0)
            assert not waiting.done()
            await shared.release_gate()
            assert (await waiting).rev == 1
            assert (await TowerSession.snapshot(session)).rev == 2      # a resync: its own
        assert TowerSession.snapshot is own_snapshot
    asyncio.run(main())


def test_full_lists_reach_the_agent_as_snapshots():
    a, b, c = peer(1), peer(2), peer(3)
    lists = fulllist.ListSnapshots()
    assert lists.snapshot("10.64.0.0/16") is None
    update = lists(fulllist.encode("bench", 4, [a.to_json(), b.to_json()]))
    mirror = ZoneMirror()
    mirror.load(2, {a.key: a})
    assert mirror.apply(update) is Outcome.GAP                  # so the agent resyncs ...
    snapshot = lists.snapshot("10.64.0.0/16")                   # ... from the list
    assert (snapshot.rev, set(snapshot.peers)) == (4, {a.key, b.key})
    lists(fulllist.encode("bench", 3, [c.to_json()]))           # late and older: not taken
    assert lists.snapshot("10.64.0.0/16").rev == 4
    mirror.load(snapshot.rev, snapshot.peers)
    assert mirror.apply(update) is Outcome.STALE                # the same list again


def test_resyncs_take_the_snapshot_given_once_the_gate_is_open(monkeypatch):
    given = ZoneSnapshot("10.64.0.0/16", 9, {})
    start = ZoneSnapshot("10.64.0.0/16", 1, {})

    async def from_redis(session):
        return start
    monkeypatch.setattr(TowerSession, "snapshot", from_redis)

    async def main():
        with ProcessShared(resync_from=lambda cidr: given) as shared:
            session = object.__new__(TowerSession)
            waiting = asyncio.ensure_future(TowerSession.snapshot(session))
            await asyncio.sleep(0)
            await shared.release_gate()
            assert await waiting is start
            assert await TowerSession.snapshot(session) is given
    asyncio.run(main())


def test_inline_executor_answers_run_in_executor_at_once():
    def boom():
        raise ValueError("no")

    async def main():
        loop = asyncio.get_running_loop()
        executor = InlineExecutor()
        assert await loop.run_in_executor(executor, sum, [1, 2]) == 3
        with pytest.raises(ValueError, match="no"):
            await loop.run_in_executor(executor, boom)
    asyncio.run(main())
    assert InlineExecutor().submit(sum, [2, 3]).result() == 5       # outside a loop too


def test_noting_device_notes_peers_and_the_moment_it_holds_enough():
    applied = AppliedLog()
    device = NotingDevice(applied)
    device.watch(2)
    first, second = (reconcile.peer_config(peer(n)) for n in (1, 2))
    device.upsert_peer(first)
    assert device.reached_at is None
    device.upsert_peer(second)
    device.upsert_peer(first)
    assert device.reached_at is not None
    assert applied.get(first.public_key)[0] == 2 and applied.get(second.public_key)[0] == 1
    assert applied.get("unknown") == [0, 0.0, 0.0]


def test_simulated_agent_is_the_agent_with_inline_device_calls_and_a_seeded_session():
    sim = make_agent("redis://127.0.0.1:1/0", None, 3, session="seeded", inline_device=True,
                     endpoint=("192.0.2.9", 4500), hostname="node-3")
    from aircrew.agent import Agent
    assert type(sim.agent) is Agent
    assert isinstance(sim.agent._device_thread, InlineExecutor)
    assert sim.agent.session.session_id == "seeded"
    assert sim.agent.endpoints.discover(False) == ("192.0.2.9:4500", "static")
    assert sim.agent.s.hostname == "node-3" and sim.agent.s.listen_port == 51820

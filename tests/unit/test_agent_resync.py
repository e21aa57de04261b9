"""A resync: snapshot, then the updates buffered while it was read; a gap among those
takes another snapshot at once (not at the next update or revision check)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aircrew.agent import Agent, AgentSettings
from aircrew.device import RecordingDevice
from aircrew.endpoint import StaticEndpoint
from aircrew.inbox import Inbox
from testbed.simagent import MemoryState, RecordingLinks
from wire.messages import Change, Peer, ZoneUpdate
from wire.proof import generate_private_key, public_key_of

ZONE = "default"


def peer(n: int, session: str = "s") -> Peer:
    return Peer(key=public_key_of(generate_private_key()), address=f"10.200.0.{n}",
                endpoint=f"203.0.113.{n}:51820", session=session)


@dataclass
class Snapshot:
    cidr: str
    rev: int
    peers: dict[str, Peer]
    policy: str | None = None


@dataclass
class ScriptedSession:
    """Hands out prepared snapshots; before each one is answered, queues the updates that
    'arrived while it was read'."""
    snapshots: list[tuple[Snapshot, list[ZoneUpdate]]]
    session_id: str = "own-session"
    updates: Inbox = field(default_factory=Inbox)
    taken: int = 0

    async def snapshot(self) -> Snapshot:
        snapshot, buffered = self.snapshots[self.taken]
        self.taken += 1
        for update in buffered:
            self.updates.put_nowait(update)
        return snapshot


def upsert(since: int, p: Peer) -> ZoneUpdate:
    return ZoneUpdate(ZONE, since, since + 1, (Change(since + 1, "upsert", peer=p),))


def test_a_gap_among_buffered_updates_takes_another_snapshot(tmp_path):
    private = generate_private_key()
    me = Peer(key=public_key_of(private), address="10.200.0.1", session="own-session")
    a, b, c = peer(2), peer(3), peer(4)
    first = Snapshot("10.200.0.0/20", 5, {me.key: me, a.key: a})
    # rev 6 was lost: 7 arrives on top of 6, a gap.
    second = Snapshot("10.200.0.0/20", 7, {me.key: me, a.key: a, b.key: b, c.key: c})
    session = ScriptedSession([(first, [upsert(6, c)]), (second, [upsert(7, peer(5))])])

    agent = Agent(AgentSettings(zone=ZONE, private_key=private,
                                controller_urls=["redis://127.0.0.1:1"]),
                  RecordingDevice(), RecordingLinks(), StaticEndpoint("203.0.113.1", 51820),
                  MemoryState())
    agent.assignment = {"address": me.address, "prefix_len": 20, "cidr": "10.200.0.0/20"}
    agent.session = session

    async def resync():
        await agent._resync()
    asyncio.run(resync())

    assert session.taken == 2
    assert agent.resyncs == 2
    assert agent.mirror.rev == 8
    assert {a.key, b.key, c.key} <= set(agent.device.read().peers)
    assert len(agent.device.read().peers) == 4          # a, b, c and the one of rev 8


def test_a_policy_the_agent_cannot_read_leaves_the_previous_one_in_force():
    from aircrew.mirror import ZoneMirror
    from wire import policy as P

    class Stub:
        mirror = ZoneMirror()
    stub = Stub()
    old = P.parse({"rules": [{"from": ["tag:ops"], "to": ["*"]}]})
    stub.mirror.load(3, {}, old, 2)
    Agent._load_mirror(stub, 5, {}, '{"rev": 4, "policy": {"rules": [], "v2": true}}')
    assert stub.mirror.rev == 5 and stub.mirror.policy == old and stub.mirror.policy_rev == 2
    Agent._load_mirror(stub, 6, {}, None)
    assert stub.mirror.policy is None

"""The follow loop waits for the next update without waking up on its own: a stop and a
lost connection end the wait at once, periodic work runs when it is due."""
from __future__ import annotations

import asyncio
import time

import pytest
import redis

from aircrew.agent import Agent, AgentSettings
from aircrew.device import RecordingDevice
from aircrew.endpoint import StaticEndpoint
from aircrew.session import ZoneSnapshot
from testbed.simagent import MemoryState, RecordingLinks
from testbed.standin import StandInSession
from wire.errors import Unavailable
from wire.messages import Peer
from wire.proof import generate_private_key, public_key_of


def following(**settings) -> tuple[Agent, StandInSession]:
    """An agent whose mirror holds the stand-in session's zone (itself alone)."""
    private = generate_private_key()
    me = Peer(key=public_key_of(private), address="10.200.0.1", session="own-session")
    session = StandInSession(ZoneSnapshot("10.200.0.0/20", 0, {me.key: me}), "own-session")
    agent = Agent(AgentSettings(zone="default", private_key=private,
                                controller_urls=["redis://127.0.0.1:1"], **settings),
                  RecordingDevice(), RecordingLinks(), StaticEndpoint("203.0.113.1", 51820),
                  MemoryState())
    agent.mirror.load(0, {me.key: me})
    agent.session = session  # type: ignore[assignment]
    return agent, session


@pytest.mark.parametrize("interval", [3600.0, float("inf")])
def test_stop_ends_the_wait_at_once(interval):
    async def scenario():
        agent, _ = following(heartbeat_interval=interval, revision_interval=interval,
                             endpoint_interval=interval, drift_interval=interval)
        follow = asyncio.create_task(agent._follow())
        await asyncio.sleep(0.1)
        started = time.monotonic()
        agent.stop.set()
        await asyncio.wait_for(follow, 5)
        return time.monotonic() - started
    assert asyncio.run(scenario()) < 1.0


def test_a_lost_connection_ends_the_wait_at_once():
    async def scenario():
        agent, session = following(heartbeat_interval=3600, revision_interval=3600)
        follow = asyncio.create_task(agent._follow())
        await asyncio.sleep(0.1)
        started = time.monotonic()
        session.lost.set()
        session.updates.wake()       # what TowerSession does when its reader fails
        with pytest.raises(Unavailable):
            await asyncio.wait_for(follow, 5)
        return time.monotonic() - started
    assert asyncio.run(scenario()) < 1.0


def test_periodic_work_runs_when_due_between_updates():
    async def scenario():
        agent, session = following(heartbeat_interval=0.1, revision_interval=0.25)
        follow = asyncio.create_task(agent._follow())
        await asyncio.sleep(0.6)
        agent.stop.set()
        await asyncio.wait_for(follow, 5)
        return session.requests.count("heartbeat"), session.revision_checks
    heartbeats, revisions = asyncio.run(scenario())
    assert 3 <= heartbeats <= 7
    assert 1 <= revisions <= 3


class FailingCommands(StandInSession):
    """Heartbeats and revision checks whose command cannot reach Redis (a new connection
    timing out), while the subscription is intact unless ``lost`` is set."""

    async def request(self, kind, body=None, **_):
        self.requests.append(kind)
        raise redis.exceptions.TimeoutError("Timeout connecting to server")

    async def revision(self) -> int:
        self.revision_checks += 1
        raise redis.exceptions.ConnectionError("Error 111 connecting")


def test_a_failed_heartbeat_keeps_an_intact_subscription_until_failures_repeat():
    async def scenario():
        agent, session = following(heartbeat_interval=0.1, revision_interval=3600)
        session.__class__ = FailingCommands
        follow = asyncio.create_task(agent._follow())
        await asyncio.sleep(0.15)
        assert not follow.done()            # the first failure: tried again at its turn
        with pytest.raises(redis.exceptions.TimeoutError):
            await asyncio.wait_for(follow, 5)
        return session.requests.count("heartbeat")
    assert asyncio.run(scenario()) == 3    # COMMAND_FAILURES in a row end the session


class EveryThirdHeartbeatAnswered(StandInSession):
    async def request(self, kind, body=None, **_):
        self.requests.append(kind)
        if len(self.requests) % 3:
            raise redis.exceptions.ConnectionError("Error 111 connecting")
        return {"ok": True}


def test_an_answered_heartbeat_resets_the_count_of_failures():
    async def scenario():
        agent, session = following(heartbeat_interval=0.05, revision_interval=3600)
        session.__class__ = EveryThirdHeartbeatAnswered
        follow = asyncio.create_task(agent._follow())
        while len(session.requests) < 8 and not follow.done():
            await asyncio.sleep(0.02)
        assert not follow.done()            # never COMMAND_FAILURES in a row
        agent.stop.set()
        await asyncio.wait_for(follow, 5)
    asyncio.run(scenario())


def test_a_failed_revision_check_keeps_an_intact_subscription():
    async def scenario():
        agent, session = following(heartbeat_interval=3600, revision_interval=0.05)
        session.__class__ = FailingCommands
        follow = asyncio.create_task(agent._follow())
        await asyncio.sleep(0.2)
        assert session.revision_checks == 1 and not follow.done()   # again in 2 s
        agent.stop.set()
        await asyncio.wait_for(follow, 5)
    asyncio.run(scenario())


def test_a_failed_command_with_the_subscription_lost_ends_the_session_at_once():
    async def scenario():
        agent, session = following(heartbeat_interval=0.05, revision_interval=3600)
        session.__class__ = FailingCommands
        session.lost.set()
        with pytest.raises((redis.exceptions.TimeoutError, Unavailable)):
            await asyncio.wait_for(agent._follow(), 5)
        return session.requests.count("heartbeat")
    assert asyncio.run(scenario()) <= 1

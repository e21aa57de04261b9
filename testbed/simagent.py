"""Simulated nodes for the fault tests: the real aircrew Agent, only the device is fake.

Each SimAgent runs `aircrew.agent.Agent` (register, subscribe, snapshot, deltas, resync,
heartbeats, reconnection with backoff) as an asyncio task, with a RecordingDevice, links
that only remember what they were told, a static endpoint and a temporary state dir.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from aircrew.agent import Agent, AgentSettings
from aircrew.device import RecordingDevice
from aircrew.endpoint import StaticEndpoint
from aircrew.state import StateFiles
from wire.keys import Keys
from wire.messages import parse_peer
from wire.proof import generate_private_key


class FakeLinks:
    """aircrew.agent.Links without a kernel: address, link state and routes in memory."""

    def __init__(self) -> None:
        self.address: tuple[str, int] | None = None
        self.is_up = False
        self.route_set: set[str] = set()

    def set_address(self, address: str, prefix_len: int) -> None:
        self.address = (address, prefix_len)

    def up(self) -> None:
        self.is_up = True

    def routes(self) -> set[str]:
        return set(self.route_set)

    def add_route(self, prefix: str) -> None:
        self.route_set.add(prefix)

    def remove_route(self, prefix: str) -> None:
        self.route_set.discard(prefix)


@dataclass
class SimAgent:
    agent: Agent
    device: RecordingDevice
    links: FakeLinks
    task: asyncio.Task | None = None
    errors: list[BaseException] = field(default_factory=list)

    @property
    def public_key(self) -> str:
        return self.agent.public_key

    def peer_view(self) -> dict[str, tuple[str, ...]]:
        """What the device holds: public key -> allowed IPs."""
        return {k: p.allowed_ips for k, p in self.device.state.peers.items()}


def make_agent(redis_url: str, state_dir: Path, index: int, zone: str = "default",
               **overrides) -> SimAgent:
    settings = AgentSettings(zone=zone, private_key=generate_private_key(),
                             controller_urls=[redis_url], listen_port=51820,
                             hostname=f"sim{index}", **overrides)
    device, links = RecordingDevice(), FakeLinks()
    state_dir.mkdir(parents=True, exist_ok=True)
    agent = Agent(settings, device, links, StaticEndpoint(f"198.51.100.{index % 250 + 1}", 51820),
                  StateFiles(state_dir, "wg0"))
    real_factory = agent.client_factory

    def named_client(url: str):
        """The agent's own client, named so tests can find its connections (CLIENT LIST)."""
        client = real_factory(url)
        client.connection_pool.connection_kwargs["client_name"] = client_name(settings.hostname)
        return client
    agent.client_factory = named_client
    return SimAgent(agent, device, links)


def client_name(hostname: str) -> str:
    return f"simagent-{hostname}"


def pubsub_connections(client, sims: list[SimAgent]) -> dict[str, int]:
    """hostname -> number of the agent's open pub/sub connections (sync client)."""
    names = {client_name(s.agent.s.hostname): s.agent.s.hostname for s in sims}
    found = {s.agent.s.hostname: 0 for s in sims}
    for conn in client.client_list(_type="pubsub"):
        if conn.get("name") in names:
            found[names[conn["name"]]] += 1
    return found


def start(sim: SimAgent) -> None:
    async def guarded():
        try:
            await sim.agent.run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - recorded; the test asserts on it
            sim.errors.append(exc)
            raise
    sim.task = asyncio.create_task(guarded(), name=f"agent-{sim.agent.s.hostname}")


async def stop(sims: list[SimAgent], timeout: float = 10.0) -> None:
    for sim in sims:
        sim.agent.stop.set()
    tasks = [s.task for s in sims if s.task is not None]
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for sim in sims:
        sim.agent._device_thread.shutdown(wait=False)


def zone_view(client, zone: str = "default", keys: Keys | None = None
              ) -> dict[str, tuple[str, ...]]:
    """The zone's peers as the tower holds them: public key -> allowed IPs (sync client)."""
    keys = keys or Keys()
    return {k: tuple(sorted(parse_peer(r).allowed_ips()))
            for k, r in client.hgetall(keys.peers(zone)).items()}


def in_sync(sim: SimAgent, view: dict[str, tuple[str, ...]]) -> bool:
    want = {k: v for k, v in view.items() if k != sim.public_key}
    return sim.public_key in view and sim.peer_view() == want


async def wait_in_sync(sims: list[SimAgent], client, timeout: float, zone: str = "default",
                       interval: float = 0.05, resynced_since: list[int] | None = None) -> float:
    """Seconds until every agent's device equals the zone (read afresh each time) and,
    given ``resynced_since`` (each agent's resync count before), every agent has taken a
    new snapshot since; raises AssertionError with the laggards after ``timeout``."""
    started = time.monotonic()
    since = resynced_since or [-1] * len(sims)
    while True:
        view = await asyncio.to_thread(zone_view, client, zone)
        lagging = [s for s, n in zip(sims, since)
                   if not in_sync(s, view) or s.agent.resyncs <= n]
        elapsed = time.monotonic() - started
        if not lagging:
            return elapsed
        if elapsed > timeout:
            detail = {s.agent.s.hostname: (len(s.peer_view()), s.agent.mirror.rev, s.agent.resyncs)
                      for s in lagging}
            raise AssertionError(f"{len(lagging)} agents not in sync after {timeout:.1f}s "
                                 f"(zone has {len(view)} peers; agent: (peers, rev, resyncs)): "
                                 f"{detail}")
        await asyncio.sleep(interval)


async def open_client(port: int) -> aioredis.Redis:
    """A client like the agent's (from_url: no redis-py retries, errors surface at once)."""
    return aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", decode_responses=True,
                                   max_connections=4000)


def dump(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)

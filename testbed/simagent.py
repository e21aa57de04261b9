"""Simulated nodes: the real aircrew ``Agent``, with a device and links that only remember.

A :class:`SimAgent` runs ``aircrew.agent.Agent`` unchanged (register with proof of
possession, subscribe, snapshot, deltas, resync, heartbeats, revision and drift checks,
reconnection with backoff) as an asyncio task. Only what touches the machine is
replaced: the WireGuard device (``aircrew.device.RecordingDevice``, or a
:class:`NotingDevice` that also notes when each peer was applied), the links (address
and routes in memory), the endpoint (static) and, where asked, the state files
(:class:`MemoryState`: nothing written).

The fault tests run tens of these in the test process; the benchmark runs thousands per
simulator process with what ``testbed.sharing`` shares between them.
"""
from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import redis.asyncio as aioredis

from aircrew.agent import Agent, AgentSettings
from aircrew.device import PeerConfig, RecordingDevice
from aircrew.endpoint import StaticEndpoint
from aircrew.firewall import Firewall
from aircrew.nftables import NftError
from aircrew.state import StateFiles
from wire.keys import Keys
from wire.messages import parse_peer
from wire.proof import generate_private_key

from .errors import LabError


class RecordingLinks:
    """``aircrew.agent.Links`` without a kernel: address, link state and routes in memory."""

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


class AppliedLog:
    """When peers reached the devices of many agents: {peer key: [devices, last, first]}.

    Times are ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process on Linux).
    """

    def __init__(self) -> None:
        self.entries: dict[str, list[float]] = {}

    def note(self, key: str, now: float) -> None:
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = [1, now, now]
        else:
            entry[0] += 1
            entry[1] = now

    def get(self, key: str) -> list[float]:
        return self.entries.get(key, [0, 0.0, 0.0])


class NotingDevice(RecordingDevice):
    """A recording device that notes each peer operation in an :class:`AppliedLog` and
    the moment it first holds ``target`` peers (``reached_at``)."""

    def __init__(self, applied: AppliedLog, keep_log: bool = False) -> None:
        super().__init__(keep_log=keep_log)
        self.applied = applied
        self.target: int | None = None
        self.reached_at: float | None = None

    def watch(self, more: int) -> None:
        """From now on, note when the device holds ``more`` peers more than now."""
        self.target = len(self.state.peers) + more
        self.reached_at = None
        self._check()

    def upsert_peer(self, peer: PeerConfig) -> None:
        super().upsert_peer(peer)
        self.applied.note(peer.public_key, time.monotonic())
        self._check()

    def remove_peer(self, public_key: str) -> None:
        super().remove_peer(public_key)
        self.applied.note(public_key, time.monotonic())

    def _check(self) -> None:
        if (self.target is not None and self.reached_at is None
                and len(self.state.peers) >= self.target):
            self.reached_at = time.monotonic()


class MemoryState(StateFiles):
    """State files that are never written: no cache to start from, saves dropped.

    For thousands of simulated agents in one process, whose files nobody reads: the
    agent still decides when to write and renders what it would write (its own cost);
    only the disk write is left out."""

    def __init__(self, interface: str = "wg0") -> None:
        super().__init__(Path("/nonexistent-simulated-agent"), interface)
        self.saves = 0

    def load(self) -> None:
        return None

    def save(self, cache: Any, records: Any, wg_quick: Any) -> None:
        self.saves += 1

    def remove(self) -> None:
        pass


class InlineExecutor(Executor):
    """Runs each call at once, on the calling thread (the event loop's).

    The agent runs device calls on a thread of its own because pyroute2 runs an event
    loop inside; a recording device needs no thread, and thousands of agents' threads
    would measure thread switches. Called from a running loop, ``submit`` returns a
    finished asyncio future, which ``loop.run_in_executor`` hands back as it is
    (no cross-thread wake-up)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        try:
            future: Any = asyncio.get_running_loop().create_future()
        except RuntimeError:
            future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


class SessionSeed:
    """Stands for an agent's previous session until it connects: the agent keeps its
    session id across reconnections (``Agent.session.session_id``), so a seeded agent
    registers with this id, as a node whose record was written beforehand would."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id


@dataclass
class SimAgent:
    agent: Agent
    device: RecordingDevice
    links: RecordingLinks
    task: asyncio.Task | None = None
    errors: list[BaseException] = field(default_factory=list)
    connections: int = 0        # clients the agent asked for: 1 + reconnections
    default_clients: Callable[[str], aioredis.Redis] | None = None   # the agent's own

    def use_clients(self, factory: Callable[[str], aioredis.Redis]) -> None:
        """The agent gets its Redis clients from ``factory`` (counted in ``connections``)."""
        def client(url: str) -> aioredis.Redis:
            self.connections += 1
            return factory(url)
        self.agent.client_factory = client

    @property
    def public_key(self) -> str:
        return self.agent.public_key

    def peer_view(self) -> dict[str, tuple[str, ...]]:
        """What the device holds: public key -> allowed IPs."""
        return {k: p.allowed_ips for k, p in self.device.state.peers.items()}


class RecordingNft:
    """An nft that applies nothing and notes each transaction: (monotonic time, kind,
    the text). ``fail``: raise NftError for every transaction while it is set."""

    def __init__(self, keep_text: bool = True) -> None:
        self.log: list[tuple[float, str, str]] = []
        self.keep_text = keep_text
        self.fail = False

    def run(self, text: str) -> None:
        if self.fail:
            raise NftError("Error: Could not process rule: Operation not permitted")
        kind = ("delta" if text.startswith(("add element", "delete element"))
                else "table" if "chain" in text else "removal")
        self.log.append((time.monotonic(), kind, text if self.keep_text else ""))

    def list_table(self, family: str, name: str) -> str:
        return ""


def make_agent(redis_url: str, state_dir: Path | None, index: int, zone: str = "default", *,
               private_key: str | None = None, session: str | None = None,
               device: RecordingDevice | None = None, endpoint: tuple[str, int] | None = None,
               inline_device: bool = False, nft: RecordingNft | None = None,
               **overrides: Any) -> SimAgent:
    """A simulated node ``index``: ``aircrew.agent.Agent`` with ``AgentSettings(**overrides)``.

    ``state_dir`` None: :class:`MemoryState`. ``session``: the session id it registers
    with (default: a fresh one, as a starting agent). ``endpoint``: (ip, port) it
    advertises (default 198.51.100.<index>:51820). Its Redis clients are the agent's own,
    named ``simagent-<hostname>`` for CLIENT LIST (``SimAgent.use_clients`` to change).
    ``inline_device``: device calls on the event loop instead of the agent's device thread.
    ``nft``: enforce the zone policy through it (a Firewall on that recording nft).
    """
    options: dict[str, Any] = {"listen_port": 51820, "hostname": f"sim{index}", **overrides}
    settings = AgentSettings(zone=zone, private_key=private_key or generate_private_key(),
                             controller_urls=[redis_url], **options)
    device = device if device is not None else RecordingDevice()
    links = RecordingLinks()
    if state_dir is None:
        state: StateFiles = MemoryState()
    else:
        state_dir.mkdir(parents=True, exist_ok=True)
        state = StateFiles(state_dir, "wg0")
    ip, port = endpoint or (f"198.51.100.{index % 250 + 1}", 51820)
    firewall = Firewall("wg0", nft) if nft is not None else None
    agent = Agent(settings, device, links, StaticEndpoint(ip, port), state, firewall=firewall)
    sim = SimAgent(agent, device, links, default_clients=agent.client_factory)
    sim.use_clients(_named(agent.client_factory, client_name(settings.hostname)))
    if session is not None:
        agent.session = SessionSeed(session)  # type: ignore[assignment]
    if inline_device:
        run_device_calls_inline(agent)
    return sim


def run_device_calls_inline(agent: Agent) -> None:
    """Give the agent (and its state writer, where it has one) an :class:`InlineExecutor`
    for every executor it holds: its device thread and its state-file thread."""
    for owner in (agent, getattr(agent, "state_writer", None)):
        for name, value in list(vars(owner).items()) if owner is not None else ():
            if isinstance(value, Executor) and not isinstance(value, InlineExecutor):
                value.shutdown(wait=False)
                setattr(owner, name, InlineExecutor())
    if not isinstance(getattr(agent, "_device_thread", None), InlineExecutor):
        raise LabError("aircrew.agent.Agent has no executor '_device_thread' any more: "
                       "testbed.simagent.run_device_calls_inline needs updating")


def _named(factory: Callable[[str], aioredis.Redis], name: str
           ) -> Callable[[str], aioredis.Redis]:
    def named_client(url: str) -> aioredis.Redis:
        """The agent's own client, named so tests can find its connections (CLIENT LIST)."""
        client = factory(url)
        client.connection_pool.connection_kwargs["client_name"] = name
        return client
    return named_client


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
    """Run the agent as a task of the running loop; an exception ends up in ``sim.errors``."""
    async def guarded() -> None:
        try:
            await sim.agent.run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - recorded; the caller asserts on it
            sim.errors.append(exc)
            raise
    sim.task = asyncio.create_task(guarded(), name=f"agent-{sim.agent.s.hostname}")


async def stop(sims: list[SimAgent], timeout: float = 10.0) -> None:
    """Ask every agent to stop, cancel those that do not within ``timeout``."""
    for sim in sims:
        sim.agent.stop.set()
    tasks = [s.task for s in sims if s.task is not None]
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for sim in sims:
        executor = getattr(sim.agent, "_device_thread", None)
        if isinstance(executor, Executor):
            executor.shutdown(wait=False)


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


def dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)

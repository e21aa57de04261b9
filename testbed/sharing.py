"""What thousands of simulated agents in one process share (the benchmark's simulators).

Every simulated agent is the real ``aircrew.agent.Agent`` (``testbed.simagent``). Some of
its work is the same for every agent of a process: identical bytes reach each of them,
and pure functions of them give identical, immutable results. Repeated thousands of
times on one 2-core machine that work would measure the machine, not the control plane
(on real nodes each agent does it once, on its own CPU, in parallel with all the others).
So, within one simulator process, :meth:`ProcessShared.install` puts in place:

* **parsing** (``wire.messages.parse_update``): each message is parsed once and the
  frozen result handed to every agent (``parse_shared=False`` turns this off); the
  bytes and messages the agents received are counted here;
* **peer configurations** (``aircrew.reconcile.peer_config``): a function of one
  immutable peer record, computed once per record (by identity) and shared;
* **the records of a snapshot** (``wire.snapshot.peers``, what a resync parses): each
  record text is parsed once per process and the frozen ``Peer`` shared; every agent
  still reads its own snapshot from Redis;
* **the start-up snapshot** (``aircrew.session.TowerSession.snapshot``): while
  :class:`StartGate` is closed, an agent's snapshot waits for the process's other agents;
  once every agent has subscribed and registered, one snapshot is read for all of them
  (so each was subscribed before it was read). Later snapshots (resyncs) are each the
  agent's own (or, given ``resync_from``, what it gives: full-list mode's newest list);
* one connection pool per process (``client_factory``), as one client served all
  agents of a process before; every agent still holds its own pub/sub connection.

``keep_peers=False`` (``--state rev-only``): an agent's mirror keeps the start-up
snapshot's revision and its own record but not the other records it shares with the
process (:class:`SharedMirror`); every record that changes later is kept. 10,000 mirrors
of 10,000 records would be ~10 GB of dicts.

The agents also run their device calls on the event loop (``InlineExecutor``), with the
whole-zone drift check left to ``bench join``'s one measurement of it, as before.
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis

from aircrew import reconcile
from aircrew.device import DEFAULT_KEEPALIVE, PeerConfig
from aircrew.mirror import Outcome, ZoneMirror
from aircrew.session import TowerSession, ZoneSnapshot
from wire import messages
from wire import snapshot as snapshots
from wire.errors import InvalidInput
from wire import policy as policies
from wire.messages import Peer, ZoneUpdate
from wire.policy import Member, Policy

from .simagent import AppliedLog

log = logging.getLogger(__name__)

CONFIG_CACHE = 200_000        # peer configs kept per process


class StartGate:
    """Holds the agents' first snapshot until :meth:`release` reads one for all of them."""

    def __init__(self) -> None:
        self.arrived = 0
        self.served = 0
        self.progress = asyncio.Event()      # set on every arrival
        self.snapshot: ZoneSnapshot | None = None
        self._waiting: list[tuple[TowerSession, asyncio.Future[ZoneSnapshot]]] = []
        self._open = False

    @property
    def open(self) -> bool:
        return self._open

    def arrive(self, session: TowerSession) -> asyncio.Future[ZoneSnapshot]:
        future: asyncio.Future[ZoneSnapshot] = asyncio.get_running_loop().create_future()
        self._waiting.append((session, future))
        self.arrived += 1
        self.progress.set()
        return future

    async def release(self, read: Callable[[TowerSession], Any],
                      spread: float = 0.0) -> ZoneSnapshot | None:
        """Read one snapshot through a waiting agent's session and hand it to every
        waiting agent, one after the other over ``spread`` seconds; from now on
        snapshots pass through. None when nobody waits."""
        self._open = True
        waiting, self._waiting = self._waiting, []
        live = [(s, f) for s, f in waiting if not f.done()]
        if not live:
            return None
        try:
            snapshot = await read(live[-1][0])
        except BaseException as exc:
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            raise
        self.snapshot = snapshot
        loop = asyncio.get_running_loop()
        for n, (_, future) in enumerate(live):
            loop.call_later(spread * n / len(live), self._serve, future, snapshot)
        return snapshot

    def _serve(self, future: asyncio.Future[ZoneSnapshot], snapshot: ZoneSnapshot) -> None:
        if not future.done():
            future.set_result(snapshot)
            self.served += 1


class SharedMirror(ZoneMirror):
    """The agent's ``ZoneMirror``, counting gaps; with ``keep_peers=False`` it leaves out
    the records it shares with the process's start-up snapshot, except its own."""

    def __init__(self, shared: ProcessShared, own_key: str) -> None:
        super().__init__()
        self.shared = shared
        self.own_key = own_key
        self.gaps = 0

    def load(self, rev: int, peers: dict[str, Peer], policy: Policy | None = None,
             policy_rev: int | None = None) -> None:
        if not self.shared.keep_peers:
            initial = self.shared.initial
            if peers is initial:    # the start-up snapshot itself: all of it is shared
                own = initial.get(self.own_key)
                peers = {} if own is None else {self.own_key: own}
            else:                   # a resync: leave out what is unchanged since start-up
                peers = {k: p for k, p in peers.items()
                         if k == self.own_key or not _same(initial.get(k), p)}
        super().load(rev, peers, policy, policy_rev)

    def apply(self, update: ZoneUpdate) -> Outcome:
        outcome = super().apply(update)
        if outcome is Outcome.GAP and self.loaded:
            self.gaps += 1
        return outcome


def _same(a: Peer | None, b: Peer) -> bool:
    return a is b or a == b


class ProcessShared:
    """What the simulated agents of one process share. ``install()`` puts it in place."""

    def __init__(self, parse_shared: bool = True, keep_peers: bool = True,
                 parser: Callable[[str], ZoneUpdate] | None = None,
                 resync_from: Callable[[str], ZoneSnapshot | None] | None = None,
                 cache_size: int = 64) -> None:
        """``parser``: in place of ``wire.messages.parse_update`` (another channel's format);
        ``resync_from(cidr)``: the snapshot a resync takes, when not None (else Redis)."""
        self.parse_shared = parse_shared
        self.keep_peers = keep_peers
        self.cache_size = cache_size
        self.update_bytes = 0
        self.update_messages = 0
        self.parses = 0
        self.applied = AppliedLog()
        self.gate = StartGate()
        self.initial: dict[str, Peer] = {}   # the start-up snapshot's peers
        self._parser = parser
        self._resync_from = resync_from
        self._cache: OrderedDict[str, ZoneUpdate] = OrderedDict()
        self._configs: dict[int, tuple[Peer, PeerConfig]] = {}
        self._records: dict[str, Peer] = {}
        self.record_parses = 0
        self._members: dict[int, tuple[Peer, Member]] = {}
        self._originals: dict[str, Any] = {}
        self._pool_owner: aioredis.Redis | None = None

    # -- the shared functions --------------------------------------------------------

    def parse_update(self, data: bytes | str) -> ZoneUpdate:
        """``wire.messages.parse_update``, once per message per process; counts bytes."""
        if isinstance(data, bytes):
            data = data.decode()
        self.update_bytes += len(data) if data.isascii() else len(data.encode())
        self.update_messages += 1
        parser = self._parser or self._originals["parse_update"]
        if not self.parse_shared:
            self.parses += 1
            return parser(data)
        found = self._cache.get(data)
        if found is None:
            self.parses += 1
            found = self._cache[data] = parser(data)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return found

    def member_of(self, peer: Peer) -> Member:
        """``wire.policy.Member.of``, once per (immutable, shared) peer record."""
        entry = self._members.get(id(peer))
        if entry is None or entry[0] is not peer:
            entry = (peer, self._originals["member_of"](peer))
            if len(self._members) >= CONFIG_CACHE:
                self._members.clear()
            self._members[id(peer)] = entry
        return entry[1]

    def peer_config(self, peer: Peer, keepalive: int = DEFAULT_KEEPALIVE,
                    endpoints=None) -> PeerConfig:
        """``aircrew.reconcile.peer_config``, once per (immutable, shared) peer record."""
        if keepalive != DEFAULT_KEEPALIVE or (endpoints and endpoints.get(peer.key)):
            return self._originals["peer_config"](peer, keepalive, endpoints)
        entry = self._configs.get(id(peer))
        if entry is None or entry[0] is not peer:
            entry = (peer, self._originals["peer_config"](peer))
            if len(self._configs) >= CONFIG_CACHE:
                self._configs.clear()
            self._configs[id(peer)] = entry
        return entry[1]

    def snapshot_peers(self, records: Mapping[str, str],
                       on_malformed: Callable[[InvalidInput], None] | None = None
                       ) -> dict[str, Peer]:
        """``wire.snapshot.peers``, each record text parsed once per process."""
        out: dict[str, Peer] = {}
        known = self._records
        for record in records.values():
            peer = known.get(record)
            if peer is None:
                try:
                    peer = messages.parse_peer(record)
                except InvalidInput as exc:
                    if on_malformed is None:
                        raise
                    on_malformed(exc)
                    continue
                self.record_parses += 1
                if len(known) >= CONFIG_CACHE:
                    known.clear()
                known[record] = peer
            out[peer.key] = peer
        return out

    async def snapshot(self, session: TowerSession) -> ZoneSnapshot:
        """``TowerSession.snapshot``: at start-up through the gate, later the agent's own."""
        if not self.gate.open:
            return await self.gate.arrive(session)
        if self._resync_from is not None and self.gate.snapshot is not None:
            found = self._resync_from(self.gate.snapshot.cidr)
            if found is not None:
                return found
        return await self._originals["snapshot"](session)

    async def release_gate(self, spread: float = 0.0) -> ZoneSnapshot | None:
        """One snapshot for every agent waiting at the gate, handed out over ``spread``
        seconds; it becomes ``initial``."""
        snapshot = await self.gate.release(self._originals["snapshot"], spread)
        if snapshot is not None:
            self.initial = snapshot.peers
        return snapshot

    def client_factory(self, url: str, connections: int,
                       make: Callable[[str], aioredis.Redis]) -> Callable[[str], aioredis.Redis]:
        """A factory of clients on one connection pool for the process: the pool of the
        client ``make`` (the agent's own factory) builds, with room for ``connections``."""
        if self._pool_owner is None:
            self._pool_owner = make(url)
            self._pool_owner.connection_pool.max_connections = connections
        pool = self._pool_owner.connection_pool

        def client(_url: str) -> aioredis.Redis:
            return aioredis.Redis(connection_pool=pool)   # aclose() leaves the pool open
        return client

    async def close(self) -> None:
        """Close the shared connection pool."""
        if self._pool_owner is not None:
            await self._pool_owner.aclose()
            self._pool_owner = None

    # -- putting it in place ---------------------------------------------------------

    def install(self) -> None:
        """Replace the shared functions in this process (a simulator's own process)."""
        if self._originals:
            return
        self._originals = {"parse_update": messages.parse_update,
                           "peer_config": reconcile.peer_config,
                           "snapshot_peers": snapshots.peers,
                           "snapshot": TowerSession.snapshot,
                           "member_of": Member.of, "member_of_descriptor": vars(Member)["of"]}
        messages.parse_update = self.parse_update              # type: ignore[assignment]
        reconcile.peer_config = self.peer_config               # type: ignore[assignment]
        snapshots.peers = self.snapshot_peers                  # type: ignore[assignment]
        policies.Member.of = self.member_of                    # type: ignore[method-assign]
        shared = self

        async def snapshot(session: TowerSession) -> ZoneSnapshot:
            return await shared.snapshot(session)
        TowerSession.snapshot = snapshot                       # type: ignore[method-assign]

    def uninstall(self) -> None:
        if not self._originals:
            return
        messages.parse_update = self._originals["parse_update"]
        reconcile.peer_config = self._originals["peer_config"]
        snapshots.peers = self._originals["snapshot_peers"]
        TowerSession.snapshot = self._originals["snapshot"]    # type: ignore[method-assign]
        policies.Member.of = self._originals["member_of_descriptor"]  # type: ignore[method-assign]
        self._originals = {}

    def __enter__(self) -> ProcessShared:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

"""A simulated aircrew agent: the agent's own protocol code, with a recording device.

Each simulated agent has its own key and its own ``TowerSession`` (one pub/sub
connection, like a real agent), registers with proof of possession, follows the zone
with a ``ZoneMirror`` (gap -> resync from a snapshot), sends heartbeats and checks the
revision on the agent's schedule, and applies every change with ``desired`` + ``diff``
+ ``apply_ops`` to a ``RecordingDevice``. Only the WireGuard device is replaced.

Three things are done once per simulator process instead of once per agent, because
repeating them thousands of times on one 2-core machine measures the machine, not the
control plane (on real nodes each agent does them once, in parallel with the others):

* parsing: identical bytes reach every agent of a process; they are parsed once and the
  immutable result (frozen dataclasses) is shared (``--parse per-agent`` turns this off);
* the start-up snapshot: one ``TowerSession.snapshot()`` per process, read after every
  agent of the process has subscribed, so the subscribe-then-snapshot rule still holds;
* a peer's device configuration (``reconcile.desired`` of one record): it depends only
  on the shared record, so it is computed once per record and reused by every agent.

Deltas are reconciled incrementally, as the agent does (``reconcile.Applied``):
``desired``/``diff`` over the peers an update touched, against the device's entries for
them. The agent's whole-zone pass (at start, after a resync, on its drift check) is
not repeated here; ``bench join`` reports what it costs at the zone's size
(``agent_full_reconcile_ms``). Full-list mode reconciles the whole list on every
message, as an agent fed whole lists must.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from aircrew.agent import CONNECTION_ERRORS, REVISION_RECHECK, apply_ops
from aircrew.device import DeviceState, PeerConfig, RecordingDevice
from aircrew.mirror import Outcome, ZoneMirror
from aircrew.reconcile import Desired, desired, diff
from aircrew.session import NoReply, TowerRefused, TowerSession, ZoneSnapshot
from wire import messages
from wire.errors import InvalidInput, MeshError, Unavailable

from . import fulllist

log = logging.getLogger(__name__)

REVISION_INTERVAL = 30.0      # the agent's periodic revision check (AgentSettings default)
REQUEST_TIMEOUT = 5.0
TICK_MAX = 15.0               # the follow loop looks at the connection at least this often
TICK_MIN = 0.05
_TICK = object()              # queued by the timer: periodic work is due
CONFIG_CACHE = 200_000        # peer configs kept per process (ProcessShared.desired)


class RecordingLinks:
    """Routes and address of the interface, in memory (aircrew.agent.Links)."""

    def __init__(self) -> None:
        self.address: tuple[str, int] | None = None
        self.is_up = False
        self._routes: set[str] = set()

    def set_address(self, address: str, prefix_len: int) -> None:
        self.address = (address, prefix_len)

    def up(self) -> None:
        self.is_up = True

    def routes(self) -> set[str]:
        return set(self._routes)

    def add_route(self, prefix: str) -> None:
        self._routes.add(prefix)

    def remove_route(self, prefix: str) -> None:
        self._routes.discard(prefix)


class ProcessShared:
    """What the agents of one simulator process share: counters, parse cache, tracker."""

    def __init__(self, parse_shared: bool = True, cache_size: int = 64) -> None:
        self.parse_shared = parse_shared
        self.cache_size = cache_size
        self.update_bytes = 0
        self.update_messages = 0
        self.parses = 0
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self.applied: dict[str, list[float]] = {}     # peer key -> [agents, last, first]
        # The start-up snapshot's peers: rev-only agents keep only records that differ.
        self.initial: dict[str, Any] = {}
        self._configs: dict[int, tuple[messages.Peer, PeerConfig, frozenset[str]]] = {}
        self._keys_of: dict[int, tuple[messages.ZoneUpdate, frozenset[str]]] = {}

    def parse(self, data: str, parser: Callable[[str], Any]) -> Any:
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

    def desired(self, own_key: str, peers: Iterable[messages.Peer]) -> Desired:
        """``reconcile.desired``, with each peer's config computed once per process.

        The config of a peer depends only on its (immutable, shared) record, so every
        agent of the process would compute the same one; the agent's own ``desired`` runs
        once per record and its result is reused.
        """
        configs: dict[str, PeerConfig] = {}
        routes: set[str] = set()
        for peer in peers:
            if peer.key == own_key:
                continue
            entry = self._configs.get(id(peer))
            if entry is None or entry[0] is not peer:
                one = desired(own_key, (peer,))
                entry = (peer, one.peers[peer.key], one.routes)
                if len(self._configs) >= CONFIG_CACHE:
                    self._configs.clear()
                self._configs[id(peer)] = entry
            configs[peer.key] = entry[1]
            routes |= entry[2]
        return Desired(configs, frozenset(routes))

    def note(self, keys: Iterable[str], now: float) -> None:
        """Record that one agent has applied the changes of these peers at ``now`` (the
        process's agents note in time order: one event loop, one monotonic clock)."""
        applied = self.applied
        for key in keys:
            entry = applied.get(key)
            if entry is None:
                applied[key] = [1, now, now]
            else:
                entry[0] += 1
                entry[1] = now

    def keys_of(self, update: messages.ZoneUpdate) -> frozenset[str]:
        """The peers a (shared, immutable) update touches: the same for every agent."""
        found = self._keys_of.get(id(update))
        if found is None or found[0] is not update:
            keys = frozenset(c.peer.key if c.peer is not None else c.key
                             for c in update.changes if c.peer is not None or c.key is not None)
            if len(self._keys_of) >= self.cache_size:
                self._keys_of.clear()
            found = self._keys_of[id(update)] = (update, keys)
        return found[1]


class BenchSession(TowerSession):
    """TowerSession that counts update-channel bytes and may share parsed updates."""

    def __init__(self, *args: Any, shared: ProcessShared, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shared = shared

    def _on_update(self, data: bytes | str) -> None:
        if isinstance(data, bytes):
            data = data.decode()
        self.shared.update_bytes += len(data) if data.isascii() else len(data.encode())
        self.shared.update_messages += 1
        try:
            update = self.shared.parse(data, self._parse)
        except InvalidInput as exc:
            log.warning("ignored a malformed zone update: %s", exc)
            return
        if update.zone == self.zone:
            self.updates.put_nowait(update)

    @staticmethod
    def _parse(data: str) -> Any:
        return messages.parse_update(data)


class FullListSession(BenchSession):
    """Follows the full-list channel (see bench.fulllist) instead of the delta channel."""

    @staticmethod
    def _parse(data: str) -> Any:
        return fulllist.parse(data)


class SimAgent:
    """One simulated node. ``connect`` + ``load`` start it; ``follow`` runs it."""

    def __init__(self, session: BenchSession, body: dict[str, Any], *, full_list: bool,
                 keep_peers: bool, heartbeat: float) -> None:
        self.session = session
        self.shared = session.shared
        self.body = body
        self.full_list = full_list
        self.keep_peers = keep_peers        # False: the mirror keeps revisions, not records
        self.heartbeat = heartbeat
        self.public_key = session.public_key
        self.device = RecordingDevice(keep_log=False)
        self.links = RecordingLinks()
        self.mirror = ZoneMirror()
        self.applied: dict[str, PeerConfig] = {}     # what we last applied, per peer
        self.routes_of: dict[str, tuple[str, ...]] = {}
        self.resyncs = 0
        self.gap_resyncs = 0          # an update did not start at our revision
        self.check_resyncs = 0        # the periodic revision check found the zone ahead
        self.heartbeats = 0
        self.failures = 0
        self.reconnects = 0
        self.last_error = ""
        self._pending_note: set[str] = set()
        self._next_heartbeat = float("inf")
        self._next_revision = float("inf")
        self._behind: int | None = None    # a published revision not seen at the last check
        self._tick_queued = False
        self.target: int | None = None      # storm: peers the mirror must hold
        self.reached_at: float | None = None

    # -- start-up ----------------------------------------------------------------------

    async def connect(self, attempts: int = 3) -> dict[str, Any]:
        """Subscribe (reply + update channels), then register with proof of possession."""
        await self.session.open()
        reply = await self.session.request("register", self.body, timeout=REQUEST_TIMEOUT * 2,
                                           attempts=attempts)
        if not self.device.exists():
            self.device.create()
            self.device.set_identity(self.session.private_key, int(self.body["listen_port"]))
        self.links.set_address(reply["address"], int(reply["prefix_len"]))
        self.links.up()
        return reply

    def load(self, snapshot: ZoneSnapshot) -> bool:
        """Load a snapshot, apply the updates buffered meanwhile, apply everything.

        Returns False when a buffered update shows a gap (the caller resyncs).
        """
        before = self.mirror.peers
        if self.keep_peers:
            peers = snapshot.peers
        else:   # only what changed since the process started (see ProcessShared.initial)
            initial = self.shared.initial
            peers = {k: p for k, p in snapshot.peers.items() if initial.get(k) != p}
        self.mirror.load(snapshot.rev, peers)
        if before or not self.keep_peers:   # a resync: what it changed is applied now
            self._pending_note = {k for k, p in self.mirror.peers.items() if before.get(k) != p}
            self._pending_note |= before.keys() - snapshot.peers.keys()
        ok = True
        while ok and not self.session.updates.empty():
            item = self.session.updates.get_nowait()
            if item is _TICK:
                self._tick_queued = False    # the timer will queue it again
                continue
            keys = self._apply(item)
            ok = keys is not None
            self._pending_note |= keys or set()
        self._reconcile_all()
        if self._pending_note:
            self.shared.note(self._pending_note, time.monotonic())
            self._pending_note = set()
        self._check_target()
        return ok

    async def resync(self) -> None:
        self.resyncs += 1
        while not self.load(await self.session.snapshot()):
            self.resyncs += 1

    # -- following the zone ------------------------------------------------------------

    async def run(self) -> None:
        """Follow the zone; on a lost connection do what the agent does: back off with
        jitter, subscribe again, register again, resync (aircrew.agent.Agent.run)."""
        backoff = 1.0
        connected = True
        while True:
            try:
                if not connected:
                    await self.session.close()
                    await self.session.open()
                    await self.session.request("register", self.body, timeout=REQUEST_TIMEOUT,
                                               attempts=3)
                    await self.resync()
                    connected, backoff = True, 1.0
                await self.follow()
            except CONNECTION_ERRORS as exc:
                connected = False
                self.reconnects += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.info("agent %s lost the tower (%r): retrying", self.public_key, exc)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 30.0)

    async def follow(self) -> None:
        """The agent's follow loop: updates, heartbeats, periodic revision check.

        As in ``Agent._follow``, periodic work runs inline between updates; a timer task
        drops a tick into the update queue when it is due (cheaper than the agent's
        ``wait_for`` with a timeout on every wait, which matters with thousands of agents
        in one process).
        """
        session = self.session
        ticker = asyncio.create_task(self._ticker())
        try:
            while True:
                batch = [await session.updates.get()]
                while not session.updates.empty():
                    batch.append(session.updates.get_nowait())
                updates = [item for item in batch if item is not _TICK]
                if updates and not self._apply_batch(updates):
                    self.gap_resyncs += 1
                    await self.resync()
                if len(updates) < len(batch):
                    self._tick_queued = False
                    await self._periodic()
        finally:
            ticker.cancel()

    async def _ticker(self) -> None:
        now = time.monotonic()
        self._next_heartbeat = (now + random.uniform(0, self.heartbeat) if self.heartbeat
                                else float("inf"))
        self._next_revision = now + random.uniform(0, REVISION_INTERVAL)
        while True:
            due = min(self._next_heartbeat, self._next_revision, time.monotonic() + TICK_MAX)
            await asyncio.sleep(max(TICK_MIN, due - time.monotonic()))
            if not self._tick_queued:
                self._tick_queued = True
                self.session.updates.put_nowait(_TICK)

    async def _periodic(self) -> None:
        session = self.session
        if session.lost.is_set():
            raise Unavailable("lost the connection to Redis")
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat
            await self._heartbeat()
        if now >= self._next_revision:
            self._next_revision = now + await self._check_revision()

    async def _check_revision(self) -> float:
        """As ``Agent._check_revision``: resync only when a published revision is still
        missing at a second look, REVISION_RECHECK later; the seconds until the next."""
        published = await self.session.revision()
        if published <= self.mirror.rev or not self.session.updates.empty():
            self._behind = None
        elif self._behind is not None and self.mirror.rev < self._behind:
            self._behind = None
            self.check_resyncs += 1
            await self.resync()
        else:
            self._behind = published
            return REVISION_RECHECK
        return REVISION_INTERVAL

    def _apply_batch(self, batch: list[Any]) -> bool:
        """Apply queued updates (one reconcile for the batch); False on a gap."""
        if self.full_list:
            newest = max(batch, key=lambda full: full.rev)
            if newest.rev > self.mirror.rev:
                self._apply_full(newest)
            return True
        changed: set[str] = set()
        ok = True
        for update in batch:
            keys = self._apply(update)
            if keys is None:
                ok = False
                break
            changed |= keys
        if changed:
            self._reconcile(changed)
            self.shared.note(changed, time.monotonic())
            self._check_target()
        return ok

    def _apply(self, update: Any) -> frozenset[str] | None:
        """Apply one update to the mirror; the peers it touched, None on a gap."""
        if self.full_list:
            if update.rev > self.mirror.rev:
                self.mirror.load(update.rev, update.peers if self.keep_peers else {})
            return frozenset()
        outcome = self.mirror.apply(update)
        if outcome is Outcome.GAP:
            return None
        if outcome is Outcome.ZONE_DELETED:
            raise MeshError(f"zone {self.session.zone} was deleted")
        if outcome is Outcome.STALE:
            return frozenset()
        return self.shared.keys_of(update)

    def _apply_full(self, full: Any) -> None:
        before = self.mirror.peers
        self.mirror.load(full.rev, full.peers if self.keep_peers else {})
        changed = {key for key, peer in full.peers.items() if before.get(key) != peer}
        changed |= before.keys() - full.peers.keys()
        self._reconcile_all()
        self.shared.note(changed, time.monotonic())
        self._check_target()

    # -- the device --------------------------------------------------------------------

    def _reconcile(self, keys: set[str]) -> None:
        """desired/diff/apply_ops over the peers in ``keys`` only."""
        mirror, applied, routes_of = self.mirror.peers, self.applied, self.routes_of
        on_device = self.device.state.peers
        peers, previous, have, routes = [], {}, {}, set()
        for key in keys:           # one pass: what the zone, we and the device hold of it
            peer = mirror.get(key)
            if peer is not None:
                peers.append(peer)
            config = applied.get(key)
            if config is not None:
                previous[key] = config
                routes.update(routes_of.get(key, ()))
            entry = on_device.get(key)
            if entry is not None:
                have[key] = entry
        want = self.shared.desired(self.public_key, peers)
        ops = diff(want, Desired(previous), DeviceState(peers=have), routes)
        if ops:
            apply_ops(self.device, self.links, ops)
        configs = want.peers
        for key in keys:
            config = configs.get(key)
            if config is None:
                applied.pop(key, None)
                routes_of.pop(key, None)
            else:
                applied[key] = config
                routes_of[key] = mirror[key].child_prefixes

    def _reconcile_all(self) -> None:
        """What the real agent does after every update: the whole zone."""
        want = self.shared.desired(self.public_key, self.mirror.peers.values())
        ops = diff(want, Desired(self.applied), self.device.read(), self.links.routes())
        if ops:
            apply_ops(self.device, self.links, ops)
        self.applied = dict(want.peers)
        self.routes_of = {k: p.child_prefixes for k, p in self.mirror.peers.items()
                          if k in want.peers}

    def _check_target(self) -> None:
        if (self.target is not None and self.reached_at is None
                and len(self.mirror.peers) >= self.target):
            self.reached_at = time.monotonic()

    async def _heartbeat(self) -> None:
        try:
            await self.session.request("heartbeat", timeout=REQUEST_TIMEOUT)
            self.heartbeats += 1
        except (NoReply, TowerRefused) as exc:
            self.failures += 1
            log.info("heartbeat failed: %s", exc)

    async def close(self) -> None:
        await self.session.close()


def full_reconcile_ms(own_key: str, peers: dict[str, messages.Peer], repeat: int = 3) -> float:
    """What one update costs the real agent's reconcile at this zone size (median, ms).

    ``Agent._reconcile`` after a one-peer change: desired over every peer, diff against
    the whole device, apply_ops (the state-file writes it also does are not counted).
    """
    device = RecordingDevice()
    links = RecordingLinks()
    want = desired(own_key, peers.values())
    apply_ops(device, links, diff(want, Desired(), device.read(), links.routes()))
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        after = desired(own_key, peers.values())
        apply_ops(device, links, diff(after, want, device.read(), links.routes()))
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]

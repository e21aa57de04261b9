"""One simulator process: many simulated agents (or registering nodes) on one event loop.

Started by ``bench.fleet.Fleet`` (multiprocessing, spawn). Commands arrive on a pipe as
``{"op": name, "args": {...}}``; every command gets one reply ``{"ok": bool, ...}``.
Times are ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process on Linux).

Each simulated agent is the real ``aircrew.agent.Agent`` (``testbed.simagent``) with a
``NotingDevice``; what the agents of the process share is ``testbed.sharing``.
"""
from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import logging
import os
import resource
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import redis.asyncio as aioredis
import redis.utils

from aircrew.session import NoReply, TowerRefused, TowerSession
from testbed import simagent
from testbed.sharing import ProcessShared, SharedMirror
from testbed.simagent import NotingDevice, SimAgent
from wire.errors import Unavailable

from . import fulllist

log = logging.getLogger(__name__)

POLL = 0.005
NEVER = float("inf")
# The agents' start is spread over this many seconds at most (their heartbeats and
# revision checks then run out of step, as on independent nodes).
MAX_SPREAD = 10.0


def main(conn: Connection, log_level: str = "WARNING") -> None:
    logging.basicConfig(level=log_level, format=f"sim[{os.getpid()}] %(levelname)s %(message)s")
    # redis-py reads its own version from the package metadata for every new connection
    # (about 0.1 ms); an agent opens one, this process thousands: read it once.
    redis.utils.get_lib_version = functools.cache(redis.utils.get_lib_version)
    asyncio.run(Simulator(conn).serve())


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Warnings(logging.Handler):
    """Counts the agents' warnings and keeps the first few distinct ones."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.samples) < 5:
            text = f"{record.name}: {record.getMessage()}"[:200]
            if text not in self.samples:
                self.samples.append(text)


class Simulator:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.shared: ProcessShared | None = None
        self.sims: list[SimAgent] = []
        self.warnings = Warnings()
        logging.getLogger("aircrew").addHandler(self.warnings)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    msg = await loop.run_in_executor(None, self.conn.recv)
                except (EOFError, OSError):
                    return  # the parent is gone
                op, args = msg["op"], msg.get("args", {})
                try:
                    result = await getattr(self, f"op_{op}")(**args)
                    self.conn.send({"ok": True, **(result or {})})
                except Exception:  # noqa: BLE001 - reported to the parent
                    self.conn.send({"ok": False, "error": traceback.format_exc()})
                if op == "stop":
                    return
        finally:
            await self._close()

    # -- agents ------------------------------------------------------------------------

    async def op_setup(self, redis_url: str, zone: str, agents: list[tuple[str, str, dict]],
                       mode: str = "delta", keep_peers: bool = True, parse_shared: bool = True,
                       heartbeat: float = 10.0, concurrency: int = 200,
                       spread: float | None = None, policy: bool = False,
                       load_timeout: float = 0.0) -> dict[str, Any]:
        """Start the agents: each subscribes and registers (proof of possession), then
        one snapshot is read for all of them; their start is spread over ``spread``
        seconds (default: the heartbeat interval, at most 10 s). ``policy``: each
        enforces the zone policy through a recording nft (``op_nft``). ``load_timeout``:
        seconds the agents may take to load the snapshot, when more than the default
        (``--state full``: each agent's whole-zone pass, ``bench.setupcost``)."""
        started = time.monotonic()
        full = mode == "full-list"
        lists = fulllist.ListSnapshots() if full else None
        shared = self.shared = ProcessShared(
            parse_shared, keep_peers, parser=lists, resync_from=lists.snapshot if lists else None)
        shared.install()
        factory = None
        for private, session_id, body in agents:
            host, _, port = body["endpoint"].rpartition(":")
            sim = simagent.make_agent(
                redis_url, None, len(self.sims), zone, private_key=private,
                session=session_id, device=NotingDevice(shared.applied),
                endpoint=(host, int(port)), inline_device=True,
                hostname=body["hostname"], listen_port=int(body["listen_port"]),
                heartbeat_interval=heartbeat if heartbeat > 0 else NEVER,
                drift_interval=NEVER,
                nft=simagent.RecordingNft(keep_text=False) if policy else None)
            if factory is None:   # the agent's own client settings, one pool for all
                factory = shared.client_factory(redis_url, 2 * len(agents) + concurrency + 64,
                                                sim.default_clients)
            sim.use_clients(factory)
            sim.agent.mirror = SharedMirror(shared, sim.public_key)
            if full:
                sim.agent.keys = fulllist.FullListKeys(sim.agent.keys.prefix)
            self.sims.append(sim)
        if not self.sims:     # a scenario without observers (storm --observers 0)
            return {"agents": 0, "register_s": 0.0, "setup_s": time.monotonic() - started,
                    "snapshot_rev": None, "snapshot_peers": 0, "pid": os.getpid()}
        gate = shared.gate
        for n, sim in enumerate(self.sims):
            while n - gate.arrived - self._ended() >= concurrency:
                gate.progress.clear()
                await asyncio.wait_for(gate.progress.wait(), 60)
            simagent.start(sim)
        while gate.arrived + self._ended() < len(self.sims):
            gate.progress.clear()
            try:
                await asyncio.wait_for(gate.progress.wait(), 60)
            except asyncio.TimeoutError:
                raise RuntimeError(f"{len(self.sims) - gate.arrived} agents did not register "
                                   f"within 60 s: {self._problems()}") from None
        registered = time.monotonic()
        if spread is None:
            spread = min(heartbeat, MAX_SPREAD) if heartbeat > 0 else MAX_SPREAD
        snapshot = await shared.release_gate(spread)
        if snapshot is None:
            raise RuntimeError(f"no agent reached the snapshot: {self._problems()}")
        deadline = time.monotonic() + max(spread + 60 + len(self.sims) * 0.01, load_timeout)
        while not all(s.agent.mirror.rev >= snapshot.rev for s in self.sims):
            if time.monotonic() > deadline:
                raise RuntimeError(f"agents did not load the snapshot: {self._problems()}")
            await asyncio.sleep(0.02)
        if self._ended():
            raise RuntimeError(f"agents ended during set-up: {self._problems()}")
        # Thousands of agents' state is one heap here (on real nodes, one agent's each):
        # keep the cyclic GC from scanning it all, pausing every agent of the process.
        gc.collect()
        gc.freeze()
        return {"agents": len(self.sims), "register_s": registered - started,
                "setup_s": time.monotonic() - started, "snapshot_rev": snapshot.rev,
                "snapshot_peers": len(snapshot.peers), "pid": os.getpid(),
                "sessions_kept": all(s.agent.session.session_id == a[1]
                                     for s, a in zip(self.sims, agents)),
                "gate_served": shared.gate.served}

    def _ended(self) -> int:
        return sum(1 for s in self.sims if s.task is not None and s.task.done())

    def _problems(self) -> list[str]:
        errors = [f"{type(e).__name__}: {e}" for s in self.sims for e in s.errors]
        return (errors + self.warnings.samples)[:5]

    async def op_await_keys(self, keys: list[str], timeout: float) -> dict[str, Any]:
        """Wait until every agent has applied these peers: {key: [agents, last, first]}."""
        want = len(self.sims)
        deadline = time.monotonic() + timeout
        applied = self._shared().applied
        while time.monotonic() < deadline:
            if all(applied.get(k)[0] >= want for k in keys):
                break
            await asyncio.sleep(POLL)
        else:
            lagging = [s for s in self.sims if not set(keys) <= s.device.state.peers.keys()]
            log.warning("%d agents lack %s: %s", len(lagging), keys, [
                (s.agent.s.hostname, s.agent.mirror.rev, len(s.device.state.peers),
                 s.agent.session.updates.qsize() if hasattr(s.agent.session, "updates") else None,
                 s.task.done() if s.task else None) for s in lagging[:5]])
        return {"applied": {k: list(applied.get(k)) for k in keys}, "agents": want}

    async def op_watch(self, new_peers: int) -> dict[str, Any]:
        """Storm: each agent converges when its device holds ``new_peers`` more peers."""
        for sim in self.sims:
            sim.device.watch(new_peers)
        return {}

    async def op_await_converged(self, timeout: float, check_keys: list[str] | None = None
                                 ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s.device.reached_at is not None for s in self.sims):
                break
            await asyncio.sleep(0.02)
        reached = [s.device.reached_at for s in self.sims if s.device.reached_at is not None]
        missing = 0
        if check_keys:
            missing = sum(1 for s in self.sims if s.device.reached_at is not None
                          and any(k not in s.device.state.peers for k in check_keys))
        return {"agents": len(self.sims), "converged": len(reached),
                "last": max(reached) if reached else None, "wrong_peers": missing}

    async def op_stats(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        shared = self._shared()
        reconnects = sum(max(0, s.connections - 1) for s in self.sims)
        resyncs = sum(max(0, s.agent.resyncs - 1) for s in self.sims)
        gaps = sum(s.agent.mirror.gaps for s in self.sims)
        return {"update_bytes": shared.update_bytes,
                "update_messages": shared.update_messages,
                "parses": shared.parses,
                "resyncs": resyncs,
                "gap_resyncs": gaps,
                "check_resyncs": max(0, resyncs - gaps - reconnects),
                "reconnects": reconnects,
                "warnings": self.warnings.count,
                "warning_samples": self.warnings.samples,
                "device_ops": sum(s.device.operations for s in self.sims),
                "errors": [f"{s.public_key}: {type(e).__name__}: {e}"
                           for s in self.sims for e in s.errors][:20],
                "error_count": sum(len(s.errors) for s in self.sims),
                "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}

    async def op_nft(self, since: float, kind: str, timeout: float) -> dict[str, Any]:
        """Wait until every agent made an nft transaction of ``kind`` after ``since``;
        the time of each one's first (monotonic; None: none within ``timeout``) and the
        set elements it named."""
        deadline = time.monotonic() + timeout

        def first(sim: SimAgent) -> float | None:
            for at, done, _ in sim.agent.firewall.nft.log:
                if at > since and done == kind:
                    return at
            return None
        while time.monotonic() < deadline:
            if all(first(s) is not None for s in self.sims):
                break
            await asyncio.sleep(POLL)
        found = [first(s) for s in self.sims]
        firewalls = [s.agent.firewall for s in self.sims]
        return {"at": found,
                "states": sorted({fw.state for fw in firewalls}),
                "last_elements": [fw.last.elements if fw.last else None for fw in firewalls],
                "last_seconds": [fw.last.seconds if fw.last else None for fw in firewalls],
                "sync_seconds": [fw.sync_seconds for fw in firewalls]}

    def _shared(self) -> ProcessShared:
        if self.shared is None:
            self.shared = ProcessShared()
            self.shared.install()
        return self.shared

    # -- registering nodes (storm) -----------------------------------------------------

    async def op_register_many(self, redis_url: str, zone: str, nodes: list[tuple[str, dict]],
                               concurrency: int, timeout: float, start_at: float
                               ) -> dict[str, Any]:
        """Register fresh nodes as agents do (subscribe, register, then leave the session).

        What is not part of a registration is done before ``start_at``: each node's
        session (its public key derived from its private key), the process's client.
        Each registration then opens the node's own pub/sub connection, reads the tower's
        key, sends a signed register request and waits for the reply, as an agent does.

        Returns one row per node: [public key, address or None, outcome, sent, answered],
        and the CPU seconds the process spent from ``start_at`` to the last reply.
        """
        return await self.op_register_zones([[redis_url, zone, nodes]], concurrency, timeout,
                                            start_at)

    async def op_register_zones(self, groups: list[list[Any]], concurrency: int, timeout: float,
                                start_at: float, sharded: bool = False) -> dict[str, Any]:
        """``op_register_many`` for several zones: ``groups`` of [redis URL, zone, nodes]
        (on a Redis Cluster, ``sharded``: the URL of the zone's shard)."""
        self._shared()      # the updates they receive meanwhile: parsed once
        clients = {url: aioredis.Redis.from_url(   # the agent's client settings, room for many
            url, decode_responses=True, socket_connect_timeout=10, socket_keepalive=True,
            health_check_interval=15, max_connections=2 * concurrency + 64)
            for url in {g[0] for g in groups}}
        gate = asyncio.Semaphore(concurrency)
        rows: list[list[Any]] = []
        per_zone = [[(TowerSession(clients[url], zone, private, sharded=sharded), body)
                     for private, body in nodes] for url, zone, nodes in groups]
        # interleaved: the zones (and a cluster's shards) take their turns
        sessions = [pair for turn in itertools.zip_longest(*per_zone) for pair in turn if pair]
        gc.collect()
        gc.freeze()     # the sessions made up front: no cyclic GC pass scans them again

        async def one(session: TowerSession, body: dict) -> None:
            async with gate:
                sent = time.monotonic()
                try:
                    await session.open()
                    sent = time.monotonic()
                    reply = await session.request("register", body, timeout=timeout)
                    rows.append([session.public_key, reply["address"], "ok", sent,
                                 time.monotonic()])
                except TowerRefused as exc:
                    rows.append([session.public_key, None, f"refused: {exc}", sent, time.monotonic()])
                except (NoReply, Unavailable, OSError, ConnectionError, asyncio.TimeoutError) as exc:
                    rows.append([session.public_key, None, f"unanswered: {exc!r}", sent, None])
                except Exception as exc:  # noqa: BLE001 - redis errors and the like
                    rows.append([session.public_key, None, f"unanswered: {exc!r}", sent, None])
                finally:
                    await session.close()
        delay = start_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        cpu_before = cpu_seconds()
        try:
            await asyncio.gather(*(one(s, b) for s, b in sessions))
            cpu_s = cpu_seconds() - cpu_before
        finally:
            for client in clients.values():
                await client.aclose()
            gc.unfreeze()
        return {"rows": rows, "cpu_s": cpu_s}

    # -- the end -------------------------------------------------------------------------

    async def op_stop(self) -> dict[str, Any]:
        await self._close()
        return {}

    async def _close(self) -> None:
        if self.sims:
            await simagent.stop(self.sims, timeout=30)
            self.sims = []
        if self.shared is not None:
            await self.shared.close()
            self.shared.uninstall()
            self.shared = None

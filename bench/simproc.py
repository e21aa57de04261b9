"""One simulator process: many simulated agents (or registering nodes) on one event loop.

Started by ``bench.fleet.Fleet`` (multiprocessing, spawn). Commands arrive on a pipe as
``{"op": name, "args": {...}}``; every command gets one reply ``{"ok": bool, ...}``.
Times are ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process on Linux).
"""
from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import resource
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import redis.asyncio as aioredis
import redis.utils

from aircrew.session import NoReply, TowerRefused
from wire.errors import Unavailable

from . import fulllist
from .simagent import BenchSession, FullListSession, ProcessShared, SimAgent

log = logging.getLogger(__name__)

POLL = 0.005


def main(conn: Connection, log_level: str = "WARNING") -> None:
    logging.basicConfig(level=log_level, format=f"sim[{os.getpid()}] %(levelname)s %(message)s")
    # redis-py reads its own version from the package metadata for every new connection
    # (about 0.1 ms); an agent opens one, this process thousands: read it once.
    redis.utils.get_lib_version = functools.cache(redis.utils.get_lib_version)
    asyncio.run(Simulator(conn).serve())


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def client_for(url: str, connections: int) -> aioredis.Redis:
    """Settings of the agent's own client (aircrew.agent), with room for many agents."""
    return aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=10,
                                   socket_keepalive=True, health_check_interval=15,
                                   max_connections=connections)


class Simulator:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.client: aioredis.Redis | None = None
        self.shared = ProcessShared()
        self.agents: list[SimAgent] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.errors: list[str] = []

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
                       heartbeat: float = 10.0, concurrency: int = 200) -> dict[str, Any]:
        """Start agents: subscribe + register (PoP) each, one snapshot, load, follow."""
        started = time.monotonic()
        self.shared = ProcessShared(parse_shared)
        self.client = client_for(redis_url, 2 * len(agents) + concurrency + 64)
        full = mode == "full-list"
        keys = fulllist.FullListKeys() if full else None
        session_class = FullListSession if full else BenchSession
        for private, session_id, body in agents:
            session = session_class(self.client, zone, private, keys=keys, session_id=session_id,
                                    shared=self.shared)
            self.agents.append(SimAgent(session, body, full_list=full, keep_peers=keep_peers,
                                        heartbeat=heartbeat))
        gate = asyncio.Semaphore(concurrency)

        async def connect(agent: SimAgent) -> None:
            async with gate:
                await agent.connect()
        await asyncio.gather(*(connect(a) for a in self.agents))
        registered = time.monotonic()
        if not self.agents:     # a scenario without observers (storm --observers 0)
            return {"agents": 0, "register_s": 0.0, "setup_s": registered - started,
                    "snapshot_rev": None, "snapshot_peers": 0, "pid": os.getpid()}
        snapshot = await self.agents[0].session.snapshot()
        self.shared.initial = snapshot.peers
        gaps = [agent for agent in self.agents if not agent.load(snapshot)]
        for agent in gaps:
            await agent.resync()
        self.tasks = [asyncio.create_task(self._follow(a)) for a in self.agents]
        # Thousands of agents' state is one heap here (on real nodes, one agent's each):
        # keep the cyclic GC from scanning it all, pausing every agent of the process.
        gc.collect()
        gc.freeze()
        return {"agents": len(self.agents), "register_s": registered - started,
                "setup_s": time.monotonic() - started, "snapshot_rev": snapshot.rev,
                "snapshot_peers": len(snapshot.peers), "pid": os.getpid()}

    async def _follow(self, agent: SimAgent) -> None:
        try:
            await agent.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - counted and reported
            self.errors.append(f"{agent.public_key}: {type(exc).__name__}: {exc}")

    async def op_await_keys(self, keys: list[str], timeout: float) -> dict[str, Any]:
        """Wait until every agent has applied these peers: {key: [agents, last time]}."""
        want = len(self.agents)
        deadline = time.monotonic() + timeout
        applied = self.shared.applied
        while time.monotonic() < deadline:
            if all(applied.get(k, (0,))[0] >= want for k in keys):
                break
            await asyncio.sleep(POLL)
        return {"applied": {k: list(applied.get(k, (0, 0.0))) for k in keys}, "agents": want}

    async def op_watch(self, new_peers: int) -> dict[str, Any]:
        """Storm: each agent converges when its mirror holds ``new_peers`` more peers."""
        for agent in self.agents:
            agent.target = len(agent.mirror.peers) + new_peers
            agent.reached_at = None
        return {}

    async def op_await_converged(self, timeout: float, check_keys: list[str] | None = None
                                 ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(a.reached_at is not None for a in self.agents):
                break
            await asyncio.sleep(0.02)
        reached = [a.reached_at for a in self.agents if a.reached_at is not None]
        missing = 0
        if check_keys:
            missing = sum(1 for a in self.agents if a.reached_at is not None
                          and any(k not in a.mirror.peers for k in check_keys))
        return {"agents": len(self.agents), "converged": len(reached),
                "last": max(reached) if reached else None, "wrong_peers": missing}

    async def op_stats(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"update_bytes": self.shared.update_bytes,
                "update_messages": self.shared.update_messages,
                "parses": self.shared.parses,
                "resyncs": sum(a.resyncs for a in self.agents),
                "gap_resyncs": sum(a.gap_resyncs for a in self.agents),
                "check_resyncs": sum(a.check_resyncs for a in self.agents),
                "heartbeats": sum(a.heartbeats for a in self.agents),
                "failures": sum(a.failures for a in self.agents),
                "reconnects": sum(a.reconnects for a in self.agents),
                "reconnect_errors": sorted({a.last_error[:200] for a in self.agents
                                            if a.last_error})[:5],
                "device_ops": sum(a.device.operations for a in self.agents),
                "errors": self.errors[:20], "error_count": len(self.errors),
                "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}

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
        client = client_for(redis_url, 2 * concurrency + 64)   # pub/sub + command each
        gate = asyncio.Semaphore(concurrency)
        rows: list[list[Any]] = []
        shared = ProcessShared()    # the updates they receive meanwhile: parsed once
        sessions = [(BenchSession(client, zone, private, shared=shared), body)
                    for private, body in nodes]
        gc.collect()
        gc.freeze()     # the sessions made up front: no cyclic GC pass scans them again

        async def one(session: BenchSession, body: dict) -> None:
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
            await client.aclose()
            gc.unfreeze()
        return {"rows": rows, "cpu_s": cpu_s}

    # -- the end -------------------------------------------------------------------------

    async def op_stop(self) -> dict[str, Any]:
        await self._close()
        return {}

    async def _close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        await asyncio.gather(*(a.close() for a in self.agents), return_exceptions=True)
        self.agents = []
        if self.client is not None:
            await self.client.aclose()
            self.client = None

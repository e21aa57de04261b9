"""``update-cost``: the real agent's CPU per zone update, N agents in one process, no Redis.

N ``aircrew.agent.Agent`` (``testbed.simagent``: a recording device, links in memory,
state files rendered but not written; with what a simulator process of ``join`` shares,
``testbed.sharing``) follow stand-in sessions (``testbed.standin``) holding a snapshot
of the zone's N peers. The same parsed update (one new peer) is put into every agent's
inbox, ``--updates`` times, ``--gap`` apart. Timed is the agents' own work: the follow
loop takes the update from its inbox, applies it to its mirror, checks membership,
reconciles the touched peer, carries out the op on its device and marks its state files
for the writer. Not included: reading the message from Redis (asyncio and hiredis, about
10 us per agent and message here, aircrew/pubsubreader.py; ``join`` has it).

``us_per_update``: the process's CPU from handing the update to every agent until the last
one applied it, per agent (median over the updates). ``us_per_update_total``: the same
over the whole gap, so the state-file writes and timers the update caused are included.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import resource
import statistics
import time
from typing import Any

from .report import Target

log = logging.getLogger(__name__)

TARGETS: list[Target] = []
HEADLINE = ["agents", "us_per_update", "us_per_update_total"]
ZONE = "bench"
NEVER = float("inf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agents", type=int, default=1000, help="agents in the process")
    parser.add_argument("--updates", type=int, default=20, help="updates to time")
    parser.add_argument("--gap", type=float, default=0.3,
                        help="seconds between two updates (join's --interval)")
    parser.add_argument("--state", choices=("full", "rev-only"), default="full",
                        help="as join's --state: rev-only mirrors leave out the shared records")


def command_of(args: argparse.Namespace) -> str:
    out = f"python -m bench update-cost --agents {args.agents}"
    if args.updates != 20:
        out += f" --updates {args.updates}"
    if args.gap != 0.3:
        out += f" --gap {args.gap:g}"
    if args.state != "full":
        out += f" --state {args.state}"
    return out


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.agents < 1 or args.updates < 1 or args.gap <= 0:
        reason = "--agents and --updates must be at least 1, --gap above 0"
        log.error("bench update-cost cannot run: %s", reason)
        return {"agents": args.agents, "not_run": reason, "command": command_of(args)}
    from testbed.sharing import ProcessShared
    shared = ProcessShared(keep_peers=args.state == "full")
    shared.install()
    try:
        found = asyncio.run(_measure(args, shared))
    finally:
        shared.uninstall()
    return {
        "agents": args.agents,
        "us_per_update": round(statistics.median(found["apply"]), 1),
        "us_per_update_total": round(statistics.median(found["total"]), 1),
        "us_per_update_max": round(max(found["apply"]), 1),
        "wall_ms_per_update": round(statistics.median(found["wall"]), 1),
        "updates": args.updates,
        "state": args.state,
        "state_writes": found["writes"],
        "device_ops": found["ops"],
        "agent_errors": found["errors"],
        "command": command_of(args),
    }


def stand_in_agents(privates: list[str], snapshot: Any, shared: Any) -> list[Any]:
    """Real agents (one per private key, all in ``snapshot``) on stand-in sessions that
    serve ``snapshot`` without Redis, their zone state shared per process (``shared``:
    testbed.sharing.ProcessShared); their devices are not created yet."""
    from testbed import simagent
    from testbed.sharing import SharedMirror
    from testbed.simagent import NotingDevice
    from testbed.standin import StandInSession

    shared.initial = snapshot.peers
    sims = []
    for i, private in enumerate(privates):
        sim = simagent.make_agent("redis://127.0.0.1:1/0", None, i, ZONE, private_key=private,
                                  device=NotingDevice(shared.applied), inline_device=True,
                                  heartbeat_interval=NEVER, drift_interval=NEVER)
        agent = sim.agent
        agent.mirror = SharedMirror(shared, agent.public_key)
        agent.assignment = {"address": snapshot.peers[agent.public_key].address,
                            "prefix_len": 16, "cidr": snapshot.cidr}
        agent.session = StandInSession(snapshot, f"s{i}")   # type: ignore[assignment]
        sims.append(sim)
    return sims


async def _measure(args: argparse.Namespace, shared: Any) -> dict[str, Any]:
    from aircrew.session import ZoneSnapshot
    from wire import messages
    from wire.messages import Peer
    from wire.proof import generate_private_key, public_key_of

    n = args.agents
    privates = [generate_private_key() for _ in range(n)]
    peers: dict[str, Peer] = {}
    for i, private in enumerate(privates):
        key = public_key_of(private)
        peers[key] = Peer(key=key, address=f"10.64.{i // 250}.{i % 250 + 1}",
                          endpoint=f"198.51.100.{i % 250 + 1}:51820", session=f"s{i}")
    snapshot = ZoneSnapshot("10.64.0.0/16", 1, peers)
    sims = stand_in_agents(privates, snapshot, shared)

    async def follow(agent: Any) -> None:
        await agent._on_device(agent._ensure_device)
        await agent._resync()
        await agent._follow()
    writers = [asyncio.create_task(s.agent.write_state_files()) for s in sims]
    followers = [asyncio.create_task(follow(s.agent)) for s in sims]
    deadline = time.monotonic() + 60 + n * 0.01
    while not all(s.agent.mirror.rev >= 1 for s in sims):
        if time.monotonic() > deadline or any(t.done() for t in followers):
            raise RuntimeError("the agents did not load the snapshot")
        await asyncio.sleep(0.05)
    await asyncio.sleep(args.gap)
    gc.collect()
    gc.freeze()        # as the simulators do: no cyclic GC pass over every agent's state

    done = asyncio.Event()
    watched: list[str] = [""]
    note = shared.applied.note

    def noting(key: str, now: float) -> None:
        note(key, now)
        if key == watched[0] and shared.applied.get(key)[0] >= n:
            done.set()
    shared.applied.note = noting       # type: ignore[method-assign]
    apply_us, total_us, wall_ms = [], [], []
    ops_before = sum(s.device.operations for s in sims)
    writes_before = sum(s.agent.state.saves for s in sims)
    try:
        for j in range(args.updates):
            key = public_key_of(generate_private_key())
            peer = Peer(key=key, address=f"10.65.{j // 250}.{j % 250 + 1}",
                        endpoint=f"203.0.113.{j % 250 + 1}:51820", session=f"new{j}")
            rev = 2 + j
            update = messages.parse_update(messages.update(
                ZONE, rev - 1, rev, [messages.upsert_change(rev, messages.peer_record(peer))]))
            watched[0] = key
            done.clear()
            started, cpu = time.perf_counter(), cpu_seconds()
            for sim in sims:
                sim.agent.session.updates.put_nowait(update)
            await asyncio.wait_for(done.wait(), 60)
            applied_cpu, applied_at = cpu_seconds(), time.perf_counter()
            await asyncio.sleep(args.gap)
            apply_us.append((applied_cpu - cpu) * 1e6 / n)
            total_us.append((cpu_seconds() - cpu) * 1e6 / n)
            wall_ms.append((applied_at - started) * 1000)
    finally:
        shared.applied.note = note     # type: ignore[method-assign]
        for sim in sims:
            sim.agent.stop.set()
        await asyncio.wait(followers, timeout=30)
        for task in writers + followers:
            task.cancel()
        await asyncio.gather(*writers, *followers, return_exceptions=True)
        gc.unfreeze()
    errors = sum(1 for t in followers if t.done() and not t.cancelled() and t.exception())
    return {"apply": apply_us, "total": total_us, "wall": wall_ms, "errors": errors,
            "ops": sum(s.device.operations for s in sims) - ops_before,
            "writes": sum(s.agent.state.saves for s in sims) - writes_before}

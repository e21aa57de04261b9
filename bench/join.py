"""``join``: one node joins a zone of N subscribed agents.

Latency: from the moment the joining node sends its register request to the moment the
LAST of the N agents has applied the new peer to its device (each simulator process
reports the time its slowest agent applied it; all on CLOCK_MONOTONIC). Repeated
``--joins`` times, one join at a time, ``--interval`` apart.

Bytes: what each agent received on the channel it follows (the delta channel, or the
full-list channel in ``--mode full-list``) during the joins, per agent and per join.
A raw subscriber on the tower's delta channel counts the delta bytes of the same joins,
so full-list mode reports the ratio from one run.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any


from aircrew.agent import CONNECTION_ERRORS, controller_client
from aircrew.session import NoReply, TowerSession
from wire.keys import Keys

from . import fulllist, setupcost
from .fleet import Fleet, FleetError, split
from .harness import (Stack, add_stack_arguments, make_identities, make_identity, stack_for,
                      stack_options)
from .report import Target, percentile
from .simproc import MAX_SPREAD

log = logging.getLogger(__name__)

REVISION = re.compile(r'"since":\d+,"rev":(\d+)')    # the head of a delta message

TARGETS = [
    Target("p99_ms", "<=", 100, lambda r: r.get("mode") == "delta" and r["agents"] <= 1000),
    Target("p99_ms", "<=", 1000, lambda r: r.get("mode") == "delta" and 1000 < r["agents"] <= 10000),
    Target("bytes_per_agent", "<=", 1024, lambda r: r.get("mode") == "delta"),
    Target("bytes_ratio", ">=", 100, lambda r: r.get("mode") == "full-list" and r["agents"] >= 1000),
]
# From this size on, --state full is estimated before it starts (bench/setupcost.py).
FULL_STATE_CHECKED = 2000
PACING = 1.25           # the snapshot handed out over 1.25x the passes' estimated time
HEADLINE = ["agents", "mode", "p50_ms", "p99_ms", "bytes_per_agent"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stack_arguments(parser)
    parser.add_argument("--agents", type=int, default=1000, help="subscribed agents in the zone")
    parser.add_argument("--mode", choices=("delta", "full-list"), default="delta",
                        help="delta: our protocol; full-list: every change republishes "
                             "the whole peer list, as the original did")
    parser.add_argument("--joins", type=int, default=20, help="joins to time (percentiles)")
    parser.add_argument("--interval", type=float, default=0.3, help="seconds between joins")
    parser.add_argument("--warmup-joins", type=int, default=1,
                        help="joins before the measured ones (not counted)")
    parser.add_argument("--processes", type=int, default=0,
                        help="simulator processes (0: 1 up to 200 agents, 2 up to 2,000, else 4)")
    parser.add_argument("--heartbeat", type=float, default=10.0,
                        help="agent heartbeat interval in seconds, as the agent (0: none)")
    parser.add_argument("--state", choices=("full", "rev-only"), default="full",
                        help="full: every agent mirrors every peer record; rev-only: agents "
                             "keep the snapshot's revision but not its records (memory)")
    parser.add_argument("--parse", choices=("shared", "per-agent"), default="shared",
                        help="parse each message once per simulator process, or per agent")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for all agents to apply one join (a join that "
                             "takes longer ends the run as not run, saying why)")
    parser.add_argument("--setup-limit", type=float, default=600.0,
                        help="--state full: seconds of set-up allowed; the set-up is estimated "
                             "first (bench/setupcost.py) and a size that would take longer, or "
                             "need more memory than is available, is refused at once")
    parser.add_argument("--spread", type=float, default=None,
                        help="seconds over which the agents start following the zone, so "
                             "that their heartbeats and checks are out of step as on "
                             "independent nodes (default: the heartbeat interval, at most 10)")


def auto_processes(agents: int) -> int:
    return 1 if agents <= 200 else 2 if agents <= 2000 else 4


def command_of(args: argparse.Namespace) -> str:
    parts = [f"python -m bench join --agents {args.agents}"]
    if args.mode != "delta":
        parts.append(f"--mode {args.mode}")
    if args.joins != 20:
        parts.append(f"--joins {args.joins}")
    if args.state != "full":
        parts.append(f"--state {args.state}")
    if args.parse != "shared":
        parts.append(f"--parse {args.parse}")
    if args.heartbeat != 10.0:
        parts.append(f"--heartbeat {args.heartbeat:g}")
    if args.spread is not None:
        parts.append(f"--spread {args.spread:g}")
    if getattr(args, "setup_limit", 600.0) != 600.0:
        parts.append(f"--setup-limit {args.setup_limit:g}")
    return " ".join(parts) + stack_options(args)


class ChannelCounter:
    """Counts the bytes published on one channel (a raw subscriber thread)."""

    def __init__(self, client, channel: str) -> None:
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.channel = channel
        self.bytes = 0
        self.messages = 0
        self.arrivals: list[float] = []
        self.revisions: list[int] = []      # the revision each update leads to
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="channel-counter")

    def __enter__(self) -> "ChannelCounter":
        self.pubsub.subscribe(self.channel)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.pubsub.get_message(timeout=0.2)
            if msg and msg.get("type") == "message":
                self.arrivals.append(time.monotonic())
                self.bytes += len(msg["data"])
                self.messages += 1
                found = REVISION.search(msg["data"][:200])
                self.revisions.append(int(found.group(1)) if found else -1)

    def first_after(self, moment: float) -> float | None:
        return next((t for t in self.arrivals if t >= moment), None)

    def published_at(self, rev: int) -> float | None:
        """When the first update reaching revision ``rev`` arrived."""
        return next((t for t, r in zip(self.arrivals, self.revisions) if r >= rev), None)


class JoinFailed(RuntimeError):
    """A joining node could not reach the stack: the scenario stops, saying why."""


async def _join_once(url: str, zone: str, index: int) -> tuple[str, float, float | None]:
    """Register one fresh node, as an agent does (its client settings, its session);
    (its key, request sent, reply received or None). JoinFailed when the node cannot
    reach Redis at all."""
    ident = make_identity(index, "join")
    client = controller_client(url)
    session = TowerSession(client, zone, ident.private_key, session_id=ident.session)
    try:
        try:
            await session.open()
        except CONNECTION_ERRORS as exc:
            raise JoinFailed(f"join {index}: the joining node could not subscribe "
                             f"({type(exc).__name__}: {exc})") from None
        sent = time.monotonic()
        try:
            await session.request("register", ident.body, timeout=30)
        except NoReply:
            log.warning("join %d: the tower did not answer the register request in 30 s", index)
            return ident.public_key, sent, None
        except CONNECTION_ERRORS as exc:
            raise JoinFailed(f"join {index}: the joining node could not send its register "
                             f"request ({type(exc).__name__}: {exc})") from None
        return ident.public_key, sent, time.monotonic()
    finally:
        await session.close()
        await client.aclose()


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.mode == "full-list" and args.state != "full":
        raise SystemExit("--mode full-list needs --state full (an agent fed whole lists keeps them)")
    processes = args.processes or auto_processes(args.agents)
    estimate, load_timeout, spread = None, 0.0, args.spread
    if args.state == "full" and args.agents >= FULL_STATE_CHECKED:
        load = os.getloadavg()[0]       # other work on the machine, before ours starts
        estimate = setupcost.estimate(args.agents)
        cores = setupcost.cpu_share(os.cpu_count() or 1, processes, load)
        reason = setupcost.refusal(estimate, args.setup_limit, cores,
                                   setupcost.available_memory_gb())
        if reason is not None:
            return {**_not_run(args, reason, []), **estimate.as_dict()}
        load_timeout = args.setup_limit
        if args.spread is None:
            # Hand the snapshot out over the time the passes take, so that each
            # simulator's loop still serves the agents already following (heartbeats,
            # checks) between two passes instead of running them all back to back.
            default = min(args.heartbeat, MAX_SPREAD) if args.heartbeat > 0 else MAX_SPREAD
            spread = max(default, PACING * estimate.cpu_s / cores)
    identities = make_identities(args.agents)
    with stack_for(args) as stack:
        prereg_s = stack.preregister(identities)
        with Fleet(processes) as fleet:
            jobs = [{"redis_url": stack.redis_url, "zone": stack.zone,
                     "agents": [(i.private_key, i.session, i.body) for i in part],
                     "mode": args.mode, "keep_peers": args.state == "full",
                     "parse_shared": args.parse == "shared", "heartbeat": args.heartbeat,
                     "spread": spread, "load_timeout": load_timeout}
                    for part in split(identities, processes)]
            started = time.monotonic()
            try:
                setup = fleet.call("setup", jobs,
                                   timeout=180 + args.agents * 0.05 + load_timeout
                                   + (spread or 0))
            except FleetError as exc:
                lines = str(exc).strip().splitlines()
                reason = f"{lines[0]} {lines[-1]}" if len(lines) > 1 else str(exc)
                return _not_run(args, f"set-up failed: {reason}", [])
            setup_s = time.monotonic() - started
            at_setup = fleet.call("stats", {}, timeout=30)
            snapshot = stack.store().snapshot(stack.zone)
            reconcile_ms = full_reconcile_ms(identities[0].private_key, snapshot.peers)
            client = stack.client()
            publisher = (fulllist.FullListPublisher(client, stack.zone) if args.mode == "full-list"
                         else contextlib.nullcontext())
            try:
                with publisher, ChannelCounter(client, Keys().updates(stack.zone)) as deltas:
                    if args.warmup_joins:   # not counted in the bytes either
                        _joins(argparse.Namespace(**{**vars(args), "joins": 0}), stack, fleet,
                               deltas)
                    before = fleet.call("stats", {}, timeout=30)
                    bytes_before = deltas.bytes
                    timings = _joins(argparse.Namespace(**{**vars(args), "warmup_joins": 0}),
                                     stack, fleet, deltas)
                    after = fleet.call("stats", {}, timeout=30)
                    delta_bytes = deltas.bytes - bytes_before
            except JoinFailed as exc:
                return _not_run(args, str(exc), _stats_if_any(fleet))
            finally:
                client.close()
    received = sum(a["update_bytes"] for a in after) - sum(b["update_bytes"] for b in before)
    bytes_per_agent = received / (args.agents * args.joins)
    latencies = timings.latency

    def p50(values: list[float]) -> float | None:
        return round(percentile(values, 50), 2) if values else None
    result: dict[str, Any] = {
        "agents": args.agents,
        "p50_ms": p50(latencies),
        "p99_ms": round(percentile(latencies, 99), 2) if latencies else None,
        "bytes_per_agent": round(bytes_per_agent, 1),
        "mode": args.mode,
        "joins": args.joins,
        "incomplete_joins": timings.incomplete,
        "unanswered_joins": timings.unanswered,
        "max_ms": round(max(latencies), 2) if latencies else None,
        "reply_p50_ms": p50(timings.reply),
        "published_p50_ms": p50(timings.published),
        "first_agent_p50_ms": p50(timings.first_applied),
        "delta_bytes_per_join": round(delta_bytes / args.joins, 1),
    }
    if args.mode == "full-list" and delta_bytes:
        result["bytes_ratio"] = round(bytes_per_agent / (delta_bytes / args.joins), 1)
    result.update({
        "agent_full_reconcile_ms": round(reconcile_ms, 2),
        "state": args.state, "parse": args.parse, "heartbeat_s": args.heartbeat,
        "processes": processes, "preregister_s": round(prereg_s, 1),
        "setup_s": round(setup_s, 1),
        "register_s": round(max(r["register_s"] for r in setup), 1),
        "setup_updates": sum(a["update_messages"] for a in at_setup),
        "resyncs": sum(a["resyncs"] for a in after),
        "check_resyncs": sum(a["check_resyncs"] for a in after),
        "reconnects": sum(a["reconnects"] for a in after),
        "agent_warnings": sum(a["warnings"] for a in after),
        "agent_errors": sum(a["error_count"] for a in after),
        "sim_cpu_s": round(sum(a["cpu_s"] for a in after), 1),
        "sim_rss_mb": round(sum(a["rss_mb"] for a in after)),
        "latencies_ms": [round(x, 2) for x in latencies],
        **(estimate.as_dict() if estimate is not None else {}),
        **({"spread_s": round(spread, 1)} if spread is not None else {}),
        "command": command_of(args),
    })
    for reply in after:
        for error in reply["errors"]:
            log.warning("agent error: %s", error)
        for warning in reply["warning_samples"]:
            log.warning("agent warning: %s", warning)
    return result


def _stats_if_any(fleet: Fleet) -> list[dict[str, Any]]:
    """The simulators' statistics, or none when a simulator does not answer."""
    try:
        return fleet.call("stats", {}, timeout=30)
    except FleetError as exc:
        log.warning("no statistics from the simulators: %s", exc)
        return []


def _not_run(args: argparse.Namespace, reason: str, stats: list[dict[str, Any]]
             ) -> dict[str, Any]:
    """The result of a run that could not go on: why, and what the simulated agents were
    going through (reconnections and warnings usually say why Redis did not answer)."""
    warnings = [w for reply in stats for w in reply["warning_samples"]]
    log.error("bench join cannot go on: %s", reason)
    for warning in warnings:
        log.error("agent warning: %s", warning)
    return {"agents": args.agents, "mode": args.mode, "not_run": reason,
            "reconnects": sum(r["reconnects"] for r in stats),
            "resyncs": sum(r["resyncs"] for r in stats),
            "agent_warnings": sum(r["warnings"] for r in stats),
            "agent_errors": sum(r["error_count"] for r in stats),
            "warning_samples": warnings[:5], "command": command_of(args)}


def full_reconcile_ms(own_private: str, peers: dict[str, Any], repeat: int = 3) -> float:
    """What the agent's whole-zone pass costs at this zone size (median, ms).

    The real agent (``Agent._reconcile_all``, as at start, after a resync and on the
    drift check: desired over every peer, diff against the whole device read back,
    apply) on a recording device holding the zone, after a one-peer change each time.
    """
    from dataclasses import replace

    from testbed.simagent import make_agent

    sim = make_agent("redis://127.0.0.1:1/0", None, 0, private_key=own_private,
                     inline_device=True)
    agent = sim.agent
    sim.device.create()
    others = [k for k in peers if k != agent.public_key][:repeat]

    async def measure() -> list[float]:
        agent.mirror.load(1, peers)
        await agent._reconcile_all()
        times = []
        for n, key in enumerate(others):
            agent.mirror.peers[key] = replace(peers[key], endpoint=f"203.0.113.{n + 1}:4{n:04d}")
            started = time.perf_counter()
            await agent._reconcile_all()
            times.append((time.perf_counter() - started) * 1000)
        return times
    times = asyncio.run(measure())
    return sorted(times)[len(times) // 2] if times else 0.0


@dataclass
class Timings:
    """Per measured join, in ms from the register request."""
    latency: list[float] = field(default_factory=list)      # last agent applied
    reply: list[float] = field(default_factory=list)        # the joining node's reply
    published: list[float] = field(default_factory=list)    # the delta reached a subscriber
    first_applied: list[float] = field(default_factory=list)
    incomplete: int = 0       # always 0: a join not applied everywhere within --timeout ends the run
    unanswered: int = 0       # the joining node got no reply within 30 s


def _joins(args: argparse.Namespace, stack: Stack, fleet: Fleet,
           deltas: ChannelCounter) -> Timings:
    timings = Timings()

    async def main() -> None:
        for j in range(-args.warmup_joins, args.joins):
            key, sent, answered = await _join_once(stack.redis_url, stack.zone, j)
            if answered is None:
                timings.unanswered += 1
                continue
            try:
                replies = await asyncio.to_thread(fleet.call, "await_keys",
                                                  {"keys": [key], "timeout": args.timeout},
                                                  args.timeout + 30)
            except FleetError as exc:
                raise JoinFailed(f"join {j}: {exc}") from None
            counts = [r["applied"][key] for r in replies]
            if j < 0:
                log.info("warm-up join: not measured")
            elif all(c[0] >= r["agents"] for c, r in zip(counts, replies)):
                ms = [(t - sent) * 1000 for t in
                      (max(c[1] for c in counts), answered, min(c[2] for c in counts))]
                timings.latency.append(ms[0])
                timings.reply.append(ms[1])
                timings.first_applied.append(ms[2])
                published = deltas.first_after(sent)
                if published is not None:
                    timings.published.append((published - sent) * 1000)
                log.info("join %d: last agent %.1f ms (reply %.1f ms, first agent %.1f ms)",
                         j, ms[0], ms[1], ms[2])
            else:
                # No latency to measure: the run stops here, saying why.
                got = sum(c[0] for c in counts)
                raise JoinFailed(f"join {j}: only {got:,} of {args.agents:,} agents applied it "
                                 f"within {args.timeout:.0f} s")
            await asyncio.sleep(args.interval)
    asyncio.run(main())
    return timings

"""``redis-cost``: Redis memory and CPU per node, per zone and per request (docs/scaling.md).

Against a real redis-server and ``controltower serve``, through the real paths:

1. ``--zones`` empty zones are created (``ZoneStore.create_zone``, each with its zone
   secret's Redis user, as ``controltower zone create`` makes them): ``used_memory`` per
   zone.
2. ``--nodes`` nodes enroll in one zone with the zone secret (``aircrew.enroll``): each
   gets its registry record and its own Redis user (ACL). ``used_memory`` per node, and
   how much of it is the zone's registry hashes (``MEMORY USAGE``); the rest is the ACL
   user.
3. The same nodes register through the tower (a signed register request each, as the
   agent sends it): peer record, lease, change-log entry, applied entry, replay guard.
   Then the request worker's idle sweep over them (one ``XREADGROUP`` per zone in one
   pipeline, as the worker on a cluster): CPU of this process per zone.
4. Every node sends ``--heartbeats`` signed heartbeats (``--concurrency`` requests in
   flight): the ``seen`` entry and the replay guards they leave (each lives twice the
   clock-skew window, 120 s), and Redis's and the tower's CPU per heartbeat.

Reported per node: bytes of each zone key (``MEMORY USAGE <key> SAMPLES 0`` / nodes), of
one replay guard, of an ACL user; CPU (Redis, tower process) per registration and per
heartbeat; the sizes on the wire of a peer record, a register and heartbeat request and
the heartbeat's reply. The client (this process) runs on the same machine; CPU is per process.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from aircrew.config import login_url
from aircrew.enroll import enroll
from aircrew.session import TowerSession
from controltower.acl import AgentCredentials, new_secret
from wire.keys import REQUEST_GROUP, Keys

from .harness import add_stack_arguments, make_identity, stack_for, stack_options
from .report import Target

log = logging.getLogger(__name__)

TARGETS: list[Target] = []
HEADLINE = ["nodes", "zone_bytes", "node_bytes_total", "redis_cpu_us_per_heartbeat",
            "redis_cpu_us_per_registration"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stack_arguments(parser)
    parser.add_argument("--nodes", type=int, default=2000, help="nodes in the measured zone")
    parser.add_argument("--zones", type=int, default=1000, help="empty zones created")
    parser.add_argument("--heartbeats", type=int, default=3, help="heartbeats per node")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--profile-tower", action="store_true",
                        help="sample the tower with py-spy during the heartbeats (the bench "
                             "extra) and split its CPU per thread: gate, request worker, ...")


def command_of(args: argparse.Namespace) -> str:
    return (f"python -m bench redis-cost --nodes {args.nodes} --zones {args.zones} "
            f"--heartbeats {args.heartbeats} --concurrency {args.concurrency}"
            + (" --profile-tower" if args.profile_tower else "") + stack_options(args))


class Wire:
    """Counts what the sessions publish (requests) and receive (replies)."""

    def __init__(self) -> None:
        self.sent: dict[str, list[int]] = {}

    def wrap(self, session: TowerSession, kind: str) -> None:
        original = session._publish

        async def publish(packed: bytes, timeout: float) -> None:
            self.sent.setdefault(kind, []).append(len(packed))
            await original(packed, timeout)
        session._publish = publish      # type: ignore[method-assign]


async def _gather(count: int, concurrency: int, one) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def bounded(i: int) -> None:
        async with gate:
            await one(i)
    results = await asyncio.gather(*(bounded(i) for i in range(count)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise RuntimeError(f"{len(errors)} of {count} failed, e.g. {errors[0]!r}")


async def _enroll(url: str, zone: str, privates: list[str], concurrency: int) -> None:
    async def one(i: int) -> None:
        client = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            await enroll(client, Keys(), zone, "zone", privates[i], None, f"cost-{i}", timeout=30)
        finally:
            await client.aclose()
    await _gather(len(privates), concurrency, one)


async def _requests(url: str, zone: str, idents: list[Any], kind: str, rounds: int,
                    concurrency: int, wire: Wire, replies: list[int]) -> None:
    """Each node opens its session (subscribes), sends ``rounds`` requests of ``kind``."""
    client = aioredis.Redis.from_url(url, decode_responses=True,
                                     max_connections=2 * concurrency + 16)

    async def one(i: int) -> None:
        ident = idents[i]
        session = TowerSession(client, zone, ident.private_key, session_id=ident.session)
        wire.wrap(session, kind)
        await session.open()
        try:
            for _ in range(rounds):
                received = session.bytes_received
                body = ident.body if kind == "register" else None
                await session.request(kind, body, timeout=60)
                replies.append(session.bytes_received - received)
        finally:
            await session.close()
    try:
        await _gather(len(idents), concurrency, one)
    finally:
        await client.aclose()


def _zone_key_bytes(admin, keys: Keys, zone: str) -> dict[str, int]:
    names = {"peers": keys.peers(zone), "leases": keys.leases(zone), "seen": keys.seen(zone),
             "applied": keys.applied(zone), "changes": keys.changes(zone),
             "requests": keys.requests(zone), "nodes": keys.nodes(zone),
             "names": keys.names(zone)}
    return {n: int(admin.memory_usage(k, samples=0) or 0) for n, k in names.items()}


def _sweep_us(admin, keys: Keys, zones: list[str]) -> float | None:
    """The worker's idle look at every zone on a cluster (controltower/worker.py): one
    non-blocking XREADGROUP per zone in one pipeline; this process's CPU per zone
    (median of 5), with redis-py as the tower uses it."""
    if not zones:
        return None
    runs = []
    for _ in range(5):
        started = _process_cpu()
        pipe = admin.pipeline(transaction=False)
        for zone in zones:
            pipe.xreadgroup(REQUEST_GROUP, "cost-sweep", {keys.requests(zone): ">"}, count=64)
        pipe.execute()
        runs.append((_process_cpu() - started) * 1e6 / len(zones))
    return round(sorted(runs)[2], 1)


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _nonces(admin, keys: Keys, zone: str) -> tuple[int, int]:
    """(replay guards alive, bytes of the first 200 of them on average)."""
    pattern = keys.nonce(zone, "", "").rsplit(":", 2)[0] + ":*"
    found = list(admin.scan_iter(match=pattern, count=1000))
    sample = found[:200]
    sizes = [int(admin.memory_usage(k, samples=0) or 0) for k in sample]
    return len(found), round(sum(sizes) / len(sizes)) if sizes else 0


def _py_spy(pid: int) -> tuple[subprocess.Popen, Path] | None:
    """py-spy sampling the tower (None, with a warning, when py-spy is not installed:
    ``make bench`` installs it)."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        log.warning("py-spy is not installed (make bench): no CPU per thread")
        return None
    out = Path(tempfile.mkdtemp(prefix="cost-spy-")) / "tower.txt"
    proc = subprocess.Popen([found, "record", "--threads", "--nonblocking", "--format",
                             "raw", "--rate", "200", "-o", str(out), "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return proc, out


def _thread_shares(proc: subprocess.Popen, out: Path) -> dict[str, float]:
    """The share of the tower's non-idle samples per thread (py-spy drops idle ones)."""
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    counts: dict[str, int] = {}
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        name = re.sub(r"^thread \(\w+\): ", "", stack.split(";", 1)[0])
        name = re.sub(r"-\d+$", "", name)          # gate-0, gate-1, ...: the gate
        counts[name] = counts.get(name, 0) + int(n)
    shutil.rmtree(out.parent, ignore_errors=True)
    total = sum(counts.values()) or 1
    return {k: round(v / total, 3) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.nodes < 1 or args.zones < 0 or args.heartbeats < 1:
        raise SystemExit("--nodes and --heartbeats must be at least 1, --zones at least 0")
    keys = Keys()
    with stack_for(args) as stack:
        admin = stack.client()
        store = stack.store()
        used = lambda: int(admin.info("memory")["used_memory"])   # noqa: E731
        cpu = stack.cpu_seconds

        # 1. empty zones, each with its zone secret's user
        before = used()
        users_before = len(admin.execute_command("ACL", "USERS"))
        for z in range(args.zones):
            name = f"empty-{z}"
            store.create_zone(name, f"10.{z // 256 % 64 + 128}.{z % 256}.0/24")
            AgentCredentials(admin, keys).set(name, new_secret())
        zone_bytes = (used() - before) / args.zones if args.zones else None
        sweep_us = _sweep_us(admin, keys, [f"empty-{z}" for z in range(args.zones)])
        zone_users = len(admin.execute_command("ACL", "USERS")) - users_before

        # 2. enrollment: registry record + the node's own Redis user
        secret = new_secret()
        AgentCredentials(admin, keys).set(stack.zone, secret)
        zone_url = login_url(stack.redis_url, keys.agent_user(stack.zone), secret)
        idents = [make_identity(i, "cost") for i in range(args.nodes)]
        before, keys_before = used(), _zone_key_bytes(admin, keys, stack.zone)
        users_before = len(admin.execute_command("ACL", "USERS"))
        asyncio.run(_enroll(zone_url, stack.zone, [i.private_key for i in idents],
                            args.concurrency))
        enrolled = used()
        node_users = len(admin.execute_command("ACL", "USERS")) - users_before
        keys_enrolled = _zone_key_bytes(admin, keys, stack.zone)
        registry = sum(keys_enrolled[k] - keys_before[k] for k in ("nodes", "names"))
        enroll_bytes = (enrolled - before) / args.nodes

        # 3. registration through the tower
        wire = Wire()
        replies: dict[str, list[int]] = {"register": [], "heartbeat": []}
        cpu0, t0 = cpu(), time.monotonic()
        asyncio.run(_requests(stack.redis_url, stack.zone, idents, "register", 1,
                              args.concurrency, wire, replies["register"]))
        cpu1, t1 = cpu(), time.monotonic()
        registered = used()
        keys_registered = _zone_key_bytes(admin, keys, stack.zone)
        nonces_reg, nonce_bytes = _nonces(admin, keys, stack.zone)
        peer_records = admin.hvals(keys.peers(stack.zone))
        peer_record_bytes = sum(len(r) for r in peer_records) / len(peer_records)

        # 4. heartbeats
        spy = _py_spy(stack.tower.proc.pid) if args.profile_tower else None  # type: ignore[union-attr]
        asyncio.run(_requests(stack.redis_url, stack.zone, idents, "heartbeat",
                              args.heartbeats, args.concurrency, wire, replies["heartbeat"]))
        cpu2, t2 = cpu(), time.monotonic()
        threads = _thread_shares(*spy) if spy else None
        beaten = used()
        keys_beaten = _zone_key_bytes(admin, keys, stack.zone)
        nonces_hb, nonce_bytes_hb = _nonces(admin, keys, stack.zone)
        stats = stack.command_stats()
        admin.close()

    n = args.nodes
    per_node = {k: round((keys_beaten[k] - keys_before[k]) / n, 1) for k in keys_beaten}
    heartbeats = n * args.heartbeats
    acl_bytes = (enrolled - before - registry) / n
    guard = nonce_bytes_hb or nonce_bytes
    steady = {   # what one node holds in Redis while it heartbeats every 10 s
        "registry (nodes, names)": round(registry / n),
        "acl user": round(acl_bytes),
        "peer record": per_node["peers"],
        "lease": per_node["leases"],
        "seen entry": per_node["seen"],
        "applied entry": per_node["applied"],
        "replay guards (12 alive: 120 s / 10 s)": 12 * guard,
    }
    return {
        "nodes": n, "zones": args.zones, "heartbeats_per_node": args.heartbeats,
        "zone_bytes": round(zone_bytes) if zone_bytes is not None else None,
        "zone_users_made": zone_users,
        "sweep_client_us_per_zone": sweep_us, "node_users_made": node_users,
        "enroll_bytes_per_node": round(enroll_bytes),
        "registry_bytes_per_node": round(registry / n),
        "acl_user_bytes": round(acl_bytes),
        "register_bytes_per_node": round((registered - enrolled) / n),
        "heartbeat_phase_bytes_per_node": round((beaten - registered) / n),
        "key_bytes_per_node": per_node,
        "replay_guard_bytes": guard, "replay_guards_alive_after_register": nonces_reg,
        "replay_guards_alive_after_heartbeats": nonces_hb,
        "node_bytes_steady": steady,
        "node_bytes_total": round(sum(steady.values())),
        "peer_record_bytes": round(peer_record_bytes, 1),
        "register_request_bytes": round(sum(wire.sent["register"]) / n, 1),
        "heartbeat_request_bytes": round(sum(wire.sent["heartbeat"]) / heartbeats, 1),
        # the reply and the zone updates of the other nodes' registrations meanwhile
        "received_while_registering_bytes": round(sum(replies["register"]) / n, 1),
        "heartbeat_reply_bytes": round(sum(replies["heartbeat"]) / heartbeats, 1),
        "registrations_per_s": round(n / (t1 - t0), 1),
        "heartbeats_per_s": round(heartbeats / (t2 - t1), 1),
        "redis_cpu_us_per_registration": round(1e6 * (cpu1["redis"] - cpu0["redis"]) / n, 1),
        "tower_cpu_us_per_registration": round(1e6 * (cpu1["tower"] - cpu0["tower"]) / n, 1),
        "redis_cpu_us_per_heartbeat": round(1e6 * (cpu2["redis"] - cpu1["redis"]) / heartbeats, 1),
        "tower_cpu_us_per_heartbeat": round(1e6 * (cpu2["tower"] - cpu1["tower"]) / heartbeats, 1),
        "redis_commands_usec_per_call": {c: v["usec_per_call"] for c, v in stats.items()
                                         if c in ("evalsha", "publish", "xadd", "xreadgroup",
                                                  "zadd", "hget", "exists")},
        **({"tower_thread_shares_during_heartbeats": threads} if threads else {}),
        "command": command_of(args),
    }

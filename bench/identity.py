"""``identity``: enrolling nodes with per-node credentials, and revocation to effect.

Against a real redis-server and ``controltower serve`` (its gate and worker):

1. ``--nodes`` simulated nodes enroll through the real path (aircrew.enroll.enroll):
   each logs in as the zone secret's Redis user, publishes a signed enroll request with
   the digest of a password it chose, and waits for the tower, which runs the enroll
   script and makes the node's own Redis user. ``--concurrency`` enrollments at a time.
   Reported: the time for all, enrollments per second, latency p50/p99, Redis
   ``used_memory`` per node (its registry record and its ACL user) and the number of
   Redis users.
2. ``--revoke`` of them connect with their own credential (a subscribed connection, as an
   agent holds); each is removed with ``DELETE /peers/<key>`` (the REST call an operator
   makes), one at a time, and the time from sending the call until the node's
   connection is closed by Redis is measured (``revoke_ms_p50/p99``; target p99 <= 1 s).
"""
from __future__ import annotations

import argparse
import asyncio
import time
import urllib.request
from typing import Any

import redis.asyncio as aioredis

from aircrew.config import login_url
from aircrew.enroll import enroll
from controltower.acl import AgentCredentials, new_secret
from wire import proof
from wire.keys import Keys

from .harness import add_stack_arguments, stack_for, stack_options
from .report import Target, percentile

TARGETS = [Target("revoke_ms_p99", "<=", 1000.0)]
HEADLINE = ["nodes", "enroll_s", "enroll_per_s", "enroll_ms_p99", "redis_bytes_per_node",
            "revoked", "revoke_ms_p50", "revoke_ms_p99"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stack_arguments(parser)
    parser.add_argument("--nodes", type=int, default=10000, help="nodes to enroll")
    parser.add_argument("--concurrency", type=int, default=64, help="enrollments at a time")
    parser.add_argument("--revoke", type=int, default=200, help="nodes removed, one at a time")


def command_of(args: argparse.Namespace) -> str:
    return (f"python -m bench identity --nodes {args.nodes} --concurrency {args.concurrency} "
            f"--revoke {args.revoke}" + stack_options(args))


async def _enroll_all(url: str, zone: str, keys: list[str], concurrency: int
                      ) -> tuple[list[float], list[Any]]:
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    creds: list[Any] = [None] * len(keys)

    async def one(i: int) -> None:
        async with sem:
            client = aioredis.Redis.from_url(url, decode_responses=True)
            try:
                for attempt in range(3):
                    started = time.perf_counter()
                    try:
                        creds[i] = await enroll(client, Keys(), zone, "zone", keys[i], None,
                                                f"bench-{i}", timeout=30)
                        latencies.append(time.perf_counter() - started)
                        return
                    except Exception:  # noqa: BLE001 - counted below if it never succeeds
                        if attempt == 2:
                            raise
            finally:
                await client.aclose()
    results = await asyncio.gather(*(one(i) for i in range(len(keys))), return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        raise RuntimeError(f"{len(errors)} enrollments failed, e.g. {errors[0]!r}")
    return latencies, creds


async def _revoke_all(base_url: str, api: str, token: str, zone: str, nodes: list[tuple[str, Any]]
                      ) -> list[float]:
    """Each node connected (subscribed) with its own credential; DELETE it; time to cut."""
    keys = Keys()
    out: list[float] = []
    for public, cred in nodes:
        client = aioredis.Redis.from_url(login_url(base_url, cred.user, cred.password))
        pubsub = client.pubsub()
        await pubsub.subscribe(keys.updates(zone))
        await pubsub.get_message(timeout=2)
        closed = asyncio.Event()

        async def watch() -> None:
            try:
                while True:
                    await pubsub.get_message(timeout=None)
            except Exception:  # noqa: BLE001 - the connection was cut
                closed.set()
        task = asyncio.create_task(watch())
        req = urllib.request.Request(f"{api}/peers/{urllib.request.quote(public, safe='')}",
                                     method="DELETE",
                                     headers={"Authorization": f"Bearer {token}"})
        started = time.perf_counter()
        await asyncio.to_thread(lambda: urllib.request.urlopen(req, timeout=30).read())
        try:
            await asyncio.wait_for(closed.wait(), 10)
            out.append(time.perf_counter() - started)
        except asyncio.TimeoutError:
            out.append(float("inf"))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        try:
            await client.aclose()
        except Exception:  # noqa: BLE001 - already cut
            pass
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    with stack_for(args) as stack:
        admin = stack.client()
        secret = new_secret()
        AgentCredentials(admin, Keys()).set(stack.zone, secret)
        zone_url = login_url(stack.redis_url, Keys().agent_user(stack.zone), secret)
        keys = [proof.generate_private_key() for _ in range(args.nodes)]
        before = admin.info("memory")["used_memory"]
        users_before = len(admin.execute_command("ACL", "USERS"))
        started = time.monotonic()
        latencies, creds = asyncio.run(_enroll_all(zone_url, stack.zone, keys, args.concurrency))
        took = time.monotonic() - started
        after = admin.info("memory")["used_memory"]
        users = len(admin.execute_command("ACL", "USERS")) - users_before
        token = (stack.tower.data_dir / "admin-token").read_text().strip()
        chosen = [(proof.public_key_of(keys[i]), creds[i]) for i in range(min(args.revoke, len(keys)))]
        revokes = asyncio.run(_revoke_all(stack.redis_url, stack.tower.api, token, stack.zone,
                                          chosen))
        admin.close()
    ms = [1000 * s for s in latencies]
    rv = [1000 * s for s in revokes]
    return {
        "nodes": args.nodes, "enroll_s": round(took, 2),
        "enroll_per_s": round(args.nodes / took, 1),
        "enroll_ms_p50": round(percentile(ms, 50), 2), "enroll_ms_p99": round(percentile(ms, 99), 2),
        "redis_bytes_per_node": round((after - before) / args.nodes),
        "redis_users_made": users,
        "revoked": len(rv), "revoke_ms_p50": round(percentile(rv, 50), 2),
        "revoke_ms_p99": round(percentile(rv, 99), 2), "revoke_ms_max": round(max(rv), 2),
        "command": command_of(args),
    }

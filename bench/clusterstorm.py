"""``storm --redis cluster``: a registration storm over many zones, on a single Redis and
on a 6-process Redis Cluster (3 primaries + 3 replicas, testbed/rediscluster.py), in
one run, with the same tower, nodes and observers.

Each stack: ``controltower serve`` on it, ``--zones`` zones, ``--observers`` raw
subscribers per zone (``SUBSCRIBE``, or ``SSUBSCRIBE`` on the zone's shard), then
``--nodes`` fresh nodes register as agents do (bench/simproc.py ``register_zones``),
spread over the zones.

Per stack: registrations/s (answered / span), the update messages the observers got.
Per shard (cluster): its zones, registrations, ``SPUBLISH`` calls (replies and updates,
``INFO commandstats`` of its primary), update messages delivered to its observers, and
its Redis CPU. Fan-out: the cluster-bus messages the nodes received per ``SPUBLISH``
during the storm (``CLUSTER INFO`` ``cluster_stats_messages_publishshard_received``,
every node), against those per classic ``PUBLISH`` of as many update messages of the
same size sent afterwards to the same channels (``..._publish_received``): measured
both ways, not computed.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import math
import shutil
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from ipam.store import ZoneStore
from testbed.redisserver import RedisProcess
from testbed.rediscluster import LocalCluster, key_slot
from testbed.tower import TowerProcess
from wire.keys import Keys
from wire.redisconn import connect

from .fleet import Fleet, split
from .harness import make_identities, process_cpu, raise_fd_limit

log = logging.getLogger(__name__)

KEYS = Keys()


class Observers:
    """``count`` subscribers per zone on their own connections (an asyncio loop in a
    thread), counting the update messages and their bytes per zone."""

    def __init__(self, urls: dict[str, str], count: int, sharded: bool) -> None:
        self.urls, self.count, self.sharded = urls, count, sharded
        self.messages: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> "Observers":
        self._thread.start()
        if not self.ready.wait(60):
            raise RuntimeError("the observers did not subscribe within 60 s")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        clients = {url: aioredis.Redis.from_url(url, max_connections=10_000)
                   for url in set(self.urls.values())}
        subs = []
        for zone, url in self.urls.items():
            for _ in range(self.count):
                pubsub = clients[url].pubsub(ignore_subscribe_messages=True)
                channel = KEYS.updates(zone)
                await (pubsub.ssubscribe(channel) if self.sharded else pubsub.subscribe(channel))
                subs.append((zone, pubsub))
        readers = [asyncio.create_task(self._read(zone, pubsub)) for zone, pubsub in subs]
        self.ready.set()
        await self._stop.wait()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for _, pubsub in subs:
            await pubsub.aclose()
        for client in clients.values():
            await client.aclose()

    async def _read(self, zone: str, pubsub: Any) -> None:
        while True:
            msg = await pubsub.get_message(timeout=None)
            if msg and msg["type"] in ("message", "smessage"):
                self.messages[zone] += 1
                self.bytes[zone] += len(msg["data"])


class Backend:
    """A single redis-server or a local Redis Cluster, with the stats the scenario reads."""

    def __init__(self, cluster: bool, workdir: Path, maxclients: int) -> None:
        self.cluster = cluster
        extra = ["--maxclients", str(maxclients), "--appendfsync", "always"]
        if cluster:
            self.local = LocalCluster(extra=["--maxclients", str(maxclients)])
            self.local.start()
            self.url = self.local.url
        else:
            self.proc = RedisProcess(workdir / "redis", extra=extra)
            self.proc.start()
            self.url = self.proc.url

    def stop(self) -> None:
        (self.local if self.cluster else self.proc).stop()

    def nodes(self) -> dict[int, redis.Redis]:
        """port -> client of every node (the one Redis: itself)."""
        if self.cluster:
            return {n.port: n.client() for n in self.local.nodes if n.alive}
        return {self.proc.port: self.proc.client()}

    def primaries(self) -> list[int]:
        return [n.port for n in self.local.primaries()] if self.cluster else [self.proc.port]

    def stats(self) -> dict[int, dict[str, float]]:
        """Per node: spublish/publish calls, bus messages received, CPU seconds."""
        out = {}
        for port, client in self.nodes().items():
            calls = client.info("commandstats")
            cpu = client.info("cpu")
            row = {"spublish": calls.get("cmdstat_spublish", {}).get("calls", 0),
                   "publish": calls.get("cmdstat_publish", {}).get("calls", 0),
                   "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])}
            if self.cluster:
                info = client.cluster("info")
                row["bus_shard_in"] = int(info.get("cluster_stats_messages_publishshard_received", 0))
                row["bus_classic_in"] = int(info.get("cluster_stats_messages_publish_received", 0))
            out[port] = row
            client.close()
        return out


def delta(after: dict[int, dict[str, float]], before: dict[int, dict[str, float]]
          ) -> dict[int, dict[str, float]]:
    return {port: {k: v - before.get(port, {}).get(k, 0) for k, v in row.items()}
            for port, row in after.items()}


def run_stack(args: argparse.Namespace, cluster: bool, nodes: list[Any]) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="ct-bench-cluster-"))
    backend = tower = None
    try:
        backend = Backend(cluster, workdir, max(1000, raise_fd_limit() - 128))
        primaries = backend.primaries()
        tower = TowerProcess(backend.url, workdir / "tower", extra=["--stun-port", "0"])
        tower.start(timeout=60)
        store = ZoneStore(connect(backend.url))
        zones = [f"storm-{i:02d}" for i in range(args.zones)]
        for i, zone in enumerate(zones):
            store.create_zone(zone, f"10.{64 + i}.0.0/16")
        if cluster:
            owner = {z: store.redis.get_node_from_key(KEYS.zone(z)).port for z in zones}
        else:
            owner = {z: backend.proc.port for z in zones}
        urls = {z: f"redis://127.0.0.1:{port}/0" for z, port in owner.items()}
        groups = split(nodes, len(zones))
        with Observers(urls, args.observers_per_zone, cluster) as observers, \
                Fleet(args.registrars) as registering:
            before, tower_cpu = backend.stats(), process_cpu(tower.proc.pid)
            start_at = time.monotonic() + 1.0
            replies = registering.call("register_zones", [
                {"groups": [[urls[z], z, [(i.private_key, i.body)
                                         for i in split(group, args.registrars)[r]]]
                            for z, group in zip(zones, groups)],
                 "concurrency": math.ceil(args.concurrency / args.registrars),
                 "timeout": args.timeout, "start_at": start_at, "sharded": cluster}
                for r in range(args.registrars)], timeout=args.timeout * 2 + 60)
            rows = [row for reply in replies for row in reply["rows"]]
            _await_published(store, zones, 30.0)
            time.sleep(0.5)          # the last updates reach the observers
            after, tower_cpu = backend.stats(), process_cpu(tower.proc.pid) - tower_cpu
            storm = delta(after, before)
            messages, message_bytes = dict(observers.messages), dict(observers.bytes)
            classic = (_classic_fanout(backend, zones, messages, message_bytes, args.observers_per_zone)
                       if cluster else None)
        store.redis.close()
    finally:
        if tower is not None:
            tower.stop()
        if backend is not None:
            backend.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return _result(args, cluster, zones, owner, rows, storm, tower_cpu, messages, message_bytes,
                   classic, primaries)


def _await_published(store: ZoneStore, zones: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with store.redis.pipeline(transaction=False) as pipe:
            for zone in zones:
                pipe.get(KEYS.rev(zone))
                pipe.get(KEYS.published(zone))
            values = pipe.execute()
        if all(int(values[i] or 0) <= int(values[i + 1] or 0) for i in range(0, len(values), 2)):
            return
        time.sleep(0.05)
    log.warning("not every zone's changes were published within %.0f s", timeout)


def _classic_fanout(backend: Backend, zones: list[str], messages: dict[str, int],
                    message_bytes: dict[str, int], observers: int) -> dict[str, float]:
    """As many update messages as the storm published, to the same channels with the same
    sizes, sent with classic PUBLISH (each to its zone's primary; the observers, shard
    subscribers, do not get them): the bus messages the nodes received for them."""
    before = backend.stats()
    sent = 0
    for zone in zones:
        published = messages.get(zone, 0) // max(1, observers)
        if not published:
            continue
        size = message_bytes[zone] // messages[zone]
        client = backend.local.owner(key_slot(KEYS.updates(zone))).client()
        with client.pipeline(transaction=False) as pipe:
            for _ in range(published):
                pipe.publish(KEYS.updates(zone), "x" * size)
            pipe.execute()
        client.close()
        sent += published
    time.sleep(1.0)          # the bus delivers asynchronously
    after = delta(backend.stats(), before)
    return {"publishes": sent, "bus_in": sum(r["bus_classic_in"] for r in after.values())}


def _result(args: argparse.Namespace, cluster: bool, zones: list[str], owner: dict[str, int],
            rows: list[list[Any]], storm: dict[int, dict[str, float]], tower_cpu: float,
            messages: dict[str, int], message_bytes: dict[str, int],
            classic: dict[str, float] | None, primaries: list[int]) -> dict[str, Any]:
    answered = [row for row in rows if row[2] == "ok"]
    first = min(row[3] for row in rows)
    last = max((row[4] for row in answered), default=first)
    span = last - first
    zones_of: dict[int, list[str]] = defaultdict(list)
    for zone, port in owner.items():
        zones_of[port].append(zone)
    # each zone's registrations: its share of the nodes (run_stack's split)
    share = {z: len(g) for z, g in zip(zones, split(list(range(args.nodes)), len(zones)))}
    out: dict[str, Any] = {
        "registrations_per_s": round(len(answered) / span, 1) if span > 0 else None,
        "answered": len(answered), "unanswered": len(rows) - len(answered),
        "registration_span_s": round(span, 2),
        "update_messages_delivered": sum(messages.values()),
        "tower_cpu_pct": round(tower_cpu / max(span, 1e-9) * 100),
    }
    shards = []
    for port in primaries:
        row = storm.get(port, {})
        shards.append({
            "primary": port, "zones": len(zones_of.get(port, [])),
            "registrations": sum(share[z] for z in zones_of.get(port, [])),
            "publish_calls": int(row.get("spublish" if cluster else "publish", 0)),
            "update_messages_delivered": sum(messages.get(z, 0) for z in zones_of.get(port, [])),
            "redis_cpu_pct": round(row.get("cpu_s", 0) / max(span, 1e-9) * 100),
        })
    out["shards"] = shards
    if cluster:
        spublish = sum(storm[p]["spublish"] for p in primaries)
        bus_shard = sum(r.get("bus_shard_in", 0) for r in storm.values())
        out["spublish_calls"] = int(spublish)
        # the nodes' requests stay on classic pub/sub (the gate's pattern subscriptions):
        # each reaches every node over the bus
        out["bus_messages_per_registration_request"] = round(
            sum(r.get("bus_classic_in", 0) for r in storm.values()) / max(1, len(rows)), 2)
        out["bus_messages_per_spublish"] = round(bus_shard / spublish, 2) if spublish else None
        if classic and classic["publishes"]:
            out["classic_publishes"] = int(classic["publishes"])
            out["bus_messages_per_classic_publish"] = round(classic["bus_in"] / classic["publishes"], 2)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    nodes = make_identities(args.nodes, "cstorm")
    single = run_stack(args, False, nodes)
    cluster = run_stack(args, True, make_identities(args.nodes, "cstorm"))
    result: dict[str, Any] = {
        "nodes": args.nodes, "zones": args.zones, "observers_per_zone": args.observers_per_zone,
        "single_registrations_per_s": single["registrations_per_s"],
        "cluster_registrations_per_s": cluster["registrations_per_s"],
        "unanswered": single["unanswered"] + cluster["unanswered"],
        "bus_messages_per_spublish": cluster.get("bus_messages_per_spublish"),
        "bus_messages_per_classic_publish": cluster.get("bus_messages_per_classic_publish"),
    }
    per_s, per_c = (result["bus_messages_per_spublish"],
                    result["bus_messages_per_classic_publish"])
    if per_s is not None and per_c:
        result["bus_fanout_saved_pct"] = round((1 - per_s / per_c) * 100, 1)
    result["single"] = single
    result["cluster"] = cluster
    result["command"] = (f"python -m bench storm --redis cluster --nodes {args.nodes} "
                         f"--zones {args.zones} --observers-per-zone {args.observers_per_zone}")
    return result

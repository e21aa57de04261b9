"""Nodes written straight into a zone store (the register script, as the request worker
runs it): for the dashboard's tests and ``bench dashboard``, where what matters is what
the tower shows, not agents."""
from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass

from aircrew.pathkeeper import bounded
from ipam.store import ZoneStore

NAT_MIX = ("open", "cone", "cone", "symmetric", "cone", "unknown", "cone", "static")


def fake_key(seed: str) -> str:
    """A well-formed WireGuard public key, the same for the same seed."""
    return base64.b64encode(hashlib.sha256(seed.encode()).digest()).decode()


@dataclass(frozen=True)
class FakeNode:
    key: str
    hostname: str
    address: str


def add_node(store: ZoneStore, zone: str, hostname: str, nat_type: str = "cone",
             endpoint: str | None = None, online: bool = True, child_prefixes: tuple = (),
             pending: tuple = (), tags: tuple = ()) -> FakeNode:
    key = fake_key(f"{zone}/{hostname}")
    z = store.get_zone(zone)
    call = store.register_call(z, key, listen_port=51820, session="s-" + hostname,
                               endpoint=endpoint, nat_type=nat_type, hostname=hostname,
                               child_prefixes=child_prefixes, pending=pending, tags=tags)
    assignment = store.run(call)
    if online:
        store.heartbeat(zone, key, "s-" + hostname)
    else:                               # registered, silent for an hour
        store.redis.zadd(store.keys.seen(zone), {key: time.time() - 3600})
    return FakeNode(key, hostname, assignment.address)


def report(store: ZoneStore, zone: str, node: FakeNode,
           paths: dict[str, tuple[str, str | None]]) -> None:
    """A heartbeat of ``node`` carrying its path report, as its agent sends it:
    ``paths``: peer mesh address -> ("d" | "r" | "x", relay id or None)."""
    relays = sorted({r for _, r in paths.values() if r})
    entries = bounded([[address, code, relays.index(relay) if relay else None, 5]
                       for address, (code, relay) in sorted(paths.items())])
    store.run(store.heartbeat_call(zone, node.key, "s-" + node.hostname,
                                   report={"relay": relays[0] if relays else None,
                                           "relays": relays, "paths": entries}))


def report_all(store: ZoneStore, zone: str, nodes: list[FakeNode], online: set[str],
               code: str = "d") -> None:
    """Every online node reports ``code`` for its online peers (as many as an agent's
    report holds: aircrew.pathkeeper.bounded)."""
    up = [n for n in nodes if n.key in online]
    for node in up:
        report(store, zone, node, {p.address: (code, None) for p in up if p.key != node.key})


def fill(store: ZoneStore, zone: str, count: int, offline_every: int = 0,
         reports: bool = True) -> list[FakeNode]:
    """``count`` nodes with a mix of NAT types; every ``offline_every``-th one offline;
    ``reports``: every online node reports its online peers direct (as many as an agent's
    report holds), as agents do on their heartbeats."""
    out, online = [], set()
    for i in range(count):
        up = not (offline_every and i % offline_every == offline_every - 1)
        node = add_node(store, zone, f"node{i:04d}", NAT_MIX[i % len(NAT_MIX)],
                        f"203.0.113.{10 + i % 200}:{51820 + i // 200}", up)
        out.append(node)
        if up:
            online.add(node.key)
    if reports:
        report_all(store, zone, out, online)
    store.flush(zone)
    return out

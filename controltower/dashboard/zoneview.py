"""What the dashboard shows of zones, read from the zone store in few round trips (the
dashboard's query layer: Flask-free, so the bench and tests call it directly)."""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field

from ipam.registry import JoinKeyRecord
from ipam.store import Zone, ZoneStore
from wire.keys import node_id
from wire.messages import NAT_UNKNOWN, Peer, parse_peer

from .. import pairpaths
from ..acl import AgentCredentials
from . import leasemap, picture
from .picture import Picture


EXCEPTIONS_SHOWN = 50      # pairs of online nodes that are not direct, listed


@dataclass(frozen=True)
class ZoneRow:
    zone: Zone
    nodes: int
    used: int
    usable: int
    percent: float


@dataclass(frozen=True)
class NodeRow:
    key: str
    anchor: str
    label: str
    name: str
    hostname: str
    address: str
    endpoint: str
    nat_type: str
    kind: str
    last_seen: float | None
    online: bool
    tags: tuple[str, ...]
    child_prefixes: tuple[str, ...]
    pending_prefixes: tuple[str, ...]
    relay: str = ""                      # its home relay, when it has one


@dataclass
class ZoneView:
    zone: Zone
    rev: int
    nodes: list[NodeRow]
    picture: Picture
    leases: leasemap.LeaseMap
    join_keys: list[JoinKeyRecord] | None        # None: the tower manages no credentials
    now: float
    version: str
    online: int = 0
    offline_after: float = 30.0
    exceptions: list[tuple[NodeRow, NodeRow, str, str | None]] = field(default_factory=list)
    exceptions_total: int = 0
    settings: dict = field(default_factory=dict)


def zones(store: ZoneStore) -> list[ZoneRow]:
    listed = store.list_zones()
    with store.redis.pipeline(transaction=False) as pipe:
        for z in listed:
            pipe.hlen(store.keys.peers(z.name))
            pipe.hlen(store.keys.leases(z.name))
        counts = pipe.execute()
    rows = []
    for i, z in enumerate(listed):
        used, usable, percent = leasemap.usage(z.cidr, counts[2 * i + 1])
        rows.append(ZoneRow(z, counts[2 * i], used, usable, percent))
    return rows


def zones_version(store: ZoneStore) -> str:
    names = store.zone_names()
    with store.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.get(store.keys.rev(name))
            pipe.hlen(store.keys.leases(name))
        found = pipe.execute()
    return _digest(names, found)


def version(store: ZoneStore, zone: str, now: float, offline_after: float) -> str:
    """Changes with the zone's revision, any pair's path, and its join keys: the ETag the
    page's live updates poll on (no peer record is read)."""
    with store.redis.pipeline(transaction=False) as pipe:
        pipe.get(store.keys.rev(zone))
        pipe.hgetall(store.keys.joinkeys(zone))
        rev, keys = pipe.execute()
    return _digest(rev, sorted(keys.items()), pairpaths.version(store, zone, now, offline_after))


def label(peer: Peer) -> str:
    return peer.name or peer.hostname or peer.address


def zone_view(store: ZoneStore, creds: AgentCredentials | None, name: str, now: float,
              offline_after: float) -> ZoneView:
    zone = store.get_zone(name)
    with store.redis.pipeline(transaction=True) as pipe:
        pipe.get(store.keys.rev(zone.name))
        pipe.hvals(store.keys.peers(zone.name))
        pipe.zrange(store.keys.seen(zone.name), 0, -1, withscores=True)
        rev, records, seen_list = pipe.execute()
    peers = [parse_peer(r) for r in records]
    seen = dict(seen_list)
    paths = pairpaths.read(store, zone.name, peers, seen, now, offline_after)
    rows = []
    for p in sorted(peers, key=lambda p: ipaddress.ip_address(p.address)):
        last = seen.get(p.key)
        rows.append(NodeRow(
            p.key, "node-" + node_id(p.key)[:12], label(p), p.name or "", p.hostname or "",
            p.address, p.endpoint or "", p.nat_type or NAT_UNKNOWN, picture.kind(p.nat_type),
            last, last is not None and now - last <= offline_after, p.tags,
            p.child_prefixes, p.pending_prefixes, p.relay or ""))
    shapes = [picture.Node(r.key, r.label, r.nat_type, r.online, r.anchor) for r in rows]
    pic = picture.picture(shapes, paths.pair, paths.between, paths.relays)
    held = {p.address: label(p) for p in peers}
    keys = None
    if creds is not None:
        keys = sorted(creds.registry.join_keys(zone.name), key=lambda r: -r.created)
    by_key = {r.key: r for r in rows}
    odd, total = paths.exceptions(EXCEPTIONS_SHOWN)
    return ZoneView(zone, int(rev or 0), rows, pic, leasemap.lease_map(zone.cidr, held), keys,
                    now, version(store, zone.name, now, offline_after),
                    online=sum(r.online for r in rows), offline_after=offline_after,
                    exceptions=[(by_key[a], by_key[b], path, relay) for a, b, path, relay in odd
                                if a in by_key and b in by_key],
                    exceptions_total=total)


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:20]

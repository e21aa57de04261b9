"""Nodes as the operator sees them: found by key or name, removed for good (revoked),
their routes approved, their credentials renewed. Used by the REST API and the worker's
reaper (ephemeral nodes, expired credentials)."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from ipam import cidr as cidrs
from ipam.registry import MAX_ROUTES, Node, Registry, check_routes, check_tags, parse_node
from ipam.store import AUTO_APPROVE, KEY_EXPIRY, Zone, ZoneStore
from wire import identity, messages
from wire.errors import Conflict, InvalidInput, NotFound
from wire.keys import node_id
from wire.messages import Peer

from .acl import AgentCredentials

log = logging.getLogger(__name__)

# Why a node was removed, as the tombstone and the agent's last line say it.
REASONS = {"deleted": "removed by an administrator", "key-expired": "its credential expired",
           "ephemeral": "an ephemeral node, offline too long"}


@dataclass(frozen=True)
class Found:
    zone: str
    key: str
    peer: Peer | None          # None: enrolled, not registered (yet)
    node: Node | None          # None: registered without enrollment (no identity)


class Nodes:
    def __init__(self, store: ZoneStore, credentials: AgentCredentials | None) -> None:
        self.store = store
        self.credentials = credentials
        self.registry = credentials.registry if credentials else Registry(
            store.redis, store.keys, store.scripts)

    def find(self, ref: str, zone: str | None = None) -> Found:
        """A node by public key, by name (unique across zones, or in ``zone``), or by
        ``name.zone``."""
        if zone is not None:
            zone = messages.zone_name(zone)
        try:
            key = messages.public_key(ref)
        except InvalidInput:
            return self._by_name(ref, zone)
        zones = [zone] if zone else self.store.zone_names()
        nid = node_id(key)
        with self.store.redis.pipeline(transaction=False) as pipe:   # one round trip
            for name in zones:
                pipe.hget(self.store.keys.peers(name), key)
                pipe.hget(self.store.keys.nodes(name), nid)
            replies = pipe.execute()
        for i, name in enumerate(zones):
            record, raw = replies[2 * i], replies[2 * i + 1]
            node = parse_node(nid, raw) if raw is not None else None
            if record is not None or (node is not None and not node.removed):
                return Found(name, key, messages.parse_peer(record) if record else None, node)
        raise NotFound(f"peer {key} does not exist")

    def _by_name(self, ref: str, zone: str | None) -> Found:
        name, _, in_zone = ref.partition(".")
        identity.node_name(name, "a node name")
        if in_zone:
            zone = messages.zone_name(in_zone)
        hits = []
        for z in ([zone] if zone else self.store.zone_names()):
            node = self.registry.node_by_name(z, name)
            if node is not None and not node.removed:
                hits.append((z, node))
        if not hits:
            raise NotFound(f"no node is named {ref}")
        if len(hits) > 1:
            raise Conflict(f"{len(hits)} zones have a node named {name}: say which, "
                           f"{name}.<zone>")
        z, node = hits[0]
        record = self.store.redis.hget(self.store.keys.peers(z), node.key)
        return Found(z, node.key, messages.parse_peer(record) if record else None, node)

    def remove(self, found: Found, reason: str = "deleted") -> Peer | None:
        """Remove a node for good: tombstone, peer record, Redis user (its connections
        are cut at once), then tell the zone. Returns the peer record it had."""
        zone = found.zone
        node = found.node
        if node is not None:
            node = self.registry.remove_node(zone, node.id, REASONS.get(reason, reason),
                                             sticky=reason == "deleted") or node
        removed = None
        try:
            self.store.remove_peer(zone, found.key, reason)
            removed = found.peer
        except NotFound:
            pass
        if node is not None and self.credentials is not None:
            self.credentials.revoke_node(zone, node)
        self.store.flush(zone)
        log.info("node %s (%s) of zone %s removed: %s", node.name if node else "-", found.key,
                 zone, REASONS.get(reason, reason))
        return removed

    def approve(self, found: Found, approve: list[str], revoke: list[str]) -> Node:
        """Approve (or take back) child prefixes of a node; its record is registered
        again, so every peer routes (or stops routing) them at once."""
        if found.node is None:
            raise Conflict("this node was not enrolled: the tower does not manage its routes")
        zone = self.store.get_zone(found.zone)
        approve = [str(p) for p in cidrs.child_prefixes(zone.network, approve)]   # canonical
        revoke = [str(p) for p in cidrs.child_prefixes(zone.network, revoke)]
        approved = sorted((set(found.node.approved) | set(approve)) - set(revoke))
        if len(approved) > MAX_ROUTES:
            raise InvalidInput(f"a node has at most {MAX_ROUTES} approved prefixes")
        return self._change(found, found.node, zone, approved=tuple(approved))

    def set_tags(self, found: Found, tags: list[object]) -> Node:
        """Replace a node's tags; a registered node's record is registered again, so its
        zone hears one upsert (policy sets are derived from it)."""
        if found.node is None:
            raise Conflict("this node was not enrolled: the tower does not manage its tags")
        node = self._change(found, found.node, tags=check_tags(tags))
        log.info("node %s of zone %s: tags %s", node.name, found.zone, ", ".join(node.tags) or "none")
        return node

    def _change(self, found: Found, old: Node, zone: Zone | None = None,
                **changes: object) -> Node:
        """Change an enrolled node's record; a registered node is registered again, so its
        zone hears it. Refused (a prefix another node holds) or Redis gone: the record is
        changed back, it keeps what its zone was told."""
        node = self.registry.update_node(found.zone, old, **changes)
        if found.peer is not None:
            try:
                self.reregister(zone or self.store.get_zone(found.zone), found.peer)
            except Exception:
                self.registry.update_node(found.zone, node,
                                          **{k: getattr(old, k) for k in changes})
                raise
        return node

    def reregister(self, zone: Zone, peer: Peer) -> None:
        """Run a registered node's record through the register script again (its
        approvals or the zone's auto-approve ranges changed)."""
        wanted = sorted({*peer.child_prefixes, *peer.pending_prefixes})
        self.store.run(self.store.enrolled_register_call(
            zone, peer.key, listen_port=peer.listen_port, session=peer.session,
            endpoint=peer.endpoint, request_ip=peer.address, child_prefixes=wanted,
            nat_type=peer.nat_type, hostname=peer.hostname))
        self.store.flush(zone.name)

    def renew(self, found: Found, now: float | None = None) -> Node:
        if found.node is None:
            raise Conflict("this node was not enrolled: it has no credential to renew")
        days = self.store.redis.hget(self.store.keys.zone(found.zone), KEY_EXPIRY)
        if not days:
            raise Conflict(f"zone {found.zone} has no key expiry")
        now = time.time() if now is None else now
        node = self.registry.update_node(found.zone, found.node, expires=now + float(days))
        self.store.redis.zadd(self.store.keys.expiring(found.zone), {node.key: node.expires})
        if found.peer is not None:
            # listings show the new expiry
            self.reregister(self.store.get_zone(found.zone), found.peer)
        return node

    # -- zone settings -----------------------------------------------------------------------

    def settings(self, zone: str) -> dict[str, object]:
        z = self.store.redis.hgetall(self.store.keys.zone(messages.zone_name(zone)))
        if "cidr" not in z:
            raise NotFound(f"zone {zone} does not exist")
        expiry = z.get(KEY_EXPIRY)
        return {"ZoneSecret": z.get("zone_secret") != "off",
                "AutoApprove": json.loads(z.get(AUTO_APPROVE) or "[]"),
                "KeyExpiryDays": round(float(expiry) / 86400, 3) if expiry else None}

    @staticmethod
    def auto_approve_ranges(network: cidrs.Network, ranges: object) -> list[str]:
        """Checked auto-approve ranges (canonical text), or InvalidInput."""
        return list(check_routes(network, ranges, "AutoApprove"))

    def set_auto_approve(self, zone: str, ranges: list[str]) -> None:
        z = self.store.get_zone(zone)
        checked = self.auto_approve_ranges(z.network, ranges)
        self.registry.zone_hset(zone, self.store.keys.zone(zone), {AUTO_APPROVE: json.dumps(checked)})
        for peer in self.store.peers(zone):          # pending ones now in range
            if peer.pending_prefixes:
                try:
                    self.reregister(z, peer)
                except Conflict as exc:              # held by another node: stays pending
                    log.info("node %s keeps its pending prefixes: %s", peer.name or peer.key, exc)

    @staticmethod
    def check_key_expiry(days: object) -> None:
        if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float))
                                 or not 60 / 86400 <= days <= 3650):
            raise InvalidInput("KeyExpiryDays must be a number of days, 1 minute to 10 years")

    def set_key_expiry(self, zone: str, days: float | None) -> None:
        self.check_key_expiry(days)
        self.registry.zone_hset(zone, self.store.keys.zone(zone),
                                {KEY_EXPIRY: "" if days is None else repr(float(days) * 86400)})

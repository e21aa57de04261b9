"""Every Redis key and channel name the project uses, built in one place.

Every key of one zone carries the zone as a hash tag (``ct:{zone-blue}:peers``) so
a zone's atomic scripts touch one slot on Redis Cluster.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

DEFAULT_PREFIX = "ct:"


def node_id(public_key: str) -> str:
    """A short, channel-safe id for a WireGuard public key."""
    return hashlib.sha256(public_key.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    # -- global ---------------------------------------------------------------
    @property
    def zones(self) -> str:
        """Set of zone names."""
        return f"{self.prefix}zones"

    @property
    def tower_private(self) -> str:
        """The tower's X25519 private key (admin only)."""
        return f"{self.prefix}tower:private"

    @property
    def tower_public(self) -> str:
        """The tower's X25519 public key (readable by agents)."""
        return f"{self.prefix}tower:public"

    def tower_worker(self, consumer: str) -> str:
        """A replica's request-worker heartbeat (expires when the worker stops beating)."""
        return f"{self.prefix}tower:worker:{consumer}"

    @property
    def tower_worker_pattern(self) -> str:
        """Glob matching every request-worker heartbeat."""
        return f"{self.prefix}tower:worker:*"

    @property
    def relays(self) -> str:
        """Hash: relay id -> relay record (JSON: region, host, port, public key, zones)."""
        return f"{self.prefix}relays"

    @property
    def relays_seen(self) -> str:
        """Sorted set: relay id scored by the unix time it last said it is alive."""
        return f"{self.prefix}relays:seen"

    def dashboard_session(self, digest: str) -> str:
        """A dashboard login (by the SHA-256 of its id), expiring with it."""
        return f"{self.prefix}dashboard:session:{digest}"

    # -- per zone -------------------------------------------------------------
    def _z(self, zone: str, name: str) -> str:
        return f"{self.prefix}{{{zone}}}:{name}"

    def zone(self, zone: str) -> str:
        """Hash: name, description, cidr, created."""
        return self._z(zone, "zone")

    def peers(self, zone: str) -> str:
        """Hash: public key -> peer record (JSON)."""
        return self._z(zone, "peers")

    def leases(self, zone: str) -> str:
        """Hash: address -> public key."""
        return self._z(zone, "leases")

    def prefixes(self, zone: str) -> str:
        """Hash: child prefix -> JSON [public key, first hex, last hex]."""
        return self._z(zone, "prefixes")

    def free(self, zone: str) -> str:
        """Set of released addresses below the cursor."""
        return self._z(zone, "free")

    def cursor(self, zone: str) -> str:
        """Counter: the highest host offset ever handed out."""
        return self._z(zone, "cursor")

    def rev(self, zone: str) -> str:
        """Counter: the zone revision, bumped by every peer change."""
        return self._z(zone, "rev")

    def policy(self, zone: str) -> str:
        """String: the zone's access policy, JSON ``{"rev": R, "policy": {...}}`` (R: the
        zone revision that set it); absent: no policy (everything allowed)."""
        return self._z(zone, "policy")

    def fwstate(self, zone: str) -> str:
        """Hash (tower only): public key -> the state of the node's policy rules as its
        last heartbeat said, JSON ``{"rev", "state", "error", "ts"}``."""
        return self._z(zone, "fwstate")

    def published(self, zone: str) -> str:
        """The highest revision already published on the update channel."""
        return self._z(zone, "published")

    def changes(self, zone: str) -> str:
        """Stream: bounded change log, entry id ``<rev>-1``, field ``c`` = change JSON."""
        return self._z(zone, "changes")

    def paths(self, zone: str) -> str:
        """Hash: public key -> that node's latest path report (JSON, with ``ts``)."""
        return self._z(zone, "paths")

    def seen(self, zone: str) -> str:
        """Sorted set: public key scored by last-seen unix time."""
        return self._z(zone, "seen")

    def applied(self, zone: str) -> str:
        """Sorted set: public key -> order (``order_score``) of its last applied request."""
        return self._z(zone, "applied")

    def requests(self, zone: str) -> str:
        """Stream: agent requests of this zone, read by the consumer group."""
        return self._z(zone, "requests")

    def nonce(self, zone: str, public_key: str, nonce: str) -> str:
        """Replay guard, expires after the clock-skew window."""
        return self._z(zone, f"nonce:{node_id(public_key)}:{nonce}")

    def zone_tower(self, zone: str) -> str:
        """The tower's X25519 public key, copied into the zone's slot: on a Redis
        Cluster an agent reads every key of its zone from one shard (docs/operations.md)."""
        return self._z(zone, "tower")

    def updates(self, zone: str) -> str:
        """Pub/sub channel: zone updates (revision + changes)."""
        return self._z(zone, "updates")

    def reply(self, zone: str, public_key: str = "", *, node: str = "") -> str:
        """Pub/sub channel: replies to one node (by public key, or by ``node`` id)."""
        return self._z(zone, f"reply:{node or node_id(public_key)}")

    # -- identity (issue 14): nodes publish, the tower's gate listens ------------
    def request_channel(self, zone: str, node: str) -> str:
        """Pub/sub channel: the requests of one node (node id); only it may publish."""
        return self._z(zone, f"req:{node}")

    def request_patterns(self, digits: str) -> list[str]:
        """Globs of every zone's request channels whose node id starts with one of
        ``digits`` (the gate's subscriptions are split by that first hex digit)."""
        return [f"{self.prefix}*:req:{digit}*" for digit in digits]

    def enroll_channel(self, zone: str, cred: str, node: str) -> str:
        """Pub/sub channel: a node's enrollment request, made with credential ``cred``
        (a join key id, or ``zone`` for the zone secret)."""
        return self._z(zone, f"enroll:{cred}:{node}")

    def enroll_pattern(self, zone: str, cred: str) -> str:
        return self._z(zone, f"enroll:{cred}:*")

    @property
    def enroll_patterns(self) -> str:
        """Glob of every enrollment channel of every zone."""
        return f"{self.prefix}*:enroll:*"

    def enrolled_channel(self, zone: str, cred: str, node: str) -> str:
        """Pub/sub channel: the answer to an enrollment request."""
        return self._z(zone, f"enrolled:{cred}:{node}")

    def enrolled_pattern(self, zone: str, cred: str) -> str:
        return self._z(zone, f"enrolled:{cred}:*")

    def auth(self, zone: str) -> str:
        """Hash (tower only): ``zone_secret_sha256``, ``zone_secret_at``."""
        return self._z(zone, "auth")

    def nodes(self, zone: str) -> str:
        """Hash (tower only): node id -> node record JSON (key, name, user, credential
        digest, tags, routes, approvals, expiry...)."""
        return self._z(zone, "nodes")

    def names(self, zone: str) -> str:
        """Hash: node name -> node id (unique names in a zone)."""
        return self._z(zone, "names")

    def joinkeys(self, zone: str) -> str:
        """Hash (tower only): join key id -> join key record JSON (digest, uses...)."""
        return self._z(zone, "joinkeys")

    def ephemeral(self, zone: str) -> str:
        """Sorted set: public key of an ephemeral node -> seconds offline before removal."""
        return self._z(zone, "ephemeral")

    def expiring(self, zone: str) -> str:
        """Sorted set: public key -> when its node credential expires (unix time)."""
        return self._z(zone, "expiring")

    def gone(self, zone: str, node: str) -> str:
        """String: why a removed node was removed (its tombstone; only it may read it)."""
        return self._z(zone, f"gone:{node}")

    def node_user(self, zone: str, node: str) -> str:
        """Redis ACL user of one node."""
        return f"{self.prefix}node:{zone}:{node}"

    def join_user(self, zone: str, key_id: str) -> str:
        """Redis ACL user of one join key."""
        return f"{self.prefix}join:{zone}:{key_id}"

    def reply_pattern(self, zone: str) -> str:
        """Glob matching every reply channel of one zone."""
        return self._z(zone, "reply:*")

    def zone_pattern(self, zone: str) -> str:
        """Glob matching every key of one zone."""
        return self._z(zone, "*")

    def credential_lock(self, zone: str) -> str:
        """Short-lived lock held while the tower changes a zone's agent user."""
        return self._z(zone, "credlock")

    def agent_user(self, zone: str) -> str:
        """Redis ACL user of a zone's agent secret (enrollment only)."""
        return f"{self.prefix}agent:{zone}"

    def user_zone(self, user: str) -> str | None:
        """The zone of an agent's Redis user (zone secret, node or join key), else None."""
        for kind, nested in (("agent:", False), ("node:", True), ("join:", True)):
            if user.startswith(self.prefix + kind):
                rest = user[len(self.prefix + kind):]
                return rest.rsplit(":", 1)[0] if nested else rest
        return None


REQUEST_GROUP = "controltower"

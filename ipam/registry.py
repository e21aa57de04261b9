"""The identity state of a zone in Redis: join keys, enrolled nodes and their names.

Tower only: nodes can read none of it (it holds credential digests). Every Redis user
the tower makes is derived from what is stored here (controltower/acl.py), so the users
can be re-applied after a Redis restart or failover, on every node of a cluster.

- ``ct:{z}:joinkeys``: key id -> JoinKey record (digest, expiry, uses, tags, routes...)
- ``ct:{z}:nodes``: node id -> Node record (public key, name, user, credential digest,
  tags, pre-approved and approved routes, ephemeral timeout, key expiry; ``removed``)
- ``ct:{z}:names``: name -> node id (unique names)
- ``ct:{z}:gone:<node id>``: a removed node's tombstone (why, when), readable by it
"""
from __future__ import annotations

import ipaddress
import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from redis import Redis
from redis.exceptions import WatchError

from wire import identity
from wire.errors import Conflict, Forbidden, InvalidInput, NotFound, Removed
from wire.keys import Keys, node_id

from . import cidr as cidrs
from .calls import Call
from .scripts import Scripts

log = logging.getLogger(__name__)

TOMBSTONE_SECONDS = 30 * 86400
MAX_JOIN_KEY_SECONDS = 365 * 86400
DEFAULT_JOIN_KEY_SECONDS = 86400
DEFAULT_EPHEMERAL_AFTER = 300.0
MIN_EPHEMERAL_AFTER = 5.0
MAX_TAGS = 32
MAX_ROUTES = 64
MAX_USES = 1_000_000


@dataclass(frozen=True)
class Node:
    """An enrolled node (its registry record)."""
    id: str
    key: str
    name: str
    user: str
    cred: str                       # SHA-256 of its Redis password
    enrolled: float
    join_key: str = ""
    expires: float | None = None
    tags: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()    # ranges its join key pre-approves
    approved: tuple[str, ...] = ()  # prefixes an operator approved
    ephemeral: float | None = None  # removed this long after its last heartbeat
    removed: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps({
            "key": self.key, "name": self.name, "user": self.user, "cred": self.cred,
            "enrolled": self.enrolled, "join_key": self.join_key,
            "expires": self.expires or False, "tags": list(self.tags),
            "routes": list(self.routes), "approved": list(self.approved),
            "ephemeral": self.ephemeral or False,
            **({"removed": self.removed} if self.removed else {})})


def parse_node(nid: str, raw: str) -> Node:
    data = json.loads(raw)

    def strings(name: str) -> tuple[str, ...]:
        value = data.get(name) or []          # an empty Lua table encodes as {}
        return tuple(str(v) for v in value) if isinstance(value, list) else ()
    return Node(id=nid, key=str(data["key"]), name=str(data.get("name") or ""),
                user=str(data["user"]), cred=str(data["cred"]),
                enrolled=float(data.get("enrolled") or 0), join_key=str(data.get("join_key") or ""),
                expires=float(data["expires"]) if data.get("expires") else None,
                tags=strings("tags"), routes=strings("routes"), approved=strings("approved"),
                ephemeral=float(data["ephemeral"]) if data.get("ephemeral") else None,
                removed=data.get("removed") or None)


@dataclass(frozen=True)
class JoinKeyRecord:
    id: str
    zone: str
    sha256: str
    created: float
    expires: float
    max_uses: int                    # 0: unlimited (reusable)
    uses: int = 0
    ephemeral: bool = False
    ephemeral_after: float = DEFAULT_EPHEMERAL_AFTER
    tags: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    description: str = ""
    revoked: float | None = None

    def state(self, now: float) -> str:
        if self.revoked:
            return "revoked"
        if self.expires <= now:
            return "expired"
        if self.max_uses and self.uses >= self.max_uses:
            return "used"
        return "valid"

    def to_json(self) -> str:
        return json.dumps({
            "sha256": self.sha256, "created": self.created, "expires": self.expires,
            "max_uses": self.max_uses, "uses": self.uses, "ephemeral": self.ephemeral,
            "ephemeral_after": self.ephemeral_after, "tags": list(self.tags),
            "routes": list(self.routes), "description": self.description,
            "revoked": self.revoked or False})


def parse_join_key(zone: str, key_id: str, raw: str) -> JoinKeyRecord:
    data = json.loads(raw)
    return JoinKeyRecord(
        id=key_id, zone=zone, sha256=str(data["sha256"]), created=float(data["created"]),
        expires=float(data["expires"]), max_uses=int(data.get("max_uses") or 0),
        uses=int(data.get("uses") or 0), ephemeral=bool(data.get("ephemeral")),
        ephemeral_after=float(data.get("ephemeral_after") or DEFAULT_EPHEMERAL_AFTER),
        tags=tuple(data.get("tags") or ()), routes=tuple(data.get("routes") or ()),
        description=str(data.get("description") or ""),
        revoked=float(data["revoked"]) if data.get("revoked") else None)


def check_tags(tags: Any) -> tuple[str, ...]:
    if not isinstance(tags, list) or len(tags) > MAX_TAGS:
        raise InvalidInput(f"tags must be a list of at most {MAX_TAGS} names")
    out = []
    for tag in tags:
        bare = tag[4:] if isinstance(tag, str) and tag.startswith("tag:") else tag
        out.append(identity.node_name(bare, "a tag"))
    return tuple(sorted(set(out)))


def check_routes(zone: cidrs.Network, routes: Any, what: str = "routes") -> tuple[str, ...]:
    if not isinstance(routes, list) or len(routes) > MAX_ROUTES \
            or not all(isinstance(r, str) for r in routes):
        raise InvalidInput(f"{what} must be a list of at most {MAX_ROUTES} prefixes")
    return tuple(str(p) for p in cidrs.child_prefixes(zone, routes))


# Enrollment refusals: the message the agent shows.
def _enroll_refusal(reply: list[Any], cred: str, zone: str) -> Exception:
    status = reply[0]
    what = "the zone secret" if cred == identity.ZONE_SECRET_ID else f"join key {cred}"
    if status == "nozone":
        return NotFound(f"zone {zone} does not exist")
    if status == "off":
        return Forbidden(f"zone {zone} does not accept its zone secret for new nodes; "
                         "enroll with a join key")
    if status in ("unknown", "revoked"):
        return Forbidden(f"{what} was revoked")
    if status == "expired":
        return Forbidden(f"{what} expired at {_iso(float(reply[1]))}")
    if status == "used":
        return Forbidden(f"{what} was used up ({reply[1]} of {reply[2]} uses)")
    if status == "removed":
        return Removed(f"this node was removed from zone {zone} ({reply[2]}, "
                         f"{_iso(float(reply[1]))}); enroll it with a join key made since")
    if status == "names":
        return InvalidInput("no free name of that form is left in the zone")
    return RuntimeError(f"unexpected enroll status {status!r}")


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class Registry:
    def __init__(self, client: Redis, keys: Keys, scripts: Scripts | None = None) -> None:
        self.redis = client
        self.keys = keys
        self.scripts = scripts or Scripts(client)

    # -- join keys ---------------------------------------------------------------------

    def create_join_key(self, zone: str, network: cidrs.Network, *,
                        expires_in: float = DEFAULT_JOIN_KEY_SECONDS, uses: int = 1,
                        reusable: bool = False, ephemeral: bool = False,
                        ephemeral_after: float = DEFAULT_EPHEMERAL_AFTER,
                        tags: Any = (), routes: Any = (), description: str = "",
                        now: float | None = None) -> tuple[identity.JoinKey, JoinKeyRecord]:
        """A new join key (its secret is in the JoinKey only: shown once)."""
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) \
                or not 1 <= expires_in <= MAX_JOIN_KEY_SECONDS:
            raise InvalidInput(f"expiry must be 1 s to {MAX_JOIN_KEY_SECONDS // 86400} days")
        if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_USES:
            raise InvalidInput(f"uses must be a whole number from 1 to {MAX_USES:,}")
        if isinstance(ephemeral_after, bool) or not isinstance(ephemeral_after, (int, float)) \
                or not MIN_EPHEMERAL_AFTER <= ephemeral_after <= MAX_JOIN_KEY_SECONDS:
            raise InvalidInput(f"ephemeral timeout must be {MIN_EPHEMERAL_AFTER:.0f} s or more")
        if not isinstance(description, str) or len(description) > 256:
            raise InvalidInput("description must be a string of at most 256 characters")
        now = time.time() if now is None else now
        key = identity.new_join_key(zone)
        record = JoinKeyRecord(
            id=key.key_id, zone=zone, sha256=identity.digest(key.secret), created=now,
            expires=now + float(expires_in), max_uses=0 if reusable else uses,
            ephemeral=bool(ephemeral), ephemeral_after=float(ephemeral_after),
            tags=check_tags(list(tags)), routes=check_routes(network, list(routes)),
            description=description)
        if self.zone_hset(zone, self.keys.joinkeys(zone), {key.key_id: record.to_json()},
                          nx=True) < 0:
            raise RuntimeError("join key id collision")     # 48 random bits: never
        return key, record

    def join_keys(self, zone: str) -> list[JoinKeyRecord]:
        found = self.redis.hgetall(self.keys.joinkeys(zone))
        return sorted((parse_join_key(zone, kid, raw) for kid, raw in found.items()),
                      key=lambda r: r.created)

    def join_key(self, zone: str, key_id: str) -> JoinKeyRecord:
        raw = self.redis.hget(self.keys.joinkeys(zone), identity.key_id(key_id))
        if raw is None:
            raise NotFound(f"join key {key_id} does not exist in zone {zone}")
        return parse_join_key(zone, key_id, raw)

    def revoke_join_key(self, zone: str, key_id: str, now: float | None = None) -> JoinKeyRecord:
        record = self.join_key(zone, key_id)
        if not record.revoked:
            data = json.loads(record.to_json())
            data["revoked"] = time.time() if now is None else now
            self.zone_hset(zone, self.keys.joinkeys(zone), {key_id: json.dumps(data)})
            record = parse_join_key(zone, key_id, json.dumps(data))
        return record

    def zone_hset(self, zone: str, key: str, fields: dict[str, str], nx: bool = False) -> int:
        """Write ``fields`` into the hash ``key`` of ``zone`` only while the zone exists
        (``zone_hset.lua``; an empty value deletes the field): 1, or -1 when ``nx`` and a
        field exists. NotFound when the zone does not exist (a deletion came first)."""
        done = self.scripts.zone_hset(
            keys=[self.keys.zone(zone), key],
            args=["setnx" if nx else "set", *(x for pair in fields.items() for x in pair)])
        if done == 0:
            raise NotFound(f"zone {zone} does not exist")
        return int(done)

    def forget_join_key(self, zone: str, key_id: str) -> None:
        self.redis.hdel(self.keys.joinkeys(zone), key_id)

    # -- nodes ---------------------------------------------------------------------------

    def enroll_call(self, zone: str, cred: str, public_key: str, cred_sha256: str,
                    name: str, now: float | None = None) -> Call:
        """The enroll script; its result is the new Node (refusals: messages above)."""
        nid = node_id(public_key)
        k = self.keys
        user = k.node_user(zone, nid)

        def decode(reply: list[Any]) -> Node:
            if reply[0] != "ok":
                raise _enroll_refusal(reply, cred, zone)
            return parse_node(nid, reply[2])
        return Call.script(
            self.scripts.enroll,
            [k.zone(zone), k.auth(zone), k.joinkeys(zone), k.nodes(zone), k.names(zone),
             k.gone(zone, nid), k.ephemeral(zone), k.expiring(zone)],
            [cred, nid, public_key, cred_sha256, name, time.time() if now is None else now,
             user], decode)

    def nodes(self, zone: str) -> dict[str, Node]:
        """Every node record of a zone (removed ones too), by node id."""
        return {nid: parse_node(nid, raw)
                for nid, raw in self.redis.hgetall(self.keys.nodes(zone)).items()}

    def node(self, zone: str, nid: str) -> Node | None:
        raw = self.redis.hget(self.keys.nodes(zone), nid)
        return None if raw is None else parse_node(nid, raw)

    def node_by_name(self, zone: str, name: str) -> Node | None:
        nid = self.redis.hget(self.keys.names(zone), name)
        return None if nid is None else self.node(zone, nid)

    def remove_node(self, zone: str, nid: str, reason: str, sticky: bool,
                    now: float | None = None) -> Node | None:
        """Mark a node removed and write its tombstone; None if it was never enrolled."""
        tomb = json.dumps({"reason": reason, "at": time.time() if now is None else now,
                           "sticky": sticky})
        k = self.keys
        reply = self.scripts.remove_node(keys=[k.nodes(zone), k.names(zone), k.gone(zone, nid),
                                               k.ephemeral(zone), k.expiring(zone)],
                                         args=[nid, tomb, TOMBSTONE_SECONDS])
        return parse_node(nid, reply[1]) if reply[0] == "ok" else None

    def due(self, zone: str, now: float) -> list[tuple[str, str]]:
        """(public key, reason) of nodes to remove now: ephemeral ones offline longer than
        their timeout ('ephemeral'), those whose credential expired ('key-expired')."""
        k = self.keys
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(k.ephemeral(zone), 0, -1, withscores=True)
            pipe.zrangebyscore(k.expiring(zone), "-inf", repr(now))
            ephemeral, expired = pipe.execute()
        out = [(key, "key-expired") for key in expired]
        if ephemeral:
            seen = self.redis.zmscore(k.seen(zone), [key for key, _ in ephemeral])
            for (key, after), last in zip(ephemeral, seen):
                if key not in expired and last is not None and last < now - after:
                    out.append((key, "ephemeral"))
        return out

    def undo_enroll(self, zone: str, cred: str, public_key: str) -> bool:
        """Take back an enrollment whose Redis user could not be made: the node's record,
        name and timers go, and a join key gets its use back. False: nothing to undo."""
        k = self.keys
        return bool(self.scripts.unenroll(
            keys=[k.joinkeys(zone), k.nodes(zone), k.names(zone), k.ephemeral(zone),
                  k.expiring(zone)],
            args=[cred, node_id(public_key), public_key]))

    def update_node(self, zone: str, node: Node, **changes: Any) -> Node:
        """Write a node's record with ``changes`` if it is still as read (else Conflict)."""
        new = replace(node, **changes)
        key = self.keys.nodes(zone)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.watch(key)
            raw = pipe.hget(key, node.id)
            if raw is None or parse_node(node.id, raw) != node:
                raise Conflict(f"node {node.name or node.id} changed meanwhile; try again")
            pipe.multi()
            pipe.hset(key, node.id, new.to_json())
            try:
                pipe.execute()
            except WatchError:
                raise Conflict(f"node {node.name or node.id} changed meanwhile; try again") from None
        return new


def approved_split(wanted: list[str], node: Node | None,
                   auto_approve: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Child prefixes a node announces split into (approved, pending): approved when an
    operator approved it, or it lies in its join key's routes or the zone's auto-approve
    ranges. Without a node record (a tower that does not manage identities) every
    prefix is approved, as before."""
    if node is None:
        return list(wanted), []
    ranges = [ipaddress.ip_network(r) for r in (*node.routes, *auto_approve)]
    approved, pending = [], []
    for text in wanted:
        net = ipaddress.ip_network(text)
        if text in node.approved or cidrs.within(net, ranges):
            approved.append(text)
        else:
            pending.append(text)
    return approved, pending




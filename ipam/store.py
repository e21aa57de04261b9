"""The zone store: zones, leases, child prefixes and peers in Redis.

Every write that must stay consistent runs as one Lua script (see ipam/lua/), so
several ControlTower replicas on one Redis never hand one address or one prefix to
two nodes and never leave state half-written. The scripts return data; the messages
the tower sends (peer records, changes, zone updates) are built in wire/messages.py.

The writes the request worker makes are ``Call``s (ipam/calls.py: ``register_call``,
``heartbeat_call``, ``endpoint_call``, ``remove_call``, ``flush_call``...): the worker
sends them in its own pipelines and settles their replies, purely, into a result, a
refusal (the one table: ipam/refusals.py) or the next Call, when the operation needs
another round trip. The methods of the same names without ``_call`` run a call to its
end, one round trip per step (``run``): for the REST API, tools and tests.

Requests from the request stream carry their *order* (their stream entry id): a request
older than the last one applied for the same key (one handled again after a replica died
before acknowledging it) changes nothing (see ``order_score``).
"""
from __future__ import annotations

import ipaddress
import json
import logging
import time
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Callable

from redis import Redis

from wire import messages
from wire import snapshot as snapshots
from wire.errors import Conflict, InvalidInput, NotFound
from wire.keys import REQUEST_GROUP, Keys, node_id
from wire.messages import Peer
from wire.redisconn import is_cluster, publish_command

from . import cidr as cidrs
from .calls import MAX_STEPS, Call, queue, settle
from .refusals import refusal
from .scripts import Scripts

log = logging.getLogger(__name__)

DEFAULT_ZONE = "default"
DEFAULT_CIDR = "10.200.0.0/20"
DEFAULT_DESCRIPTION = "Default zone"
CHANGE_LOG_LENGTH = 10000
MAX_DESCRIPTION = 256
AUTO_APPROVE = "auto_approve"     # zone hash field: JSON list of prefixes approved for anyone
KEY_EXPIRY = "key_expiry"         # zone hash field: seconds a node credential lasts
MAX_CHANGES = 1000           # changes per zone update message
PENDING_MESSAGES = 10        # update messages' worth of changes read at once
REGISTER_ATTEMPTS = 64       # candidates (IPv6) or sweeps of leased addresses (IPv4)
ENDPOINT_ATTEMPTS = 16       # compare-and-sets of an endpoint update
PUBLISH_ATTEMPTS = 64        # publications overtaken by another replica's


@dataclass(frozen=True)
class Zone:
    name: str
    description: str
    cidr: str
    created: float

    @cached_property
    def network(self) -> cidrs.Network:
        return ipaddress.ip_network(self.cidr)


@dataclass(frozen=True)
class Assignment:
    address: str
    prefix_len: int
    cidr: str
    rev: int


@dataclass(frozen=True)
class Guard:
    """The replay guard of a request from the request stream, checked by the script
    that acts on it: ``key`` (the request's nonce key) keeps ``entry_id`` (the request's
    stream entry id) for ``ttl`` seconds; another entry with the same nonce is refused
    as a replay, the same entry handled again is not."""
    key: str
    entry_id: str
    ttl: int


def order_score(entry_id: str) -> str:
    """A request stream entry id ``<ms>-<seq>`` as one exactly comparable number: the
    milliseconds plus the sequence number in 1/4096ths (capped there, which only makes
    two requests of one key within one millisecond count as simultaneous)."""
    ms, _, seq = entry_id.partition("-")
    return repr(int(ms) + min(int(seq or 0), 4095) / 4096)


def _score(order: str | None) -> str:
    return "" if order is None else order_score(order)


@dataclass(frozen=True)
class Snapshot:
    zone: Zone
    rev: int
    peers: dict[str, Peer]


class ZoneStore:
    def __init__(self, client: Redis, keys: Keys | None = None, *,
                 expiry: float = 86400.0, change_log_length: int = CHANGE_LOG_LENGTH) -> None:
        self.redis = client
        self.keys = keys or Keys()
        self.expiry = expiry
        self.change_log_length = change_log_length
        self.scripts = Scripts(client)
        # On a Redis Cluster the zone updates travel on sharded pub/sub (SPUBLISH).
        self.sharded = is_cluster(client)
        self.publish_command = publish_command(self.sharded)
        self._zone_cache: dict[str, Zone] = {}

    # -- zones ---------------------------------------------------------------------

    def create_zone(self, name: str, cidr: str, description: str = "",
                    auth: dict[str, str] | None = None) -> Zone:
        """``auth``: the fields of the zone's auth hash (its zone secret's digest), written
        with the zone."""
        name = messages.zone_name(name)
        network = cidrs.zone_network(messages.network(cidr))
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise InvalidInput(f"description must be a string of at most {MAX_DESCRIPTION} characters")
        zone = Zone(name, description, str(network), time.time())
        k = self.keys
        zone_keys = [k.zone(name), k.requests(name), k.auth(name), k.joinkeys(name),
                     k.nodes(name), k.names(name), k.ephemeral(name), k.expiring(name),
                     k.paths(name), k.fwstate(name), k.policy(name), k.zone_tower(name)]
        # The tower key's copy is written with the zone: an agent on a Redis Cluster
        # reads it in the zone's slot, and a deletion racing the creation takes it too.
        args = [name, description, zone.cidr, zone.created, REQUEST_GROUP,
                self.redis.get(k.tower_public) or "",
                *(x for pair in (auth or {}).items() for x in pair)]
        if self.sharded:
            # The index and the zone are in two slots: the index first. A name in the
            # index without its zone hash is skipped by list_zones (docs/operations.md).
            self.redis.sadd(k.zones, name)
            created = self.scripts.create_zone(keys=zone_keys, args=args)
        else:
            with self.redis.pipeline(transaction=True) as pipe:
                self.scripts.create_zone(keys=zone_keys, args=args, client=pipe)
                pipe.sadd(k.zones, name)
                created, _ = pipe.execute()
        if created[0] != "ok":
            raise refusal(created[0], zone=name)
        log.info("zone %s created with CIDR %s", name, zone.cidr)
        return zone

    def copy_tower_key(self, zones: list[str], public: str | None = None) -> None:
        """Copy the tower's public key into each zone's slot (``Keys.zone_tower``): an
        agent on a Redis Cluster reads every key of its zone from one shard. Only into
        zones that exist (``copy_tower.lua``: a zone deleted meanwhile keeps no copy). No
        key yet (no tower has started): the tower copies it into every zone when it does."""
        public = public or self.redis.get(self.keys.tower_public)
        if not public:
            return
        script = self.scripts.copy_tower
        for start in range(0, len(zones), 1000):
            self.run(Call(tuple(("EVALSHA", script.sha, 2, self.keys.zone(zone),
                                 self.keys.zone_tower(zone), public)
                                for zone in zones[start:start + 1000]),
                          lambda replies: None, (script,)))

    def ensure_default_zone(self) -> None:
        try:
            self.create_zone(DEFAULT_ZONE, DEFAULT_CIDR, DEFAULT_DESCRIPTION)
        except Conflict:
            pass

    def get_zone(self, name: str) -> Zone:
        data = self.redis.hgetall(self.keys.zone(messages.zone_name(name)))
        if not _complete(data):
            raise NotFound(f"zone {name} does not exist")
        return _zone(data)

    def cached_zone(self, name: str) -> Zone:
        """A zone's immutable settings, cached (``register``)."""
        zone = self._zone_cache.get(name)
        if zone is None:
            zone = self._zone_cache[name] = self.get_zone(name)
        return zone

    def zone_names(self) -> list[str]:
        return sorted(self.redis.smembers(self.keys.zones))

    def list_zones(self, names: list[str] | None = None) -> list[Zone]:
        """Every zone, or those of ``names`` that exist (one round trip for them)."""
        names = self.zone_names() if names is None else names
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.zone(name))
            found = pipe.execute()
        return [_zone(data) for data in found if _complete(data)]

    def delete_zone(self, name: str, force: bool = False) -> None:
        name = messages.zone_name(name)
        self.run(self._delete_zone_call(name, force, 0))
        self.redis.srem(self.keys.zones, name)
        if self.redis.hexists(self.keys.zone(name), "cidr"):
            self.redis.sadd(self.keys.zones, name)  # created again meanwhile: listed
        self._zone_cache.pop(name, None)
        log.info("zone %s deleted", name)

    def _delete_zone_call(self, name: str, force: bool, attempt: int) -> Call:
        """Read the zone's revision; then delete the zone and publish its last update
        (for that revision plus one) in one script, unless the revision moved."""
        k = self.keys
        zone_keys = [k.zone(name), k.peers(name), k.rev(name), k.leases(name), k.prefixes(name),
                     k.free(name), k.cursor(name), k.published(name), k.changes(name),
                     k.seen(name), k.applied(name), k.requests(name), k.auth(name),
                     k.nodes(name), k.names(name), k.joinkeys(name), k.ephemeral(name),
                     k.expiring(name), k.paths(name), k.policy(name), k.fwstate(name),
                     k.zone_tower(name)]

        def deleted(reply: list[Any]) -> Call | None:
            if reply[0] == "ok":
                return None
            if reply[0] == "moved" and attempt + 1 < PUBLISH_ATTEMPTS:
                return self._delete_zone_call(name, force, attempt + 1)
            raise refusal("contended" if reply[0] == "moved" else reply[0], zone=name,
                          nodes=_at(reply, 1), what=f"the revision of zone {name}")

        def read(replies: list[Any]) -> Call:
            rev = int(replies[0] or 0)
            return Call.script(self.scripts.delete_zone, zone_keys,
                               [int(force), k.updates(name), rev,
                                messages.zone_deleted(name, rev + 1), self.publish_command],
                               deleted)
        return Call((("GET", k.rev(name)),), read)

    # -- registration ------------------------------------------------------------------

    def register(self, zone_name: str, key: str, **kwargs: Any) -> Assignment:
        """Register a node; see ``register_call`` for the arguments."""
        try:
            return self.run(self.register_call(self.cached_zone(zone_name), key, **kwargs))
        except NotFound:
            self._zone_cache.pop(zone_name, None)
            raise

    def register_call(self, zone: Zone, key: str, *, listen_port: int, session: str,
                      endpoint: str | None = None, request_ip: str | None = None,
                      child_prefixes: list[str] | tuple[str, ...] = (),
                      nat_type: str | None = None, hostname: str | None = None,
                      now: float | None = None, order: str | None = None,
                      guard: Guard | None = None, name: str | None = None,
                      tags: tuple[str, ...] = (), pending: tuple[str, ...] = (),
                      key_expiry: float | None = None) -> Call:
        """The register script call; its result is an Assignment. ``order``: the request's
        stream entry id (None: not from the request stream, no order check); ``guard``:
        its replay guard. ``child_prefixes`` are the approved ones (routed by every
        peer), ``pending`` the others (shown, routed by nobody); ``name`` and ``tags``
        come from the node's enrollment. Raises InvalidInput for a requested address or
        child prefix the zone cannot have."""
        network = zone.network
        requested = cidrs.host_address(network, request_ip) if request_ip else ""
        prefixes = cidrs.child_prefixes(network, child_prefixes)
        wanted = json.dumps([[str(p), *cidrs.span(p)] for p in prefixes])
        before, after = messages.peer_record_parts(Peer(
            key=key, address="", endpoint=endpoint,
            child_prefixes=tuple(str(p) for p in prefixes), listen_port=listen_port,
            nat_type=nat_type, session=session, hostname=hostname, name=name,
            tags=tuple(tags), pending_prefixes=tuple(pending), key_expiry=key_expiry))
        now = time.time() if now is None else now
        # An IPv4 zone's script takes new addresses itself; an IPv6 zone's asks for a
        # candidate ('need'), computed by the candidate script and here (RFC 5952).
        base = str(int(network.network_address)) if network.version == 4 else ""
        k = self.keys
        keys = [k.zone(zone.name), k.peers(zone.name), k.leases(zone.name), k.prefixes(zone.name),
                k.free(zone.name), k.rev(zone.name), k.changes(zone.name), k.seen(zone.name),
                k.cursor(zone.name), k.applied(zone.name), k.gone(zone.name, node_id(key)),
                *_keys(guard)]
        args = [key, before, after, now, self.expiry, requested, "", wanted,
                self.change_log_length, _score(order), base, cidrs.pool_size(network),
                repr(zone.created), *_args(guard)]

        def again(fresh: Zone) -> Call:
            """The same registration in a zone deleted and created again meanwhile."""
            return self.register_call(fresh, key, listen_port=listen_port, session=session,
                                      endpoint=endpoint, request_ip=request_ip,
                                      child_prefixes=child_prefixes, nat_type=nat_type,
                                      hostname=hostname, now=now, order=order, guard=guard,
                                      name=name, tags=tags, pending=pending,
                                      key_expiry=key_expiry)
        return self._register_step(zone, keys, args, order, 0, again)

    def _register_step(self, zone: Zone, keys: list[str], args: list[Any], order: str | None,
                       attempt: int, again: Callable[[Zone], Call]) -> Call:
        key, now, requested, ipv4 = args[0], args[3], args[5], bool(args[10])

        def decode(reply: list[Any]) -> Assignment | Call:
            status = reply[0]
            if status == "changed":
                # Our settings of the zone are those of a zone of the same name deleted
                # since: read them again (its CIDR may differ) and register once more.
                self._zone_cache.pop(zone.name, None)
                if attempt + 1 >= REGISTER_ATTEMPTS:
                    raise refusal("nozone", zone=zone.name)
                return self._zone_call(zone.name, again)
            if status == "ok":
                return Assignment(reply[1], zone.network.prefixlen, zone.cidr, int(reply[2]))
            if status == "stale":
                log.info("ignored a register of %s in zone %s: its request (%s) is older "
                         "than one applied since", key, zone.name, order)
                if not reply[1]:
                    raise refusal("overtaken")
                return Assignment(reply[1], zone.network.prefixlen, zone.cidr, int(reply[2]))
            if status in ("need", "retry"):
                # IPv4: found only leased addresses, tries on; IPv6: wants a (new) candidate.
                if attempt + 1 >= REGISTER_ATTEMPTS:
                    raise refusal("exhausted", zone=zone.name)
                if ipv4:
                    return self._register_step(zone, keys, args, order, attempt + 1, again)
                return self._candidate_call(zone, lambda address: self._register_step(
                    zone, keys, [*args[:6], address, *args[7:]], order, attempt + 1, again))
            if status == "held":
                raise refusal(status, requested=requested,
                              age=max(0.0, now - float(reply[2])))
            if status == "prefix":
                raise refusal(status, wanted=reply[1], held=reply[2])
            raise refusal(status, zone=zone.name, cidr=zone.cidr)
        return Call.script(self.scripts.register, keys, args, decode)

    def enrolled_register_call(self, zone: Zone, key: str, *, child_prefixes: Any = (),
                               **kwargs: Any) -> Call:
        """``register_call`` for a node whose identity the tower manages: one read first
        (its registry record, the zone's auto-approve ranges), then the register with
        its name, tags and the announced prefixes split into approved and pending
        (ipam/registry.py ``approved_split``). A node without a record (a tower that does
        not manage identities, or a test) registers as before, every prefix approved."""
        from .registry import approved_split, parse_node
        nid = node_id(key)
        wanted = [str(p) for p in cidrs.child_prefixes(zone.network, child_prefixes)]

        def read(replies: list[Any]) -> Call:
            raw, auto = replies
            node = parse_node(nid, raw) if raw else None
            ranges = tuple(json.loads(auto)) if auto else ()
            approved, pending = approved_split(wanted, node, ranges)
            extra = {} if node is None else {"name": node.name, "tags": node.tags,
                                             "key_expiry": node.expires}
            return self.register_call(zone, key, child_prefixes=approved, pending=tuple(pending),
                                      **extra, **kwargs)
        return Call((("HGET", self.keys.nodes(zone.name), nid),
                     ("HGET", self.keys.zone(zone.name), AUTO_APPROVE)), read)

    def _zone_call(self, name: str, then: Callable[[Zone], Call]) -> Call:
        """Read a zone's settings; the result is ``then(zone)`` (NotFound when gone)."""
        def decode(replies: list[Any]) -> Call:
            data = replies[0]
            if not _complete(data):
                raise refusal("nozone", zone=name)
            zone = self._zone_cache[name] = _zone(data)
            return then(zone)
        return Call((("HGETALL", self.keys.zone(name)),), decode)

    def _candidate_call(self, zone: Zone, then: Callable[[str], Call]) -> Call:
        """A new address candidate of an IPv6 zone: a released address, else the next
        offset; its result is ``then(address)``."""
        network = zone.network

        def decode(reply: list[Any]) -> Call:
            if reply[0] == "a":
                return then(reply[1])
            if reply[0] == "o":
                return then(cidrs.address_at(network, int(reply[1])))
            raise refusal(reply[0], zone=zone.name, cidr=zone.cidr)
        return Call.script(self.scripts.candidate,
                           [self.keys.free(zone.name), self.keys.cursor(zone.name)],
                           [cidrs.pool_size(network)], decode)

    def heartbeat(self, zone: str, key: str, session: str, now: float | None = None) -> None:
        self.run(self.heartbeat_call(zone, key, session, now))

    def heartbeat_call(self, zone: str, key: str, session: str, now: float | None = None,
                       guard: Guard | None = None, report: dict | None = None,
                       policy: dict[str, Any] | None = None) -> Call:
        """Its result is None. With ``report`` (the node's path report) and ``policy``
        (the state of its policy rules) the next Call stores them in the zone's paths
        and fwstate hashes, stamped with ``ts``."""
        stamp = time.time() if now is None else now

        def decode(reply: list[Any]) -> Call | None:
            if reply[0] != "ok":
                raise refusal(reply[0], peer="this node", zone=zone)
            writes = []
            if report:
                text = json.dumps({**report, "ts": round(stamp, 1)}, separators=(",", ":"))
                writes.append(("HSET", self.keys.paths(zone), key, text))
            if policy:
                text = json.dumps({**policy, "ts": round(stamp, 1)}, separators=(",", ":"))
                writes.append(("HSET", self.keys.fwstate(zone), key, text))
            return Call(tuple(writes), lambda _: None) if writes else None
        return Call.script(self.scripts.heartbeat,
                           [self.keys.peers(zone), self.keys.seen(zone), *_keys(guard)],
                           [key, session, stamp, *_args(guard)],
                           decode)

    def update_endpoint(self, zone: str, key: str, session: str, endpoint: str,
                        nat_type: str | None, now: float | None = None,
                        order: str | None = None) -> int:
        """Set a node's endpoint; returns the revision."""
        return self.run(self.endpoint_call(zone, key, session, endpoint, nat_type, now, order))

    def endpoint_call(self, zone: str, key: str, session: str, endpoint: str,
                      nat_type: str | None, now: float | None = None,
                      order: str | None = None, guard: Guard | None = None,
                      attempt: int = 0, relay: str | None | bool = False) -> Call:
        """Check the replay guard and read the node's record; its result is the revision
        (a stale request changes nothing) or the compare-and-set Call that writes the
        record with the new endpoint if it is still the one read (else reads again)."""
        k = self.keys
        score = _score(order)
        now = time.time() if now is None else now

        def written(reply: list[Any]) -> int | Call:
            if reply[0] in ("ok", "stale"):
                return int(reply[1])
            if reply[0] == "retry":
                if attempt + 1 >= ENDPOINT_ATTEMPTS:
                    raise refusal("contended", what="the peer record")
                return self.endpoint_call(zone, key, session, endpoint, nat_type, now, order,
                                          None, attempt + 1, relay)
            raise refusal(reply[0], peer="this node", zone=zone)

        def read(replies: list[Any]) -> int | Call:
            if guard is not None:
                holder, *replies = replies
                if holder is not None and holder != guard.entry_id:
                    raise refusal("replayed")
            current, last, rev = replies
            if score and last is not None and float(last) > float(score):
                log.info("ignored an endpoint update of %s in zone %s: its request (%s) is "
                         "older than one applied since", key, zone, order)
                return int(rev or 0)
            if current is None:
                raise refusal("missing", peer="this node", zone=zone)
            peer = messages.parse_peer(current)
            if peer.session != session:
                raise refusal("superseded")
            changed = replace(peer, endpoint=endpoint, nat_type=nat_type)
            if relay is not False:           # False: the request did not say
                changed = replace(changed, relay=relay)
            record = messages.peer_record(changed)
            return Call.script(
                self.scripts.replace_peer,
                [k.peers(zone), k.rev(zone), k.changes(zone), k.seen(zone), k.applied(zone)],
                [key, current, record, now, self.change_log_length, score], written)
        guarded = () if guard is None else (
            ("SET", guard.key, guard.entry_id, "NX", "GET", "EX", guard.ttl, {"get": True}),)
        return Call((*guarded, ("HGET", k.peers(zone), key), ("ZSCORE", k.applied(zone), key),
                     ("GET", k.rev(zone))), read)

    def remove_peer(self, zone: str, key: str, reason: str, session: str = "",
                    seen_before: float | None = None, order: str | None = None) -> int | None:
        """Remove a node; returns the new revision, or None when it was not removed."""
        return self.run(self.remove_call(zone, key, reason, session, seen_before, order))

    def remove_call(self, zone: str, key: str, reason: str, session: str = "",
                    seen_before: float | None = None, order: str | None = None,
                    guard: Guard | None = None) -> Call:
        """The remove script call; its result is the new revision (the current one for a
        stale request), or None when the node was not removed (``seen_before``)."""
        k = self.keys
        keys = [k.peers(zone), k.leases(zone), k.prefixes(zone), k.free(zone), k.rev(zone),
                k.changes(zone), k.seen(zone), k.applied(zone), k.fwstate(zone), *_keys(guard)]
        args = [key, reason, session, "" if seen_before is None else seen_before,
                self.change_log_length, _score(order), *_args(guard)]

        def decode(reply: list[Any]) -> int | None:
            if reply[0] in ("ok", "stale"):
                return int(reply[1])
            if reply[0] == "alive":
                return None
            raise refusal(reply[0], peer=f"peer {key}", zone=zone)
        return Call.script(self.scripts.remove_peer, keys, args, decode)

    def expire(self, zone: str, now: float | None = None) -> list[str]:
        """Remove nodes silent for longer than the expiry; returns their keys."""
        cutoff = self.expiry_cutoff(now)
        removed = []
        for key in self.run(self.silent_call(zone, cutoff)):
            try:
                if self.remove_peer(zone, key, "expired", seen_before=cutoff) is not None:
                    removed.append(key)
            except NotFound:
                pass
        return removed

    def expiry_cutoff(self, now: float | None = None) -> float:
        """Nodes last seen before this (unix time) have expired."""
        return (time.time() if now is None else now) - self.expiry

    def silent_call(self, zone: str, cutoff: float) -> Call:
        """Its result: the keys of the zone's nodes last seen before ``cutoff``; remove
        each with ``remove_call(..., "expired", seen_before=cutoff)``."""
        return Call((("ZRANGEBYSCORE", self.keys.seen(zone), "-inf", f"({cutoff!r}"),),
                    lambda replies: list(replies[0]))

    def forget_orders(self, zones: list[str], before: float) -> int:
        """Drop the request order of keys whose last applied request came before
        ``before`` (unix time), in every zone given (one round trip): a request that old
        is refused for its timestamp anyway. Returns how many were dropped."""
        with self.redis.pipeline(transaction=False) as pipe:
            for zone in zones:
                pipe.zremrangebyscore(self.keys.applied(zone), "-inf", f"({before * 1000!r}")
            return sum(pipe.execute())

    # -- publishing ------------------------------------------------------------------------

    def flush(self, zone: str, max_changes: int = MAX_CHANGES) -> int:
        """Publish unpublished changes of a zone; returns the number of messages."""
        return self.run(self.flush_call(zone, max_changes))

    def flush_call(self, zone: str, max_changes: int = MAX_CHANGES, published: int = 0,
                   attempt: int = 0) -> Call:
        """Read the zone's unpublished changes. Its result is ``published`` (the number
        of messages published so far) when there are none, else the Call that publishes
        them (``publish.lua``: only if nothing was published since this read), whose
        result is the number of messages, or this read again (overtaken by another
        replica, or more changes than one read takes)."""
        k = self.keys
        limit = max_changes * PENDING_MESSAGES

        def read(reply: list[Any]) -> int | Call:
            since, entries = int(reply[0]), reply[1]
            if not entries:
                return published
            return self._publish_call(zone, since, entries, max_changes, published, attempt,
                                      more=len(entries) >= limit)
        return Call.script(self.scripts.pending, [k.changes(zone), k.published(zone)],
                           [limit], read)

    def _publish_call(self, zone: str, since: int, entries: list[Any], max_changes: int,
                      published: int, attempt: int, more: bool) -> Call:
        def sent(reply: list[Any]) -> int | Call:
            if reply[0] == "ok":
                count = published + int(reply[1])
                return self.flush_call(zone, max_changes, count) if more else count
            if reply[0] == "moved" and attempt + 1 < PUBLISH_ATTEMPTS:
                return self.flush_call(zone, max_changes, published, attempt + 1)
            raise refusal("contended" if reply[0] == "moved" else reply[0],
                          what=f"the published revision of zone {zone}")
        args: list[Any] = [self.keys.updates(zone), since, self.publish_command]
        for rev, message in updates(zone, entries, max_changes):
            args += [rev, message]
        return Call.script(self.scripts.publish, [self.keys.published(zone)], args, sent)

    # -- running calls ---------------------------------------------------------------------

    def run(self, call: Call) -> Any:
        """Run a call to its end, one round trip per step; returns its result or raises
        its refusal."""
        for _ in range(MAX_STEPS):
            with self.redis.pipeline(transaction=False) as pipe:
                queue(pipe, call)
                outcome = settle(call, pipe.execute(raise_on_error=False))
            if isinstance(outcome, Exception):
                raise outcome
            if not isinstance(outcome, Call):
                return outcome
            call = outcome
        raise RuntimeError(f"a store operation took more than {MAX_STEPS} steps")

    # -- reads ---------------------------------------------------------------------------

    def snapshot(self, zone: str) -> Snapshot:
        read = snapshots.Read(zone)
        with self.redis.pipeline(transaction=True) as pipe:
            snapshots.queue(pipe, snapshots.commands(self.keys, read))
            found = snapshots.parse(read, pipe.execute())
        data = {name: value for name, value in found.fields.items() if value is not None}
        if not _complete(data):
            raise NotFound(f"zone {zone} does not exist")
        return Snapshot(_zone(data), found.rev, snapshots.peers(found.records))

    def peers(self, zone: str) -> list[Peer]:
        return [messages.parse_peer(r) for r in self.redis.hvals(self.keys.peers(zone))]

    def find_peer(self, key: str) -> tuple[str, Peer]:
        names = self.zone_names()
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hget(self.keys.peers(name), key)
            found = pipe.execute()
        for name, record in zip(names, found):
            if record is not None:
                return name, messages.parse_peer(record)
        raise NotFound(f"peer {key} does not exist")

    def leases(self, zone: str) -> dict[str, str]:
        self.get_zone(zone)
        return self.redis.hgetall(self.keys.leases(zone))

    def last_seen(self, zone: str) -> dict[str, float]:
        return {key: score for key, score in
                self.redis.zrange(self.keys.seen(zone), 0, -1, withscores=True)}


def updates(zone: str, entries: list[Any], max_changes: int = MAX_CHANGES) -> list[tuple[int, str]]:
    """The zone update messages of change log entries (as pending.lua returns them, in
    revision order): (the revision each ends at, its text), at most ``max_changes``
    changes each, each starting from the revision before its first change."""
    out = []
    for start in range(0, len(entries), max_changes):
        group = entries[start:start + max_changes]
        first, last = _rev(group[0][0]), _rev(group[-1][0])
        out.append((last, messages.update(zone, first - 1, last, [change(e) for e in group])))
    return out


def change(entry: list[Any]) -> str:
    """The protocol text of one change log entry ``[id, [field, value, ...]]``."""
    entry_id, flat = entry
    fields = dict(zip(flat[::2], flat[1::2]))
    op = fields.get("op")
    if op == "upsert":
        return messages.upsert_change(_rev(entry_id), fields["peer"])
    if op == "remove":
        return messages.remove_change(_rev(entry_id), fields["key"], fields["reason"])
    if op == "policy":
        return messages.policy_change(_rev(entry_id), fields["policy"] or None)
    if "c" in fields:       # logged as JSON by a tower before the change log held data
        return fields["c"]
    raise ValueError(f"change log entry {entry_id} is malformed")


def _rev(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def _keys(guard: Guard | None) -> list[str]:
    """A script's last KEYS for a guard (none without)."""
    return [] if guard is None else [guard.key]


def _args(guard: Guard | None) -> list[Any]:
    """A script's last ARGV for a guard (none without)."""
    return [] if guard is None else [guard.entry_id, guard.ttl]


def _at(reply: list[Any], index: int) -> Any:
    return reply[index] if len(reply) > index else None


def _complete(data: dict[str, Any] | None) -> bool:
    """A zone hash with its settings (not one left half-written by an old race)."""
    return bool(data) and "name" in data and "cidr" in data


def _zone(data: dict[str, Any]) -> Zone:
    return Zone(data["name"], data.get("description", ""), data["cidr"],
                float(data.get("created", 0)))

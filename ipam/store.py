"""The zone store: zones, leases, child prefixes and peers in Redis.

Every write that must stay consistent runs as one Lua script (see ipam/lua/), so
several ControlTower replicas on one Redis never hand one address or one prefix to
two nodes and never leave state half-written.

The writes the request worker makes are also available as ``Call`` objects
(``register_call``, ``heartbeat_call``, ``remove_call``), which ``run_many`` sends in one
pipeline: one round trip for a whole batch of requests.

Requests from the request stream carry their *order* (their stream entry id): a request
older than the last one applied for the same key (one handled again after a replica died
before acknowledging it) changes nothing (see ``order_score``).
"""
from __future__ import annotations

import ipaddress
import json
import logging
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import redis
from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script

from wire import messages
from wire import snapshot as snapshots
from wire.errors import Conflict, InvalidInput, NotFound, Superseded
from wire.keys import REQUEST_GROUP, Keys
from wire.messages import Peer

from . import cidr as cidrs
from .scripts import Scripts

log = logging.getLogger(__name__)

DEFAULT_ZONE = "default"
DEFAULT_CIDR = "10.200.0.0/20"
DEFAULT_DESCRIPTION = "Default zone"
CHANGE_LOG_LENGTH = 10000
MAX_DESCRIPTION = 256


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


@dataclass
class Call:
    """One script call of the store: run it alone (``ZoneStore.run``) or with others in
    one pipeline (``ZoneStore.run_many``). ``done`` turns the script's reply into the
    result, raising a MeshError for a refusal (it may call Redis again, rarely)."""
    script: Script
    keys: list[str]
    args: list[Any]
    done: Callable[[Any], Any]


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
        self._zone_cache: dict[str, Zone] = {}

    # -- zones ---------------------------------------------------------------------

    def create_zone(self, name: str, cidr: str, description: str = "") -> Zone:
        name = messages.zone_name(name)
        network = cidrs.zone_network(messages.network(cidr))
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise InvalidInput(f"description must be a string of at most {MAX_DESCRIPTION} characters")
        zone = Zone(name, description, str(network), time.time())
        k = self.keys
        with self.redis.pipeline(transaction=True) as pipe:
            self.scripts.create_zone(keys=[k.zone(name), k.requests(name)],
                                     args=[name, description, zone.cidr, zone.created, REQUEST_GROUP],
                                     client=pipe)
            pipe.sadd(k.zones, name)
            created, _ = pipe.execute()
        if not created:
            raise Conflict(f"zone {name} already exists")
        log.info("zone %s created with CIDR %s", name, zone.cidr)
        return zone

    def ensure_default_zone(self) -> None:
        try:
            self.create_zone(DEFAULT_ZONE, DEFAULT_CIDR, DEFAULT_DESCRIPTION)
        except Conflict:
            pass

    def get_zone(self, name: str) -> Zone:
        data = self.redis.hgetall(self.keys.zone(messages.zone_name(name)))
        if not data:
            raise NotFound(f"zone {name} does not exist")
        return _zone(data)

    def cached_zone(self, name: str) -> Zone:
        """A zone's immutable settings, cached (the worker's hot path)."""
        zone = self._zone_cache.get(name)
        if zone is None:
            zone = self._zone_cache[name] = self.get_zone(name)
        return zone

    def zone_names(self) -> list[str]:
        return sorted(self.redis.smembers(self.keys.zones))

    def list_zones(self) -> list[Zone]:
        names = self.zone_names()
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.zone(name))
            found = pipe.execute()
        return [_zone(data) for data in found if data]

    def delete_zone(self, name: str, force: bool = False) -> None:
        name = messages.zone_name(name)
        k = self.keys
        zone_keys = [k.zone(name), k.peers(name), k.rev(name), k.leases(name), k.prefixes(name),
                     k.free(name), k.cursor(name), k.published(name), k.changes(name),
                     k.seen(name), k.applied(name), k.requests(name)]
        result = self.scripts.delete_zone(keys=zone_keys, args=[int(force), k.updates(name), name])
        if result[0] == "missing":
            raise NotFound(f"zone {name} does not exist")
        if result[0] == "busy":
            raise Conflict(f"zone {name} still has {result[1]} nodes; delete them first "
                           "or use force=true")
        self.redis.srem(k.zones, name)
        self._zone_cache.pop(name, None)
        log.info("zone %s deleted", name)

    # -- registration ------------------------------------------------------------------

    def register(self, zone_name: str, key: str, **kwargs: Any) -> Assignment:
        """Register a node; see ``register_call`` for the arguments."""
        return self.run(self.register_call(zone_name, key, **kwargs))

    def register_call(self, zone_name: str, key: str, *, listen_port: int, session: str,
                      endpoint: str | None = None, request_ip: str | None = None,
                      child_prefixes: list[str] | tuple[str, ...] = (),
                      nat_type: str | None = None, hostname: str | None = None,
                      now: float | None = None, order: str | None = None) -> Call:
        """The register script call; its result is an Assignment. ``order``: the request's
        stream entry id (None: not from the request stream, no order check)."""
        zone = self.cached_zone(zone_name)
        network = zone.network
        requested = cidrs.host_address(network, request_ip) if request_ip else ""
        prefixes = cidrs.child_prefixes(network, child_prefixes)
        wanted = json.dumps([[str(p), *cidrs.span(p)] for p in prefixes])
        record = Peer(key=key, address="", endpoint=endpoint,
                      child_prefixes=tuple(str(p) for p in prefixes), listen_port=listen_port,
                      nat_type=nat_type, session=session, hostname=hostname).to_dict()
        del record["address"], record["registered"]
        head = json.dumps(record, separators=(",", ":"))[:-1]
        now = time.time() if now is None else now
        # An IPv4 zone's script takes new addresses itself; an IPv6 zone's gets a
        # candidate computed here (see _registered).
        base = str(int(network.network_address)) if network.version == 4 else ""
        k = self.keys
        keys = [k.zone(zone.name), k.peers(zone.name), k.leases(zone.name), k.prefixes(zone.name),
                k.free(zone.name), k.rev(zone.name), k.changes(zone.name), k.seen(zone.name),
                k.cursor(zone.name), k.applied(zone.name)]
        args = [key, head, now, self.expiry, requested, "", wanted, self.change_log_length,
                _score(order), base, cidrs.pool_size(network)]
        return Call(self.scripts.register, keys, args,
                    lambda result: self._registered(zone, key, keys, args, result, order))

    def _registered(self, zone: Zone, key: str, keys: list[str], args: list[Any],
                    result: list[Any], order: str | None) -> Assignment:
        now, requested = args[2], args[4]
        prefix_len = zone.network.prefixlen
        for _ in range(64):
            status = result[0]
            if status == "ok":
                return Assignment(result[1], prefix_len, zone.cidr, int(result[2]))
            if status == "stale":
                log.info("ignored a register of %s in zone %s: its request (%s) is older than "
                         "one applied since", key, zone.name, order)
                if not result[1]:
                    raise Conflict("a newer request of this node was handled already")
                return Assignment(result[1], prefix_len, zone.cidr, int(result[2]))
            if status == "nozone":
                self._zone_cache.pop(zone.name, None)
                raise NotFound(f"zone {zone.name} does not exist")
            if status == "held":
                age = max(0.0, now - float(result[2]))
                raise Conflict(f"{requested} is held by another node (last seen {age:.0f}s ago)")
            if status == "prefix":
                raise Conflict(f"child prefix {result[1]} overlaps {result[2]}, "
                               "already used by another node in this zone")
            if status == "full":
                raise Conflict(f"zone {zone.name} has no free address left in {zone.cidr}")
            # 'need' or 'retry': an IPv6 zone's script wants a (new) candidate address;
            # an IPv4 zone's found only leased ones and tries on.
            if not args[9]:
                args[5] = self._candidate(zone)
            result = self.scripts.register(keys=keys, args=args)
        raise Conflict(f"could not find a free address in zone {zone.name}")

    def _candidate(self, zone: Zone) -> str:
        network = zone.network
        result = self.scripts.candidate(keys=[self.keys.free(zone.name), self.keys.cursor(zone.name)],
                                        args=[cidrs.pool_size(network)])
        if result[0] == "a":
            return result[1]
        if result[0] == "o":
            return cidrs.address_at(network, int(result[1]))
        raise Conflict(f"zone {zone.name} has no free address left in {zone.cidr}")

    def heartbeat(self, zone: str, key: str, session: str, now: float | None = None) -> None:
        self.run(self.heartbeat_call(zone, key, session, now))

    def heartbeat_call(self, zone: str, key: str, session: str, now: float | None = None) -> Call:
        return Call(self.scripts.heartbeat, [self.keys.peers(zone), self.keys.seen(zone)],
                    [key, session, time.time() if now is None else now],
                    lambda result: self._check_session(result[0], zone))

    def update_endpoint(self, zone: str, key: str, session: str, endpoint: str,
                        nat_type: str | None, now: float | None = None,
                        order: str | None = None) -> int:
        """Set a node's endpoint; returns the revision. Reads the record first (one round
        trip) and writes it back if unchanged meanwhile (compare and set)."""
        k = self.keys
        score = _score(order)
        for _ in range(16):
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.hget(k.peers(zone), key)
                pipe.zscore(k.applied(zone), key)
                pipe.get(k.rev(zone))
                current, last, rev = pipe.execute()
            if score and last is not None and float(last) > float(score):
                log.info("ignored an endpoint update of %s in zone %s: its request (%s) is "
                         "older than one applied since", key, zone, order)
                return int(rev or 0)
            if current is None:
                self._check_session("missing", zone)
            peer = messages.parse_peer(current)
            if peer.session != session:
                self._check_session("superseded", zone)
            record = json.loads(current)
            record.update(endpoint=endpoint, nat_type=nat_type)
            result = self.scripts.replace_peer(
                keys=[k.peers(zone), k.rev(zone), k.changes(zone), k.seen(zone),
                      k.applied(zone)],
                args=[key, current, json.dumps(record, separators=(",", ":")),
                      time.time() if now is None else now, self.change_log_length, score])
            if result[0] in ("ok", "stale"):
                return int(result[1])
            self._check_session(result[0], zone)
        raise Conflict("the peer record kept changing; try again")

    @staticmethod
    def _check_session(status: str, zone: str) -> None:
        if status == "missing":
            raise NotFound(f"this node is not registered in zone {zone}")
        if status == "superseded":
            raise Superseded("this key was registered again from another host (superseded)")

    def remove_peer(self, zone: str, key: str, reason: str, session: str = "",
                    seen_before: float | None = None, order: str | None = None) -> int | None:
        """Remove a node; returns the new revision, or None when it was not removed."""
        return self.run(self.remove_call(zone, key, reason, session, seen_before, order))

    def remove_call(self, zone: str, key: str, reason: str, session: str = "",
                    seen_before: float | None = None, order: str | None = None) -> Call:
        """The remove script call; its result is the new revision (the current one for a
        stale request), or None when the node was not removed (``seen_before``)."""
        k = self.keys
        keys = [k.peers(zone), k.leases(zone), k.prefixes(zone), k.free(zone), k.rev(zone),
                k.changes(zone), k.seen(zone), k.applied(zone)]
        args = [key, reason, session, "" if seen_before is None else seen_before,
                self.change_log_length, _score(order)]

        def done(result: list[Any]) -> int | None:
            if result[0] in ("ok", "stale"):
                return int(result[1])
            if result[0] == "missing":
                raise NotFound(f"peer {key} is not in zone {zone}")
            if result[0] == "superseded":
                self._check_session("superseded", zone)
            return None
        return Call(self.scripts.remove_peer, keys, args, done)

    def expire(self, zone: str, now: float | None = None) -> list[str]:
        """Remove nodes silent for longer than the expiry; returns their keys."""
        cutoff = (time.time() if now is None else now) - self.expiry
        stale = self.redis.zrangebyscore(self.keys.seen(zone), "-inf", f"({cutoff}")
        removed = []
        for key in stale:
            try:
                if self.remove_peer(zone, key, "expired", seen_before=cutoff) is not None:
                    removed.append(key)
            except NotFound:
                pass
        return removed

    def forget_orders(self, zones: list[str], before: float) -> int:
        """Drop the request order of keys whose last applied request came before
        ``before`` (unix time), in every zone given (one round trip): a request that old
        is refused for its timestamp anyway. Returns how many were dropped."""
        with self.redis.pipeline(transaction=False) as pipe:
            for zone in zones:
                pipe.zremrangebyscore(self.keys.applied(zone), "-inf", f"({before * 1000!r}")
            return sum(pipe.execute())

    # -- running calls ---------------------------------------------------------------------

    def run(self, call: Call) -> Any:
        return call.done(call.script(keys=call.keys, args=call.args))

    def run_many(self, calls: list[Call]) -> list[Any]:
        """Run calls in one pipeline (one round trip, in order, not atomically as a whole);
        returns what ``results`` returns."""
        if not calls:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            self.queue(pipe, calls)
            return self.results(calls, pipe.execute(raise_on_error=False))

    @staticmethod
    def queue(pipe: Pipeline, calls: list[Call]) -> None:
        """Add calls to a pipeline (executed by the caller with raise_on_error=False)."""
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)

    def results(self, calls: list[Call], replies: list[Any]) -> list[Any]:
        """Each queued call's result, or the exception it raised (a MeshError for a
        refusal, a ResponseError for a script error), so that one call's failure is its
        own only. Connection errors are raised: the calls may then have run or not."""
        out: list[Any] = []
        for call, reply in zip(calls, replies):
            try:
                if isinstance(reply, redis.exceptions.NoScriptError):
                    # Redis lost its scripts (restart, SCRIPT FLUSH): this call did not
                    # run; Script.__call__ loads the script and runs it.
                    reply = call.script(keys=call.keys, args=call.args)
                if isinstance(reply, Exception):
                    raise reply
                out.append(call.done(reply))
            except redis.exceptions.ConnectionError:
                raise
            except Exception as exc:  # noqa: BLE001 - returned: the caller answers it
                out.append(exc)
        return out

    # -- publishing ------------------------------------------------------------------------

    def flush(self, zone: str, max_changes: int = 1000) -> int:
        """Publish unpublished changes of a zone; returns the number of messages."""
        return self.run(self.flush_call(zone, max_changes))

    def flush_call(self, zone: str, max_changes: int = 1000) -> Call:
        k = self.keys
        return Call(self.scripts.flush, [k.changes(zone), k.published(zone)],
                    [k.updates(zone), zone, max_changes], int)

    # -- reads ---------------------------------------------------------------------------

    def snapshot(self, zone: str) -> Snapshot:
        read = snapshots.Read(zone)
        with self.redis.pipeline(transaction=True) as pipe:
            snapshots.queue(pipe, snapshots.commands(self.keys, read))
            found = snapshots.parse(read, pipe.execute())
        data = {name: value for name, value in found.fields.items() if value is not None}
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


def _zone(data: dict[str, Any]) -> Zone:
    return Zone(data["name"], data.get("description", ""), data["cidr"],
                float(data.get("created", 0)))

"""The relay's state and every decision it makes about a datagram (pure: no sockets,
no Redis, no clock of its own; ``now`` is passed in, unix seconds).

A node *binds* (a signed datagram from its WireGuard port); the relay then knows the
address its NAT maps that port to for the relay. A WireGuard initiation from a bound
address goes to the bound node of the same zone whose public key its ``mac1`` was made
for; the response, checked the same way, installs two routes keyed by (source address,
receiver index). Transport data follows the routes (in the kernel when the data path
mirrors them, else here). The relay holds no WireGuard key and decrypts nothing.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Callable, Protocol, Union

from wire import relaymsg as rm
from wire.errors import InvalidInput

Address = tuple[str, int]


@dataclass(frozen=True)
class Limits:
    max_peers_per_node: int = 256      # peers with live routes, per node
    handshakes_per_second: float = 10.0
    handshake_burst: float = 30.0
    binds_per_second: float = 5.0
    bind_burst: float = 10.0
    max_bindings: int = 100_000
    max_routes: int = 1_000_000
    max_pending: int = 100_000
    clock_skew: float = 60.0           # seconds a bind's timestamp may be off
    binding_idle: float = 30.0         # a binding without binds this long is dropped
    route_ttl: float = 200.0           # WireGuard rejects a session after 180 s
    pending_ttl: float = 5.0           # an initiation waits this long for its response


class Membership(Protocol):
    def serves(self, zone: str) -> bool: ...
    def is_member(self, zone: str, key: bytes) -> bool: ...


@dataclass(frozen=True)
class Send:
    destination: Address
    data: bytes


@dataclass(frozen=True)
class AddRoute:
    source: Address
    index: bytes
    destination: Address
    ttl: float


@dataclass(frozen=True)
class RemoveRoute:
    source: Address
    index: bytes


Action = Union[Send, AddRoute, RemoveRoute]


@dataclass
class Bucket:
    """A token bucket: ``rate`` per second up to ``burst``."""
    rate: float
    burst: float
    tokens: float = -1.0
    at: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(eq=False)
class Binding:
    key: bytes
    zone: str
    address: Address
    mac_key: bytes
    mac1_key: bytes
    last_seen: float
    last_ts_ms: int
    handshakes: Bucket
    binds: Bucket
    peers: dict[bytes, float] = field(default_factory=dict)   # peer key -> routes' expiry


@dataclass(eq=False)
class Pending:
    initiator: Binding
    responder: Binding
    expires: float


@dataclass
class Route:
    destination: Address
    expires: float
    pair: tuple[bytes, bytes]


class RelayTable:
    def __init__(self, mac_key_of: Callable[[bytes], bytes], boot: bytes,
                 members: Membership, limits: Limits = Limits()) -> None:
        """``mac_key_of(node key)``: the bind MAC key shared with that node (X25519 with
        the relay's private key, derived; the caller caches it)."""
        self.mac_key_of = mac_key_of
        self.boot = boot
        self.members = members
        self.limits = limits
        self.bindings: dict[Address, Binding] = {}
        self.by_key: dict[bytes, Binding] = {}
        self.zones: dict[str, dict[bytes, Binding]] = {}
        self.pending: dict[tuple[bytes, bytes], Pending] = {}
        self.routes: dict[tuple[Address, bytes], Route] = {}
        self._routes_at: dict[Address, set[tuple[Address, bytes]]] = {}
        self.counters: collections.Counter[str] = collections.Counter()

    # -- one datagram ---------------------------------------------------------------

    def handle(self, data: bytes, source: Address, now: float) -> list[Action]:
        """What to do with one datagram that reached the relay's socket."""
        kind = rm.wg_type(data)
        if kind == rm.WG_TRANSPORT:
            return self._transport(data, source, now)
        if kind == rm.WG_INITIATION:
            return self._initiation(data, source, now)
        if kind == rm.WG_RESPONSE:
            return self._response(data, source, now)
        if kind == rm.WG_COOKIE:
            return self._cookie(data, source, now)
        if rm.message_type(data) == rm.BIND:
            try:
                bind = rm.decode(data)
            except InvalidInput:
                return self._drop("malformed")
            return self._bind(bind, data, source, now)
        return self._drop("malformed")

    def _drop(self, reason: str) -> list[Action]:
        self.counters[f"dropped:{reason}"] += 1
        return []

    def _refuse(self, bind: rm.Bind, source: Address, reason: str) -> list[Action]:
        self.counters[f"refused:{reason}"] += 1
        return [Send(source, rm.encode_bind_refused(rm.BindRefused(bind.txid, reason)))]

    def _bind(self, bind: rm.Bind, data: bytes, source: Address, now: float) -> list[Action]:
        if not self.members.serves(bind.zone):
            return self._refuse(bind, source, "unknown-zone")
        if not self.members.is_member(bind.zone, bind.key):
            return self._refuse(bind, source, "foreign")
        try:
            mac_key = self.mac_key_of(bind.key)
        except InvalidInput:
            return self._refuse(bind, source, "forged")
        if not rm.mac_valid(mac_key, data):
            return self._refuse(bind, source, "forged")
        old = self.by_key.get(bind.key)
        if abs(bind.ts_ms / 1000.0 - now) > self.limits.clock_skew or (
                old is not None and bind.ts_ms <= old.last_ts_ms):
            return self._refuse(bind, source, "expired")
        if old is not None and not old.binds.take(now):
            return self._drop("bind-rate")
        actions: list[Action] = []
        if old is not None and (old.address != source or old.zone != bind.zone):
            actions += self._unbind(old, "moved")
            old = None
        other = self.bindings.get(source)
        if other is not None and other.key != bind.key:
            actions += self._unbind(other, "address-taken")
        if old is None:
            if len(self.bindings) >= self.limits.max_bindings:
                return actions + self._refuse(bind, source, "limit")
            old = Binding(bind.key, bind.zone, source, mac_key, rm.mac1_key(bind.key), now,
                          bind.ts_ms, Bucket(self.limits.handshakes_per_second,
                                             self.limits.handshake_burst),
                          Bucket(self.limits.binds_per_second, self.limits.bind_burst))
            self.bindings[source] = old
            self.by_key[bind.key] = old
            self.zones.setdefault(bind.zone, {})[bind.key] = old
            self.counters["bindings"] += 1
        old.last_seen, old.last_ts_ms = now, bind.ts_ms
        self.counters["binds"] += 1
        return actions + [Send(source, rm.encode_bind_ok(
            mac_key, rm.BindOk(bind.txid, source, self.boot)))]

    def _initiation(self, data: bytes, source: Address, now: float) -> list[Action]:
        initiator = self.bindings.get(source)
        if initiator is None:
            return self._drop("unbound")
        if not initiator.handshakes.take(now):
            return self._drop("handshake-rate")
        responder = self._responder(initiator, data)
        if responder is None:
            return self._drop("no-responder")
        if not self._room_for(initiator, responder.key, now) or not self._room_for(
                responder, initiator.key, now):
            return self._drop("peer-limit")
        if len(self.pending) >= self.limits.max_pending:
            self._expire_pending(now)
            if len(self.pending) >= self.limits.max_pending:
                return self._drop("pending-limit")
        self.pending[(responder.key, rm.sender_index(data))] = Pending(
            initiator, responder, now + self.limits.pending_ttl)
        self.counters["initiations"] += 1
        return [Send(responder.address, bytes(data))]

    def _responder(self, initiator: Binding, data: bytes) -> Binding | None:
        """The bound node of the initiator's zone this initiation is for: its recent
        peers first (a rekey, the common case), then every bound node of the zone."""
        zone = self.zones.get(initiator.zone, {})
        for key in initiator.peers:
            candidate = zone.get(key)
            if candidate is not None and rm.mac1_valid(data, candidate.mac1_key):
                return candidate
        for candidate in zone.values():
            if candidate is not initiator and rm.mac1_valid(data, candidate.mac1_key):
                return candidate
        return None

    def _room_for(self, node: Binding, peer: bytes, now: float) -> bool:
        if peer in node.peers and node.peers[peer] > now:
            return True
        live = sum(1 for expiry in node.peers.values() if expiry > now)
        return live < self.limits.max_peers_per_node

    def _response(self, data: bytes, source: Address, now: float) -> list[Action]:
        responder = self.bindings.get(source)
        if responder is None:
            return self._drop("unbound")
        pending = self.pending.get((responder.key, rm.receiver_index(data)))
        if pending is None or pending.expires < now or pending.responder is not responder:
            return self._drop("no-pending")
        initiator = pending.initiator
        if self.bindings.get(initiator.address) is not initiator:
            return self._drop("initiator-gone")
        if not rm.mac1_valid(data, initiator.mac1_key):
            return self._drop("bad-mac1")
        if len(self.routes) + 2 > self.limits.max_routes:
            return self._drop("route-limit")
        del self.pending[(responder.key, rm.receiver_index(data))]
        expires = now + self.limits.route_ttl
        pair = (initiator.key, responder.key)
        actions: list[Action] = []
        for src, index, dst in ((initiator.address, rm.sender_index(data), responder.address),
                                (responder.address, rm.receiver_index(data), initiator.address)):
            previous = self.routes.get((src, index))
            if previous is not None and previous.destination != dst:
                self._routes_at.get(previous.destination, set()).discard((src, index))
            self.routes[(src, index)] = Route(dst, expires, pair)
            self._routes_at.setdefault(src, set()).add((src, index))
            self._routes_at.setdefault(dst, set()).add((src, index))
            actions.append(AddRoute(src, index, dst, self.limits.route_ttl))
        initiator.peers[responder.key] = expires
        responder.peers[initiator.key] = expires
        self.counters["handshakes"] += 1
        return actions + [Send(initiator.address, bytes(data))]

    def _cookie(self, data: bytes, source: Address, now: float) -> list[Action]:
        responder = self.bindings.get(source)
        if responder is None:
            return self._drop("unbound")
        pending = self.pending.get((responder.key, rm.receiver_index(data)))
        if pending is None or pending.expires < now:
            return self._drop("no-pending")
        return [Send(pending.initiator.address, bytes(data))]

    def _transport(self, data: bytes, source: Address, now: float) -> list[Action]:
        route = self.routes.get((source, rm.receiver_index(data)))
        if route is None or route.expires < now:
            return self._drop("no-route")
        self.counters["forwarded"] += 1
        self.counters["forwarded_bytes"] += len(data)
        return [Send(route.destination, bytes(data))]

    # -- housekeeping ------------------------------------------------------------------

    def _unbind(self, binding: Binding, reason: str) -> list[Action]:
        if self.bindings.get(binding.address) is binding:
            del self.bindings[binding.address]
        if self.by_key.get(binding.key) is binding:
            del self.by_key[binding.key]
        zone = self.zones.get(binding.zone, {})
        if zone.get(binding.key) is binding:
            del zone[binding.key]
            if not zone:
                del self.zones[binding.zone]
        self.counters[f"unbound:{reason}"] += 1
        actions: list[Action] = []
        for route_key in self._routes_at.pop(binding.address, set()):
            route = self.routes.pop(route_key, None)
            if route is None:
                continue
            for end in (route_key[0], route.destination):
                self._routes_at.get(end, set()).discard(route_key)
            actions.append(RemoveRoute(*route_key))
        for key in [k for k, p in self.pending.items()
                    if p.initiator is binding or p.responder is binding]:
            del self.pending[key]
        return actions

    def drop_key(self, key: bytes, reason: str) -> list[Action]:
        """Forget a node (removed from its zone, revoked): its binding and routes go."""
        binding = self.by_key.get(key)
        return self._unbind(binding, reason) if binding is not None else []

    def recheck_members(self) -> list[Action]:
        """Drop the bindings whose key is no longer a member of its zone."""
        actions: list[Action] = []
        for binding in list(self.by_key.values()):
            if not (self.members.serves(binding.zone)
                    and self.members.is_member(binding.zone, binding.key)):
                actions += self._unbind(binding, "not-member")
        return actions

    def _expire_pending(self, now: float) -> None:
        for key in [k for k, p in self.pending.items() if p.expires < now]:
            del self.pending[key]

    def expire(self, now: float) -> list[Action]:
        """Drop idle bindings (with their routes), stale initiations and old routes."""
        actions: list[Action] = []
        for binding in list(self.by_key.values()):
            if now - binding.last_seen > self.limits.binding_idle:
                actions += self._unbind(binding, "idle")
        self._expire_pending(now)
        for route_key in [k for k, r in self.routes.items() if r.expires < now]:
            route = self.routes.pop(route_key)
            for end in (route_key[0], route.destination):
                self._routes_at.get(end, set()).discard(route_key)
        for binding in self.by_key.values():
            for peer in [p for p, e in binding.peers.items() if e < now]:
                del binding.peers[peer]
        return actions

    def pairs(self, now: float) -> int:
        """Pairs with live routes."""
        return len({r.pair for r in self.routes.values() if r.expires >= now})

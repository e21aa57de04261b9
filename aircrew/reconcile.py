"""Reconcile, do not rebuild: desired configuration and the minimal diff (pure).

zone peers ──► desired(...) ──► diff(desired, previous, device, routes) ──► ops
A one-peer change yields one op; an unchanged peer yields none, so it keeps its session.

``Applied`` is what the agent last applied. A zone update names the peers it touched;
``Applied.diff`` compares only those with what was applied, so one changed peer in a zone
of thousands costs neither a pass over the zone nor a device read. The whole diff against
the device read back (``diff``) runs at start, after a resync and on the drift check.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Union

from wire.messages import Peer

from .device import DEFAULT_KEEPALIVE, DeviceState, PeerConfig


@dataclass(frozen=True)
class Desired:
    peers: dict[str, PeerConfig] = field(default_factory=dict)
    routes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class AddPeer:
    peer: PeerConfig


@dataclass(frozen=True)
class UpdatePeer:
    peer: PeerConfig


@dataclass(frozen=True)
class ResetPeer:
    """Replace the peer with a fresh one (new handshake at once): the zone moved it, or
    its path moved onto a relay."""
    peer: PeerConfig


@dataclass(frozen=True)
class RemovePeer:
    public_key: str


@dataclass(frozen=True)
class AddRoute:
    prefix: str


@dataclass(frozen=True)
class RemoveRoute:
    prefix: str


Op = Union[AddPeer, UpdatePeer, ResetPeer, RemovePeer, AddRoute, RemoveRoute]


def desired(own_key: str, peers: Iterable[Peer], keepalive: int = DEFAULT_KEEPALIVE,
            endpoints: Mapping[str, str | None] | None = None) -> Desired:
    """One WireGuard peer per other node, and a route per other node's child prefix.
    ``endpoints``: the path chosen per peer (a relay, a probed address), where there is one."""
    configs: dict[str, PeerConfig] = {}
    routes: set[str] = set()
    for peer in peers:
        if peer.key == own_key:
            continue
        configs[peer.key] = peer_config(peer, keepalive, endpoints)
        routes.update(peer.child_prefixes)
    return Desired(configs, frozenset(routes))


def peer_config(peer: Peer, keepalive: int = DEFAULT_KEEPALIVE,
                endpoints: Mapping[str, str | None] | None = None) -> PeerConfig:
    endpoint = peer.endpoint
    if endpoints is not None and endpoints.get(peer.key):
        endpoint = endpoints[peer.key]
    return PeerConfig(peer.key, endpoint, tuple(sorted(peer.allowed_ips())), keepalive)


def diff(want: Desired, previous: Desired, device: DeviceState, routes: Iterable[str]) -> list[Op]:
    """Typed changes that turn the device (and our routes) into ``want``.

    The endpoint is only pushed when the zone changed it (compared with ``previous``, what
    we last applied) or the device has none: WireGuard roams to the address a peer really
    sends from, and overriding that with the advertised one would break NATed peers.
    A changed endpoint re-creates the peer (``ResetPeer``): its old session would keep
    WireGuard sending to the new address for up to 15 s before it handshakes again.
    """
    ops: list[Op] = []
    for key in sorted(device.peers.keys() - want.peers.keys()):
        ops.append(RemovePeer(key))
    for key, peer in sorted(want.peers.items()):
        op = peer_op(peer, device.peers.get(key), previous.peers.get(key))
        if op is not None:
            ops.append(op)
    ops.extend(route_ops(want.routes, routes))
    return ops


def peer_op(peer: PeerConfig, have: PeerConfig | None, before: PeerConfig | None) -> Op | None:
    """The op that turns ``have`` (on the device; None: absent) into ``peer``, given what
    was applied ``before`` (``diff``'s endpoint rule); None when none is needed."""
    if have is None:
        return AddPeer(peer)
    endpoint_changed = peer.endpoint is not None and (
        have.endpoint is None or before is None or before.endpoint != peer.endpoint)
    if endpoint_changed and have.endpoint == peer.endpoint:
        endpoint_changed = False
    if endpoint_changed and before is not None and before.endpoint is not None:
        return ResetPeer(peer)
    if (endpoint_changed or tuple(sorted(have.allowed_ips)) != peer.allowed_ips
            or have.keepalive != peer.keepalive):
        return UpdatePeer(peer if endpoint_changed else
                          PeerConfig(peer.public_key, None, peer.allowed_ips, peer.keepalive))
    return None


def route_ops(want: Iterable[str], routes: Iterable[str]) -> list[Op]:
    """The route ops that turn ``routes`` (ours now) into ``want``: removals first."""
    current, wanted = set(routes), set(want)
    ops: list[Op] = [RemoveRoute(p) for p in sorted(current - wanted)]
    ops.extend(AddRoute(p) for p in sorted(wanted - current))
    return ops


@dataclass
class Applied:
    """What the agent last applied: each peer's config and the prefixes routed to it."""
    peers: dict[str, PeerConfig] = field(default_factory=dict)
    routes_of: dict[str, frozenset[str]] = field(default_factory=dict)  # peers with routes only

    @classmethod
    def of(cls, own_key: str, zone: Mapping[str, Peer],
           endpoints: Mapping[str, str | None] | None = None) -> Applied:
        """The state applying the whole zone leads to."""
        applied = cls()
        applied.record(own_key, zone.keys(), zone, endpoints)
        return applied

    def desired(self) -> Desired:
        return Desired(dict(self.peers), self.routes())

    def routes(self) -> frozenset[str]:
        return frozenset().union(*self.routes_of.values())

    def diff(self, own_key: str, keys: Iterable[str], zone: Mapping[str, Peer],
             endpoints: Mapping[str, str | None] | None = None) -> list[Op]:
        """The ops that bring the peers in ``keys`` to what ``zone`` holds for them.

        The device is taken to hold what was applied, so a roamed endpoint is kept as in
        ``diff``: it is only pushed when the zone changed it. The same ops as ``diff`` of
        the touched peers (``Desired``: them as ``zone`` holds them, with the other peers'
        routes) against what was applied, in the same order, without building either:
        its cost is the touched peers', and the routes' only where a touched peer has some.
        """
        removed: list[Op] = []
        changed: list[Op] = []
        prefixes: set[str] = set()
        touched = sorted(set(keys))
        for key in touched:
            peer = zone.get(key) if key != own_key else None
            before = self.peers.get(key)
            if peer is None:
                if before is not None:
                    removed.append(RemovePeer(key))
                continue
            prefixes.update(peer.child_prefixes)
            op = peer_op(peer_config(peer, endpoints=endpoints), before, before)
            if op is not None:
                changed.append(op)
        ops = removed + changed
        routes_of = self.routes_of
        if prefixes or any(k in routes_of for k in touched):
            skip = set(touched)
            kept = frozenset().union(*(r for k, r in routes_of.items() if k not in skip))
            ops.extend(route_ops(prefixes | kept, self.routes()))
        return ops

    def record(self, own_key: str, keys: Iterable[str], zone: Mapping[str, Peer],
               endpoints: Mapping[str, str | None] | None = None) -> None:
        """Note that the peers in ``keys`` now are as ``zone`` holds them."""
        for key in keys:
            peer = zone.get(key)
            if peer is None or key == own_key:
                self.peers.pop(key, None)
                self.routes_of.pop(key, None)
                continue
            self.peers[key] = peer_config(peer, endpoints=endpoints)
            if peer.child_prefixes:
                self.routes_of[key] = frozenset(peer.child_prefixes)
            else:
                self.routes_of.pop(key, None)

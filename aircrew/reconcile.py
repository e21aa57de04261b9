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
        have = device.peers.get(key)
        if have is None:
            ops.append(AddPeer(peer))
            continue
        before = previous.peers.get(key)
        endpoint_changed = peer.endpoint is not None and (
            have.endpoint is None or before is None or before.endpoint != peer.endpoint)
        if endpoint_changed and have.endpoint == peer.endpoint:
            endpoint_changed = False
        if endpoint_changed and before is not None and before.endpoint is not None:
            ops.append(ResetPeer(peer))
        elif (endpoint_changed or tuple(sorted(have.allowed_ips)) != peer.allowed_ips
                or have.keepalive != peer.keepalive):
            ops.append(UpdatePeer(peer if endpoint_changed else
                                  PeerConfig(key, None, peer.allowed_ips, peer.keepalive)))
    current = set(routes)
    ops.extend(RemoveRoute(p) for p in sorted(current - want.routes))
    ops.extend(AddRoute(p) for p in sorted(want.routes - current))
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
        ``diff``: it is only pushed when the zone changed it.
        """
        keys = set(keys)
        want = desired(own_key, (zone[k] for k in keys if k in zone), endpoints=endpoints)
        before = {k: self.peers[k] for k in keys if k in self.peers}
        kept = frozenset().union(*(r for k, r in self.routes_of.items() if k not in keys))
        return diff(Desired(want.peers, want.routes | kept), Desired(before),
                    DeviceState(peers=dict(before)), self.routes())

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

"""Reconcile, do not rebuild: desired configuration and the minimal diff (pure).

zone peers ──► desired(...) ──► diff(desired, previous, device, routes) ──► ops
A one-peer change yields one op; an unchanged peer yields none, so it keeps its session.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Union

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
class RemovePeer:
    public_key: str


@dataclass(frozen=True)
class AddRoute:
    prefix: str


@dataclass(frozen=True)
class RemoveRoute:
    prefix: str


Op = Union[AddPeer, UpdatePeer, RemovePeer, AddRoute, RemoveRoute]


def desired(own_key: str, peers: Iterable[Peer], keepalive: int = DEFAULT_KEEPALIVE) -> Desired:
    """One WireGuard peer per other node, and a route per other node's child prefix."""
    configs: dict[str, PeerConfig] = {}
    routes: set[str] = set()
    for peer in peers:
        if peer.key == own_key:
            continue
        allowed = tuple(sorted(peer.allowed_ips()))
        configs[peer.key] = PeerConfig(peer.key, peer.endpoint, allowed, keepalive)
        routes.update(peer.child_prefixes)
    return Desired(configs, frozenset(routes))


def diff(want: Desired, previous: Desired, device: DeviceState, routes: Iterable[str]) -> list[Op]:
    """Typed changes that turn the device (and our routes) into ``want``.

    The endpoint is only pushed when the zone changed it (compared with ``previous``, what
    we last applied) or the device has none: WireGuard roams to the address a peer really
    sends from, and overriding that with the advertised one would break NATed peers.
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
        if (endpoint_changed or tuple(sorted(have.allowed_ips)) != peer.allowed_ips
                or have.keepalive != peer.keepalive):
            ops.append(UpdatePeer(peer if endpoint_changed else
                                  PeerConfig(key, None, peer.allowed_ips, peer.keepalive)))
    current = set(routes)
    ops.extend(RemoveRoute(p) for p in sorted(current - want.routes))
    ops.extend(AddRoute(p) for p in sorted(want.routes - current))
    return ops

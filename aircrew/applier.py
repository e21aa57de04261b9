"""Carrying out the agent's typed changes on the device and the routes (the thin applier).

``aircrew.reconcile`` decides what to change (pure); the functions here do it, one device
or route operation per change. They block (UAPI and netlink sockets): the agent calls
them on its device thread, never on its event loop.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from wire.messages import Peer

from .device import Device
from .reconcile import (AddPeer, AddRoute, Applied, Op, RemovePeer, RemoveRoute, ResetPeer,
                        UpdatePeer, diff)

log = logging.getLogger(__name__)


class Links(Protocol):
    """Address, link state and routes of the interface (aircrew.routes.LinkConfig)."""
    def set_address(self, address: str, prefix_len: int) -> None: ...
    def up(self) -> None: ...
    def routes(self) -> set[str]: ...
    def add_route(self, prefix: str) -> None: ...
    def remove_route(self, prefix: str) -> None: ...


def apply_ops(device: Device, links: Links, ops: list[Op]) -> None:
    """Carry out typed changes: one device or route operation each (new peers batched)."""
    added = [op.peer for op in ops if isinstance(op, AddPeer)]
    batch = getattr(device, "upsert_peers", None) if len(added) > 1 else None
    if batch is not None:
        batch(added)
        added = []
    for op in ops:
        if isinstance(op, AddPeer) and added:
            device.upsert_peer(op.peer)
        elif isinstance(op, UpdatePeer):
            device.upsert_peer(op.peer)
        elif isinstance(op, ResetPeer):
            device.reset_peer(op.peer)
        elif isinstance(op, RemovePeer):
            device.remove_peer(op.public_key)
        elif isinstance(op, AddRoute):
            links.add_route(op.prefix)
        elif isinstance(op, RemoveRoute):
            links.remove_route(op.prefix)


def ensure_device(device: Device, links: Links, private_key: str, public_key: str,
                  listen_port: int, address: str, prefix_len: int) -> None:
    """The interface exists with this identity and listen port, has the node's address and
    is up; each step is taken only when the device differs."""
    if not device.exists():
        device.create()
    state = device.read()
    if state.public_key != public_key or state.listen_port != listen_port:
        device.set_identity(private_key, listen_port)
    links.set_address(address, prefix_len)
    links.up()


def apply_zone(device: Device, links: Links, own_key: str, zone: Mapping[str, Peer],
               applied: Applied, endpoints: Mapping[str, str | None] | None = None
               ) -> tuple[Applied, int]:
    """The whole zone against the device read back (``applied``: what was applied last, for
    the routes that are ours); returns what is applied now and the operations it took."""
    after = Applied.of(own_key, zone, endpoints)
    ops = diff(after.desired(), applied.desired(), device.read(), links.routes())
    if ops:
        apply_ops(device, links, ops)
    return after, len(ops)

"""Pure reconcile: each zone change yields exactly the expected device operations."""
from __future__ import annotations

from aircrew.agent import apply_ops
from aircrew.device import PeerConfig, RecordingDevice
from aircrew.reconcile import (AddPeer, AddRoute, Desired, RemovePeer, RemoveRoute, UpdatePeer,
                               desired, diff)
from wire.messages import Peer
from wire.proof import generate_private_key, public_key_of

ME, A, B, C = (public_key_of(generate_private_key()) for _ in range(4))


def peer(key, address, endpoint="203.0.113.9:51820", prefixes=()):
    return Peer(key=key, address=address, endpoint=endpoint, child_prefixes=tuple(prefixes))


BASE = [peer(ME, "10.0.0.1"), peer(A, "10.0.0.2", "203.0.113.2:51820"),
        peer(B, "10.0.0.3", "203.0.113.3:51820", ["172.24.0.0/24"])]


class FakeLinks:
    def __init__(self):
        self.ours: set[str] = set()
        self.log: list[tuple[str, str]] = []

    def routes(self):
        return set(self.ours)

    def add_route(self, prefix):
        self.ours.add(prefix)
        self.log.append(("add_route", prefix))

    def remove_route(self, prefix):
        self.ours.discard(prefix)
        self.log.append(("remove_route", prefix))


def converge(peers):
    """A device and routes equal to ``peers``; returns (device, links, applied)."""
    device, links = RecordingDevice(), FakeLinks()
    want = desired(ME, peers)
    apply_ops(device, links, diff(want, Desired(), device.read(), links.routes()))
    device.log.clear()
    device.operations = 0
    links.log.clear()
    return device, links, want


def step(device, links, applied, peers):
    want = desired(ME, peers)
    ops = diff(want, applied, device.read(), links.routes())
    apply_ops(device, links, ops)
    return ops, want


def test_desired_skips_self_and_routes_child_prefixes():
    want = desired(ME, BASE)
    assert set(want.peers) == {A, B}
    assert want.peers[B] == PeerConfig(B, "203.0.113.3:51820", ("10.0.0.3/32", "172.24.0.0/24"), 25)
    assert want.routes == {"172.24.0.0/24"}


def test_initial_apply():
    device = RecordingDevice()
    ops = diff(desired(ME, BASE), Desired(), device.read(), set())
    want = desired(ME, BASE).peers
    assert ops == [AddPeer(want[k]) for k in sorted((A, B))] + [AddRoute("172.24.0.0/24")]


def test_join_is_one_operation():
    device, links, applied = converge(BASE)
    ops, _ = step(device, links, applied, BASE + [peer(C, "10.0.0.4", "198.51.100.4:4000")])
    assert ops == [AddPeer(PeerConfig(C, "198.51.100.4:4000", ("10.0.0.4/32",)))]
    assert device.log == [("upsert_peer", C)] and links.log == []


def test_leave_removes_peer_and_its_routes():
    device, links, applied = converge(BASE)
    ops, _ = step(device, links, applied, BASE[:2])
    assert ops == [RemovePeer(B), RemoveRoute("172.24.0.0/24")]
    assert device.log == [("remove_peer", B)]
    assert links.log == [("remove_route", "172.24.0.0/24")]


def test_endpoint_change_is_one_update():
    device, links, applied = converge(BASE)
    moved = [BASE[0], peer(A, "10.0.0.2", "192.0.2.77:40000"), BASE[2]]
    ops, _ = step(device, links, applied, moved)
    assert ops == [UpdatePeer(PeerConfig(A, "192.0.2.77:40000", ("10.0.0.2/32",)))]
    assert device.read().peers[A].endpoint == "192.0.2.77:40000"


def test_roamed_endpoint_is_left_alone():
    """WireGuard learned a better endpoint (NAT): an unrelated change must not revert it."""
    device, links, applied = converge(BASE)
    device.state.peers[A] = PeerConfig(A, "198.51.100.200:61000", ("10.0.0.2/32",))
    ops, _ = step(device, links, applied, BASE + [peer(C, "10.0.0.4")])
    assert ops == [AddPeer(PeerConfig(C, "203.0.113.9:51820", ("10.0.0.4/32",)))]
    assert device.read().peers[A].endpoint == "198.51.100.200:61000"


def test_child_prefix_change():
    device, links, applied = converge(BASE)
    changed = BASE[:2] + [peer(B, "10.0.0.3", "203.0.113.3:51820", ["172.28.0.0/24"])]
    ops, _ = step(device, links, applied, changed)
    assert ops == [UpdatePeer(PeerConfig(B, None, ("10.0.0.3/32", "172.28.0.0/24"))),
                   RemoveRoute("172.24.0.0/24"), AddRoute("172.28.0.0/24")]
    assert device.read().peers[B].endpoint == "203.0.113.3:51820"  # kept


def test_rekey_same_address():
    device, links, applied = converge(BASE)
    rekeyed = [BASE[0], peer(C, "10.0.0.2", "203.0.113.2:51820"), BASE[2]]
    ops, _ = step(device, links, applied, rekeyed)
    assert ops == [RemovePeer(A), AddPeer(PeerConfig(C, "203.0.113.2:51820", ("10.0.0.2/32",)))]
    assert device.operations == 2


def test_no_op():
    device, links, applied = converge(BASE)
    ops, _ = step(device, links, applied, list(reversed(BASE)))
    assert ops == [] and device.operations == 0 and links.log == []


def test_routes_we_did_not_add_are_not_ours():
    device, links, applied = converge(BASE)
    # LinkConfig.routes() lists only routes carrying our protocol mark; a foreign route
    # never appears there, so the diff can never remove it.
    ops = diff(applied, applied, device.read(), links.routes())
    assert ops == []

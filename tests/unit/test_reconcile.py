"""Pure reconcile: each zone change yields exactly the expected device operations."""
from __future__ import annotations

from aircrew.applier import apply_ops
from aircrew.device import PeerConfig, RecordingDevice
from aircrew.reconcile import (AddPeer, AddRoute, Applied, Desired, RemovePeer, RemoveRoute, ResetPeer,
                               UpdatePeer, desired, diff)
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


def test_endpoint_change_is_one_reset():
    """The zone moved a peer: one operation that also drops its old session, so WireGuard
    handshakes with the new endpoint at once (not after its 15 s no-reply rule)."""
    device, links, applied = converge(BASE)
    moved = [BASE[0], peer(A, "10.0.0.2", "192.0.2.77:40000"), BASE[2]]
    ops, _ = step(device, links, applied, moved)
    assert ops == [ResetPeer(PeerConfig(A, "192.0.2.77:40000", ("10.0.0.2/32",)))]
    assert device.read().peers[A].endpoint == "192.0.2.77:40000"


def test_path_endpoint_overrides_the_zone():
    """A peer on a relay keeps the relay as its endpoint whatever the zone advertises."""
    zone = {p.key: p for p in BASE}
    want = desired(ME, zone.values(), endpoints={A: "203.0.113.10:3480"})
    assert want.peers[A].endpoint == "203.0.113.10:3480"
    applied = Applied.of(ME, zone, {A: "203.0.113.10:3480"})
    assert applied.peers[A].endpoint == "203.0.113.10:3480"
    moved = dict(zone)
    moved[A] = peer(A, "10.0.0.2", "192.0.2.77:40000")
    assert applied.diff(ME, {A}, moved, {A: "203.0.113.10:3480"}) == []


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


# -- one update at a time: Applied.diff over the touched peers only -----------------------

def zone_of(peers):
    return {p.key: p for p in peers}


def test_applied_diff_touches_only_the_changed_peer():
    others = [peer(public_key_of(generate_private_key()), f"10.1.{i // 250}.{i % 250 + 1}")
              for i in range(300)]
    zone = zone_of(BASE + others)
    applied = Applied.of(ME, zone)
    assert applied.peers == desired(ME, zone.values()).peers
    assert applied.routes() == {"172.24.0.0/24"}
    moved = peer(A, "10.0.0.2", "192.0.2.77:40000")
    zone[A] = moved
    assert applied.diff(ME, {A}, zone) == [ResetPeer(PeerConfig(A, "192.0.2.77:40000",
                                                                 ("10.0.0.2/32",)))]
    applied.record(ME, {A}, zone)
    assert applied.peers[A].endpoint == "192.0.2.77:40000"
    assert applied.diff(ME, {A}, zone) == []            # recorded: nothing left to do


def test_applied_diff_join_leave_and_routes():
    zone = zone_of(BASE)
    applied = Applied.of(ME, zone)
    zone[C] = peer(C, "10.0.0.4", "198.51.100.4:4000", ["172.25.0.0/24"])
    assert applied.diff(ME, {C}, zone) == [
        AddPeer(PeerConfig(C, "198.51.100.4:4000", ("10.0.0.4/32", "172.25.0.0/24"))),
        AddRoute("172.25.0.0/24")]
    applied.record(ME, {C}, zone)
    del zone[B]
    assert applied.diff(ME, {B}, zone) == [RemovePeer(B), RemoveRoute("172.24.0.0/24")]
    applied.record(ME, {B}, zone)
    assert set(applied.peers) == {A, C} and applied.routes() == {"172.25.0.0/24"}
    # A prefix moving from one peer to another in one update: the route stays.
    zone[A] = peer(A, "10.0.0.2", "203.0.113.2:51820", ["172.25.0.0/24"])
    zone[C] = peer(C, "10.0.0.4", "198.51.100.4:4000")
    ops = applied.diff(ME, {A, C}, zone)
    assert not any(isinstance(op, (AddRoute, RemoveRoute)) for op in ops)
    assert [type(op) for op in ops] == [UpdatePeer, UpdatePeer]


def test_applied_diff_ignores_our_own_record():
    zone = zone_of(BASE)
    applied = Applied.of(ME, zone)
    zone[ME] = peer(ME, "10.0.0.1", "192.0.2.1:1")
    assert applied.diff(ME, {ME}, zone) == []
    applied.record(ME, {ME}, zone)
    assert ME not in applied.peers


def test_incremental_and_whole_zone_reconcile_agree():
    """A run of zone changes applied one at a time over the touched peers leaves the
    device exactly as the whole-zone diff against the device would, with the same ops."""
    import random
    rng = random.Random(6)
    keys = [public_key_of(generate_private_key()) for _ in range(40)]
    zone = zone_of([peer(k, f"10.2.0.{i + 1}", f"203.0.113.{i + 1}:51820",
                         [f"172.30.{i}.0/24"] if i % 4 == 0 else [])
                    for i, k in enumerate(keys[:20])])
    device, links, _ = converge(zone.values())
    applied = Applied.of(ME, zone)
    spare = keys[20:]
    for step_no in range(60):
        kind = rng.choice(["join", "leave", "move", "prefix"])
        if kind == "join" and spare:
            key = spare.pop()
            zone[key] = peer(key, f"10.2.1.{step_no + 1}", f"198.51.100.{step_no + 1}:4000")
        elif kind == "leave" and len(zone) > 2:
            key = rng.choice(sorted(zone))
            del zone[key]
        else:
            key = rng.choice(sorted(zone))
            old = zone[key]
            prefixes = () if old.child_prefixes else (f"172.31.{step_no}.0/24",)
            zone[key] = peer(key, old.address, f"192.0.2.{step_no + 1}:{step_no + 1000}"
                             if kind == "move" else old.endpoint, prefixes)
        whole = diff(desired(ME, zone.values()), applied.desired(), device.read(), links.routes())
        ops = applied.diff(ME, {key}, zone)
        assert ops == whole
        apply_ops(device, links, ops)
        applied.record(ME, {key}, zone)
        want = desired(ME, zone.values())
        assert device.read().peers == want.peers and links.routes() == want.routes


def test_mirror_names_the_peers_an_update_touched():
    from aircrew.mirror import ZoneMirror
    from wire.messages import Change, ZoneUpdate
    mirror = ZoneMirror()
    mirror.load(3, zone_of(BASE))
    update = ZoneUpdate("z", 2, 5, (Change(3, "remove", key=A), Change(4, "remove", key=B),
                                    Change(5, "upsert", peer=peer(C, "10.0.0.4"))))
    mirror.apply(update)
    assert mirror.touched == {B, C}        # revision 3 was already in the snapshot
    mirror.apply(ZoneUpdate("z", 4, 5, ()))
    assert mirror.touched == set()

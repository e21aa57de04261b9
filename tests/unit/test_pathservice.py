"""PathService: the decisions a tick hands its caller, and those it owes (pure: a fake
port socket records what would be sent)."""
from __future__ import annotations

import base64
import os

from aircrew.paths import RELAYED, NodeView
from aircrew.pathservice import PathService, PeerLink
from aircrew.relaybook import RelayInfo
from wire import x25519


class RecordingSocket:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send(self, data: bytes, destination: tuple[str, int]) -> None:
        self.sent.append((data, destination))

    def receive(self):
        return None


def keypair() -> tuple[str, str]:
    private = os.urandom(32)
    return (base64.b64encode(private).decode(),
            base64.b64encode(x25519.public_key(private)).decode())


RELAYS = [RelayInfo(rid, host, 3480, keypair()[1], rid[:2])
          for rid, host in (("ra-1", "203.0.113.10"), ("rb-1", "203.0.113.20"))]


def service_with_relays(own_private: str, relays: list[RelayInfo]) -> PathService:
    """A service with ``relays`` alive (the first nearer)."""
    service = PathService(own_private, "default", 51820, port_socket=RecordingSocket())
    service.set_relays(relays)
    for n, relay in enumerate(relays):
        service.book.sent(relay.id, relay.id.encode(), 0.0)
        service.book.answered(relay.id, relay.id.encode(), 0.001 * (n + 1),
                              ("198.51.100.1", 5), b"boot0000")
    return service


def service_and_peer(decider: bool) -> tuple[PathService, NodeView, NodeView]:
    """A service of a node behind a NAT with two relays alive (ra nearer), and a peer
    behind a NAT; ``decider``: our key is the smaller (we re-create on a move)."""
    while True:
        (own_private, own_key), (_, peer_key) = keypair(), keypair()
        if (own_key < peer_key) == decider:
            break
    service = service_with_relays(own_private, RELAYS)
    own = NodeView(own_key, "198.51.100.1:40000", "symmetric")
    peer = NodeView(peer_key, "198.51.100.2:40000", "symmetric", relay="ra-1")
    return service, own, peer


def kill(service: PathService, rid: str) -> None:
    service.book.relays[rid].misses = service.book.timing.dead_after


def test_first_decision_is_relayed_through_the_pairs_relay():
    service, own, peer = service_and_peer(decider=True)
    changes = service.take_changes(service.tick(1.0, own, {peer.key: peer}, {}))
    assert changes[peer.key].mode == RELAYED and changes[peer.key].relay == "ra-1"
    assert changes[peer.key].endpoint == "203.0.113.10:3480" and changes[peer.key].fresh


def test_a_move_decided_by_a_reconcile_tick_is_still_handed_over():
    """The relay failover that never came back: the tick that saw the pair's relay dead
    ran for a reconcile (which applies endpoints only); the next tick found nothing
    changed, so the peer was never re-created on the other relay."""
    service, own, peer = service_and_peer(decider=True)
    service.take_changes(service.tick(1.0, own, {peer.key: peer}, {}))
    assert service.take_changes(service.tick(1.25, own, {peer.key: peer}, {})) == {}
    kill(service, "ra-1")
    service.tick(1.5, own, {peer.key: peer}, {}, keep=True)      # a reconcile's tick
    changes = service.take_changes(service.tick(1.75, own, {peer.key: peer}, {}))
    assert peer.key in changes, "the move onto rb-1 was swallowed"
    moved = changes[peer.key]
    assert moved.relay == "rb-1" and moved.endpoint == "203.0.113.20:3480" and moved.fresh
    assert service.take_changes(service.tick(2.0, own, {peer.key: peer}, {})) == {}


def test_an_owed_recreation_stays_one():
    service, own, peer = service_and_peer(decider=True)
    service.take_changes(service.tick(1.0, own, {peer.key: peer}, {}))
    kill(service, "ra-1")
    assert service.tick(1.5, own, {peer.key: peer}, {}, keep=True)[peer.key].fresh
    service.book.relays["ra-1"].misses = 0                 # back: the pair returns to ra
    later = service.tick(1.75, own, {peer.key: peer}, {}, keep=True)[peer.key]
    assert later.relay == "ra-1"
    changes = service.take_changes({})
    assert changes[peer.key].relay == "ra-1" and changes[peer.key].fresh


def test_a_first_decision_of_a_reconcile_is_not_owed():
    """A reconcile adds a new peer itself (a new device peer handshakes at once): its
    first decision is not carried out a second time."""
    service, own, peer = service_and_peer(decider=False)
    service.tick(1.0, own, {peer.key: peer}, {}, keep=True)
    assert service.take_changes({}) == {}


def test_a_peer_gone_owes_nothing():
    service, own, peer = service_and_peer(decider=True)
    service.take_changes(service.tick(1.0, own, {peer.key: peer}, {}))
    kill(service, "ra-1")
    service.tick(1.5, own, {peer.key: peer}, {}, keep=True)
    service.tick(1.75, own, {}, {}, keep=True)
    assert service.take_changes({}) == {}


def test_changes_the_device_refused_are_owed_again():
    service, own, peer = service_and_peer(decider=True)
    service.take_changes(service.tick(1.0, own, {peer.key: peer}, {}))
    kill(service, "ra-1")
    taken = service.take_changes(service.tick(1.5, own, {peer.key: peer}, {}))
    service.give_back(taken)                              # apply_ops raised DeviceError
    again = service.take_changes(service.tick(1.75, own, {peer.key: peer}, {}))
    assert again[peer.key].relay == "rb-1" and again[peer.key].fresh


def test_a_direct_change_of_a_reconcile_is_not_owed():
    """A public peer that moved: the reconcile set its new endpoint; re-creating it after
    the moved node's own handshake would drop that session."""
    service, own, peer = service_and_peer(decider=True)
    public = NodeView(peer.key, "198.51.100.9:51820", "open")
    service.take_changes(service.tick(1.0, own, {peer.key: public}, {}))
    moved = NodeView(peer.key, "198.51.100.10:51820", "open")
    change = service.tick(1.5, own, {peer.key: moved}, {}, keep=True)[peer.key]
    assert change.endpoint == "198.51.100.10:51820" and change.fresh
    assert service.take_changes({}) == {}


def test_a_kick_of_a_reconcile_tick_is_owed_and_the_watch_read_often():
    """A moved public peer with no handshake 0.5 s after its re-creation: the reconcile will
    not re-create it, so the kick is handed over by the next ``take_changes``."""
    service, own, peer = service_and_peer(decider=True)
    public = NodeView(peer.key, "198.51.100.9:51820", "open")
    service.take_changes(service.tick(1.0, own, {peer.key: public}, {}))
    assert not service.watching()
    moved = NodeView(peer.key, "198.51.100.10:51820", "open")
    service.tick(1.5, own, {peer.key: moved}, {}, keep=True)
    assert service.watching()
    links = {peer.key: PeerLink(None, "198.51.100.10:51820")}
    assert not service.tick(1.9, own, {peer.key: moved}, links, keep=True, links_at=1.9)
    change = service.tick(2.1, own, {peer.key: moved}, links, keep=True, links_at=2.05)
    assert change[peer.key].kick and change[peer.key].fresh
    owed = service.take_changes({})
    assert owed[peer.key].kick and owed[peer.key].endpoint == "198.51.100.10:51820"


def test_the_keeper_reads_the_device_every_tick_while_a_moved_peer_waits():
    from aircrew.pathkeeper import LINK_READ, LINK_READ_WATCHING, PathKeeper
    service, own, peer = service_and_peer(decider=True)
    keeper = PathKeeper("", "default", 51820, "tower")
    keeper.service = service
    keeper.set_links(1.0, {})
    assert not keeper.links_due(1.0 + LINK_READ_WATCHING) and keeper.links_due(1.0 + LINK_READ)
    service.tick(1.0, own, {peer.key: NodeView(peer.key, "198.51.100.9:51820", "open")}, {})
    service.tick(1.1, own, {peer.key: NodeView(peer.key, "198.51.100.10:51820", "open")}, {})
    assert keeper.links_due(1.0 + LINK_READ_WATCHING)


def test_the_relayed_peers_kept_by_tick_are_those_its_decisions_say():
    """``relayed`` (what the agent asks at every turn of its follow loop) is kept by
    ``tick``; through peers relayed, direct, moved, their relay dead and gone, it names
    exactly the peers whose decision is RELAYED."""
    import random
    from aircrew.pathkeeper import PathKeeper
    rng = random.Random(12)
    service, own, first = service_and_peer(decider=True)
    keeper = PathKeeper("", "default", 51820, "tower")
    keeper.service = service
    keys = [first.key] + [keypair()[1] for _ in range(7)]
    kinds = [("symmetric", "ra-1"), ("symmetric", "rb-1"), ("open", None), ("full-cone", None)]
    peers: dict[str, NodeView] = {}
    seen = set()
    for n in range(80):
        key = rng.choice(keys)
        if key in peers and rng.random() < 0.3:
            del peers[key]
        else:
            nat, relay = rng.choice(kinds)
            peers[key] = NodeView(key, f"198.51.100.{rng.randrange(1, 9)}:40000", nat,
                                  relay=relay)
        if n == 40:
            kill(service, "ra-1")
        service.tick(1.0 + n * 0.25, own, dict(peers), {}, keep=rng.random() < 0.5)
        scanned = {k for k, d in service.decisions.items() if d.mode == RELAYED}
        assert service.relayed == scanned
        assert keeper.any_relayed() == bool(scanned)
        seen.add(bool(scanned))
    assert seen == {True, False}       # the run had both


def test_a_reconciles_decision_of_the_touched_peers_equals_a_tick_over_every_peer():
    """``tick_some`` (an update's reconcile: the touched peers only) decides each touched
    peer as ``tick(keep=True)`` over every peer would from the same state, owes the same
    for them, forgets the gone ones and leaves the other peers as they were (their
    machines step at the paths loop's ticks only)."""
    import copy
    import random
    rng = random.Random(5)
    own_private, own_key = keypair()
    service = service_with_relays(own_private, RELAYS)
    own = NodeView(own_key, "198.51.100.1:40000", "symmetric")
    keys = [keypair()[1] for _ in range(10)]
    kinds = [("symmetric", "ra-1"), ("symmetric", "rb-1"), ("open", None), ("full-cone", None)]

    def view(key: str) -> NodeView:
        nat, relay = rng.choice(kinds)
        return NodeView(key, f"198.51.100.{rng.randrange(2, 6)}:40000", nat, relay=relay)
    peers = {k: view(k) for k in keys[:6]}
    now, compared = 1.0, 0
    for n in range(90):
        now += 0.25
        if n == 45:
            kill(service, "ra-1")
        if n % 3 == 0:       # the paths loop's tick, over every peer
            service.take_changes(service.tick(now, own, dict(peers), {}))
            continue
        touched = set(rng.sample(keys, rng.randrange(1, 4)))
        for key in touched:
            if key in peers and rng.random() < 0.3:
                del peers[key]
            else:
                peers[key] = view(key)
        whole = copy.deepcopy(service)
        untouched = {k: (d, copy.deepcopy(service.machines[k]).__dict__)
                     for k, d in service.decisions.items() if k not in touched}
        whole.tick(now, own, dict(peers), {}, keep=True)
        service.tick_some(now, own, {k: peers[k] for k in touched if k in peers},
                          [k for k in touched if k not in peers], {})
        for key in touched:
            assert service.decisions.get(key) == whole.decisions.get(key)
            assert (key in service.machines) == (key in peers) == (key in whole.machines)
            compared += key in peers
        assert service.endpoints(touched) == {k: whole.decisions[k].endpoint
                                              for k in touched if k in peers}
        assert {k: d for k, d in service._owed.items() if k in touched} == \
            {k: d for k, d in whole._owed.items() if k in touched}
        assert service.relayed == {k for k, d in service.decisions.items()
                                   if d.mode == RELAYED}
        for key, (decision, machine) in untouched.items():
            assert service.decisions[key] is decision
            assert service.machines[key].__dict__ == machine
    assert compared > 50


def test_the_keeper_decides_the_keys_it_is_given_from_the_zones_records():
    """``PathKeeper.decide(..., keys)``: the touched peers of the zone decided, a touched
    key no longer in the zone (and this node's own) forgotten, the others untouched; the
    endpoints of the touched keys are those decisions'."""
    from aircrew.pathkeeper import PathKeeper
    from wire.messages import Peer
    own_private, own_key = keypair()
    keeper = PathKeeper("", "default", 51820, "tower")
    keeper.service = service_with_relays(own_private, RELAYS)
    own = NodeView(own_key, "198.51.100.1:40000", "symmetric")
    a, b, c = (keypair()[1] for _ in range(3))
    zone = {k: Peer(key=k, address=f"10.4.0.{n + 2}", endpoint=f"198.51.100.{n + 2}:40000",
                    nat_type="symmetric") for n, k in enumerate((own_key, a, b))}
    keeper.decide(1.0, own, zone)                         # a resync: every peer
    assert set(keeper.service.machines) == {a, b}
    before_b = keeper.service.decisions[b]
    del zone[a]
    zone[c] = Peer(key=c, address="10.4.0.9", endpoint="203.0.113.9:51820", nat_type="open")
    keeper.decide(1.1, own, zone, {a, c, own_key})
    assert set(keeper.service.machines) == {b, c}
    assert keeper.service.decisions[b] is before_b
    assert keeper.endpoints({a, c, own_key}) == {c: "203.0.113.9:51820"}
    assert keeper.endpoints() == {b: before_b.endpoint, c: "203.0.113.9:51820"}


def test_a_direct_move_of_a_peer_an_update_did_not_touch_is_handed_over_by_the_next_tick():
    """A relayed peer whose probes came back goes direct at its next step. An update of
    another peer must not take that step (its reconcile carries out only its own peers'
    changes, and a direct move is not owed): the next tick hands the move over. (Deciding
    every peer at each update lost it until the drift check.)"""
    from aircrew.pathkeeper import PathKeeper
    from wire.messages import Peer
    service, own, peer = service_and_peer(decider=True)
    keeper = PathKeeper("", "default", 51820, "tower")
    keeper.service = service
    other = keypair()[1]
    zone = {k: Peer(key=k, address=f"10.4.0.{n + 2}", endpoint=f"198.51.100.{n + 2}:40000",
                    nat_type="symmetric", relay="ra-1") for n, k in enumerate((peer.key, other))}
    changes = keeper.tick(1.0, own, zone)
    assert changes[peer.key].mode == RELAYED
    machine = service.machines[peer.key]
    for _ in range(2):                                  # two probes acked from its address
        machine.probe_sent(1.1)
        machine.acked(1.1, "198.51.100.2:40001", None)
    zone[other] = Peer(key=other, address="10.4.0.3", endpoint="198.51.100.7:40000",
                       nat_type="symmetric", relay="ra-1")
    keeper.decide(1.2, own, zone, {other})              # the update's reconcile
    changes = keeper.tick(1.25, own, zone)
    assert changes[peer.key].mode != RELAYED
    assert changes[peer.key].endpoint == "198.51.100.2:40001"

"""The agent's per-update reconcile (``Applied.diff``: the touched peers only) against the
whole-zone one, over random zones and updates.

``Applied.diff`` walks the touched peers itself instead of building a ``Desired`` for them
and diffing it; these properties hold it to the formulation it replaced (``diff`` of the
touched peers against what was applied, the other peers' routes kept) and to the whole
zone's diff against a device that holds what was applied: same ops, same order, and the
device and routes end up the same either way.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aircrew.applier import apply_ops
from aircrew.device import DeviceState, PeerConfig, RecordingDevice
from aircrew.reconcile import Applied, Desired, desired, diff
from wire.messages import Peer
from wire.proof import generate_private_key, public_key_of

ME, *OTHERS = (public_key_of(generate_private_key()) for _ in range(7))
KEYS = [ME, *OTHERS]
ADDRESSES = ["10.3.0.1", "10.3.0.2", "fd00::7"]
ENDPOINTS = [None, "203.0.113.1:51820", "203.0.113.2:4000", "[2001:db8::1]:51820"]
PREFIXES = ["172.20.0.0/24", "172.20.1.0/24", "fd10::/64"]     # shared: peers overlap
SETTINGS = settings(max_examples=400, deadline=None, database=None)


class Links:
    def __init__(self) -> None:
        self.ours: set[str] = set()

    def routes(self) -> set[str]:
        return set(self.ours)

    def add_route(self, prefix: str) -> None:
        self.ours.add(prefix)

    def remove_route(self, prefix: str) -> None:
        self.ours.discard(prefix)


def records(key: str) -> st.SearchStrategy[Peer | None]:
    """A peer's record, or None (not in the zone)."""
    return st.none() | st.builds(
        Peer, key=st.just(key), address=st.sampled_from(ADDRESSES),
        endpoint=st.sampled_from(ENDPOINTS),
        child_prefixes=st.lists(st.sampled_from(PREFIXES), unique=True, max_size=2).map(tuple))


zones = st.tuples(*(records(k) for k in KEYS)).map(
    lambda found: {p.key: p for p in found if p is not None})
path_endpoints = st.none() | st.dictionaries(
    st.sampled_from(KEYS), st.sampled_from(ENDPOINTS), max_size=3)


@st.composite
def updates(draw) -> tuple[dict[str, Peer], dict[str, Peer], set[str]]:
    """A zone before, the zone after an update, and the keys the update touched."""
    before = draw(zones)
    touched = set(draw(st.lists(st.sampled_from(KEYS), unique=True, min_size=1, max_size=4)))
    after = dict(before)
    for key in touched:
        record = draw(records(key))
        if record is None:
            after.pop(key, None)
        else:
            after[key] = record
    return before, after, touched


def replaced(applied: Applied, keys: set[str], zone: dict[str, Peer],
             endpoints: dict[str, str | None] | None) -> list:
    """What ``Applied.diff`` computed before it walked the touched peers itself."""
    want = desired(ME, (zone[k] for k in keys if k in zone), endpoints=endpoints)
    before = {k: applied.peers[k] for k in keys if k in applied.peers}
    kept = frozenset().union(*(r for k, r in applied.routes_of.items() if k not in keys))
    return diff(Desired(want.peers, want.routes | kept), Desired(before),
                DeviceState(peers=dict(before)), applied.routes())


def converged(zone: dict[str, Peer], endpoints: dict[str, str | None] | None
              ) -> tuple[RecordingDevice, Links, Applied]:
    device, links = RecordingDevice(), Links()
    applied = Applied.of(ME, zone, endpoints)
    apply_ops(device, links, diff(applied.desired(), Desired(), device.read(), links.routes()))
    return device, links, applied


@SETTINGS
@given(updates(), path_endpoints, path_endpoints)
def test_touched_peers_diff_equals_the_formulation_it_replaced(update, then, now):
    before, after, touched = update
    applied = Applied.of(ME, before, then)
    assert applied.diff(ME, touched, after, now) == replaced(applied, touched, after, now)


@SETTINGS
@given(updates(), path_endpoints, path_endpoints,
       st.dictionaries(st.sampled_from(OTHERS), st.integers(0, 60), max_size=2))
def test_touched_peers_diff_equals_it_for_any_applied_state(update, then, now, keepalives):
    """What was applied may differ from any zone's configs (another keepalive, no
    endpoint known yet): the two still agree."""
    before, after, touched = update
    applied = Applied.of(ME, before, then)
    for key, keepalive in keepalives.items():
        if key in applied.peers:
            old = applied.peers[key]
            applied.peers[key] = PeerConfig(key, None if keepalive % 2 else old.endpoint,
                                            old.allowed_ips, keepalive)
    assert applied.diff(ME, touched, after, now) == replaced(applied, touched, after, now)


@SETTINGS
@given(updates(), path_endpoints)
def test_touched_peers_and_whole_zone_leave_the_same_device(update, endpoints):
    before, after, touched = update
    device, links, applied = converged(before, endpoints)
    whole_device, whole_links, _ = converged(before, endpoints)

    ops = applied.diff(ME, touched, after, endpoints)
    whole = diff(desired(ME, after.values(), endpoints=endpoints), applied.desired(),
                 whole_device.read(), whole_links.routes())
    assert ops == whole
    apply_ops(device, links, ops)
    applied.record(ME, touched, after, endpoints)
    apply_ops(whole_device, whole_links, whole)

    assert device.read().peers == whole_device.read().peers
    assert links.routes() == whole_links.routes() == set(applied.routes())
    want = desired(ME, after.values(), endpoints=endpoints)
    assert links.routes() == want.routes
    assert applied.peers == want.peers
    # The device holds the zone's peers; an endpoint the zone dropped stays as the device
    # had it (WireGuard roams), every other field is the zone's.
    assert device.read().peers.keys() == want.peers.keys()
    for key, config in want.peers.items():
        have = device.read().peers[key]
        assert (have.allowed_ips, have.keepalive) == (config.allowed_ips, config.keepalive)
        if config.endpoint is not None:
            assert have.endpoint == config.endpoint

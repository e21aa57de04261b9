"""The zone mirror: snapshot + updates, gaps and stale updates (pure)."""
from __future__ import annotations

from aircrew.mirror import Outcome, ZoneMirror
from wire.messages import Change, Peer, ZoneUpdate
from wire.proof import generate_private_key, public_key_of

K1, K2 = (public_key_of(generate_private_key()) for _ in range(2))
P1, P2 = Peer(K1, "10.0.0.1"), Peer(K2, "10.0.0.2")


def upd(since, rev, *changes):
    return ZoneUpdate("z", since, rev, tuple(changes))


def test_apply_in_order_then_stale_then_gap():
    m = ZoneMirror()
    assert m.apply(upd(0, 1, Change(1, "upsert", P1))) is Outcome.GAP  # no snapshot yet
    m.load(1, {K1: P1})
    assert m.apply(upd(0, 1, Change(1, "upsert", P1))) is Outcome.STALE
    assert m.apply(upd(1, 3, Change(2, "upsert", P2), Change(3, "remove", key=K1, reason="left"))) \
        is Outcome.APPLIED
    assert m.rev == 3 and set(m.peers) == {K2} and m.removed == {K1: "left"}
    assert m.apply(upd(5, 6, Change(6, "remove", key=K2))) is Outcome.GAP
    assert m.rev == 3


def test_overlapping_update_applies_only_new_changes():
    m = ZoneMirror()
    m.load(2, {K1: P1, K2: P2})
    assert m.apply(upd(1, 3, Change(2, "remove", key=K2), Change(3, "remove", key=K1))) \
        is Outcome.APPLIED
    assert set(m.peers) == {K2}


def test_zone_deleted():
    m = ZoneMirror()
    m.load(0, {})
    assert m.apply(upd(0, 1, Change(1, "zone-deleted"))) is Outcome.ZONE_DELETED

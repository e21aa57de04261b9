import pytest
from aircrew.paths import PathMachine, Env, NodeView, Timing, pair_relay, DIRECT, RELAYED, DOWN

RELAYS = {"r1": "203.0.113.10:3480", "r2": "203.0.113.20:3480"}

class Pair:
    """Two machines and a network whose direct path works or not, per direction."""
    def __init__(self, nat_a="cone", nat_b="cone", relays=RELAYS, homes=("r1", "r1")):
        self.a = NodeView("AAAA", "192.0.2.1:51820", nat_a, homes[0])
        self.b = NodeView("BBBB", "192.0.2.2:51820", nat_b, homes[1])
        self.ma, self.mb = PathMachine("AAAA", "BBBB"), PathMachine("BBBB", "AAAA")
        self.relays = dict(relays); self.ab = self.ba = False
        self.now = 0.0; self.log = []
        self.hs = 1.0
    def env(self, own, peer):
        return Env(own, peer, self.relays, self.hs)
    def tick(self):
        da = self.ma.step(self.now, self.env(self.a, self.b))
        db = self.mb.step(self.now, self.env(self.b, self.a))
        for m, d, peer_m, peer_d, ok_there, ok_back, own in (
                (self.ma, da, self.mb, db, self.ab, self.ba, self.a),
                (self.mb, db, self.ma, da, self.ba, self.ab, self.b)):
            if d.probe_to:
                m.probe_sent(self.now)
                if ok_there:
                    peer_m.probed(self.now, own.endpoint, peer_d.claim)
                    if ok_back:
                        m.acked(self.now, d.probe_to[0], peer_d.claim)
        self.log.append((self.now, da, db))
        self.now += 0.5
        return da, db
    def run(self, seconds):
        end = self.now + seconds
        while self.now < end:
            da, db = self.tick()
        return da, db
    def until(self, pred, limit=120):
        start = self.now
        while self.now - start < limit:
            da, db = self.tick()
            if pred(da, db):
                return self.now - start
        return None

def test_public_pair_direct_at_once_without_probes():
    p = Pair("open", "symmetric")
    da, db = p.tick()
    assert da.mode == db.mode == DIRECT and not da.fresh and da.probe_to == () and da.endpoint == p.b.endpoint

def test_nat_pair_starts_on_relay_fresh():
    p = Pair("symmetric", "cone")
    da, db = p.tick()
    assert da.mode == db.mode == RELAYED and da.fresh and db.fresh and da.endpoint == RELAYS["r1"]
    da, db = p.tick()
    assert not da.fresh and not db.fresh

def test_punchable_pair_moves_to_direct_and_both_agree():
    p = Pair(); p.ab = p.ba = True
    took = p.until(lambda a, b: a.mode == b.mode == DIRECT)
    assert took is not None and took <= 10
    da, db = p.tick()
    assert not da.fresh and not db.fresh and da.endpoint == p.b.endpoint
    # stays there (no flapping) for minutes
    for _ in range(600):
        da, db = p.tick(); assert da.mode == db.mode == DIRECT

def test_unpunchable_stays_relayed():
    p = Pair("symmetric", "symmetric")
    p.run(120)
    assert all(a.mode == b.mode == RELAYED for _, a, b in p.log)

def test_one_way_direct_is_not_used():
    p = Pair(); p.ab = True
    p.run(60)
    assert all(a.mode == b.mode == RELAYED for _, a, b in p.log)

def test_direct_breaks_both_fall_back_then_holddown():
    p = Pair(); p.ab = p.ba = True
    p.until(lambda a, b: a.mode == b.mode == DIRECT)
    p.ab = p.ba = False
    took = p.until(lambda a, b: a.mode == b.mode == RELAYED)
    assert took is not None and took <= 12
    fresh = [e for _, a, b in p.log[-3:] for e in (a, b) if e.fresh]
    assert fresh
    p.ab = p.ba = True      # repaired at once: hold-down keeps it relayed for 30 s
    t0 = p.now
    took = p.until(lambda a, b: a.mode == b.mode == DIRECT)
    assert 30 <= took <= 40
    # a second break doubles the hold-down
    p.ab = p.ba = False; p.until(lambda a, b: a.mode == b.mode == RELAYED)
    p.ab = p.ba = True
    took = p.until(lambda a, b: a.mode == b.mode == DIRECT)
    assert 60 <= took <= 70

def test_follower_waits_for_decider_claim():
    p = Pair(); p.ab = p.ba = True
    # the decider (AAAA) is in hold-down: the follower must not go direct alone
    p.ma.holddown_until = 25
    p.run(20)
    assert all(b.mode == RELAYED for _, a, b in p.log)
    took = p.until(lambda a, b: a.mode == b.mode == DIRECT)
    assert took is not None and took <= 10

def test_relay_failover_and_agreement():
    p = Pair(homes=("r1", "r2")); p.run(3)
    assert p.log[-1][1].relay == p.log[-1][2].relay == "r1"   # the decider's home
    del p.relays["r1"]
    p.hs = None                         # no handshake on r2 yet
    da, db = p.tick()
    assert da.relay == db.relay == "r2" and da.fresh and not db.fresh   # only the decider re-creates
    kicked = [b.fresh for _, a, b in [p.log[-1]] + [(0, *p.tick()) for _ in range(5)]]
    assert kicked.count(True) == 1      # the other is kicked once, 2 s later, no handshake came

def test_no_kick_when_the_handshake_came():
    p = Pair(homes=("r1", "r2")); p.run(3)
    del p.relays["r1"]
    p.tick(); p.hs = 0.1
    assert not any(b.fresh for _ in range(8) for a, b in [p.tick()])

def test_no_relay_means_direct_unproven_then_relay_when_one_appears():
    p = Pair(relays={})
    da, db = p.tick(); assert da.mode == DIRECT and not da.fresh
    p.relays.update(RELAYS)
    da, db = p.tick(); assert da.mode == RELAYED and da.fresh

def test_roamed_device_needs_no_second_re_creation():
    m = PathMachine("BBBB", "AAAA"); a = NodeView("AAAA", "192.0.2.1:1", "cone", "r1"); b = NodeView("BBBB", "192.0.2.2:1", "cone", "r1")
    d = m.step(0, Env(b, a, RELAYS, handshake_age=1.0, device_endpoint=RELAYS["r1"]))
    assert d.mode == RELAYED and not d.fresh

def test_down_report():
    m = PathMachine("AAAA", "BBBB"); a = NodeView("AAAA", None, "cone", "r1"); b = NodeView("BBBB", None, "cone", "r1")
    assert m.step(0, Env(a, b, RELAYS, None)).report == RELAYED
    assert m.step(11, Env(a, b, RELAYS, None)).report == DOWN
    assert m.step(12, Env(a, b, RELAYS, 3.0)).report == RELAYED
    assert m.step(13, Env(a, b, RELAYS, 200.0)).report == DOWN

def test_pair_relay_rule():
    a, b = NodeView("A", relay="r2"), NodeView("B", relay="r1")
    assert pair_relay(a, b, RELAYS) == pair_relay(b, a, RELAYS) == "r2"
    assert pair_relay(a, b, {"r1": "x"}) == "r1"
    assert pair_relay(a, b, {"r9": "x", "r3": "y"}) == "r3"
    assert pair_relay(a, b, {}) is None


# -- a direct move whose first handshakes crossed ----------------------------------------

def moved_public(own="AAAA", peer="BBBB"):
    """A machine of ``own`` whose public peer moved at t=10 (re-created then)."""
    m = PathMachine(own, peer)
    a, b = NodeView(own, "192.0.2.1:51820", "open"), NodeView(peer, "192.0.2.2:51820", "open")
    assert not m.step(0, Env(a, b, RELAYS, 1.0, read_at=0)).fresh
    m.peer_moved()
    b = NodeView(peer, "198.51.100.7:51820", "open")
    d = m.step(10, Env(a, b, RELAYS, 11.0, read_at=10))     # last handshake before the move
    assert d.fresh and not d.kick and d.endpoint == b.endpoint
    return m, a, b

def test_no_handshake_after_a_direct_move_kicks_the_decider_after_half_a_second_twice_at_most():
    m, a, b = moved_public()
    kicks = []
    for i in range(1, 41):                       # device read every tick (0.25 s)
        now = 10 + i * 0.25
        d = m.step(now, Env(a, b, RELAYS, now - 9.0, read_at=now))   # still the old handshake
        if d.fresh:
            assert d.kick and d.endpoint == b.endpoint
            kicks.append(now)
    assert kicks == [10.5, 11.0]

def test_the_other_side_kicks_later_so_that_kicks_do_not_cross():
    m, a, b = moved_public("BBBB", "AAAA")
    firsts = [10 + i * 0.25 for i in range(1, 12)
              if m.step(10 + i * 0.25, Env(a, b, RELAYS, None, read_at=10 + i * 0.25)).fresh]
    assert firsts[0] == 11.0

def test_a_handshake_after_the_move_stops_the_watch():
    m, a, b = moved_public()
    assert not m.step(10.5, Env(a, b, RELAYS, 0.3, read_at=10.6)).fresh     # at 10.3
    assert not any(m.step(10 + i, Env(a, b, RELAYS, None, read_at=10 + i)).fresh
                   for i in range(1, 6))

def test_only_a_device_read_made_late_enough_can_kick():
    m, a, b = moved_public()
    # ticks go on, but the latest read of the device is from just after the move
    assert not any(m.step(10 + i * 0.25, Env(a, b, RELAYS, None, read_at=10.1)).fresh
                   for i in range(1, 20))
    assert m.step(16, Env(a, b, RELAYS, None, read_at=15.9)).kick

def test_a_direct_decision_that_moved_nothing_never_kicks():
    p = Pair("open", "symmetric"); p.hs = None
    assert not any(a.fresh or b.fresh for _ in range(20) for a, b in [p.tick()])

def test_a_probed_direct_pair_whose_peer_moved_is_kicked_too():
    p = Pair(); p.ab = p.ba = True
    assert p.until(lambda a, b: a.mode == b.mode == DIRECT) is not None
    p.ma.peer_moved(); p.b = NodeView("BBBB", "198.51.100.7:51820", "cone", "r1"); p.hs = None
    da, _ = p.tick()
    assert da.mode == DIRECT and da.fresh and not da.kick and da.endpoint == p.b.endpoint
    da, _ = p.tick()                                    # 0.5 s later, still no handshake
    assert da.mode == DIRECT and da.fresh and da.kick

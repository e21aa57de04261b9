from aircrew.relaybook import RelayBook, RelayInfo

R1, R2 = RelayInfo("a-1", "203.0.113.10", 3480, "k"), RelayInfo("b-1", "203.0.113.20", 3480, "k")

def answer(book, rid, now, rtt, boot=b"boot0000"):
    book.sent(rid, b"t" + rid.encode(), now)
    return book.answered(rid, b"t" + rid.encode(), now + rtt, ("198.51.100.1", 5), boot)

def test_home_is_nearest_with_hysteresis():
    b = RelayBook(); b.update([R1, R2])
    answer(b, "a-1", 0, 0.010); answer(b, "b-1", 0, 0.005)
    assert b.home == "b-1"
    for t in range(1, 20):
        answer(b, "a-1", t, 0.004)       # only a little nearer now: stay
    assert b.home == "b-1", (b.relays["a-1"].rtt, b.relays["b-1"].rtt)
    for t in range(20, 40):
        answer(b, "a-1", t, 0.001)       # far nearer (under 0.7 of home's RTT): move
    assert b.home == "a-1", (b.relays["a-1"].rtt, b.relays["b-1"].rtt)

def test_dead_after_three_misses_and_failover():
    b = RelayBook(); b.update([R1, R2])
    answer(b, "a-1", 0, 0.001); answer(b, "b-1", 0, 0.002)
    assert b.home == "a-1"
    now = 1.0
    for _ in range(4):
        for rid in b.due(now, {"a-1"}):
            if rid == "a-1":
                b.sent(rid, b"x", now)          # never answered
            else:
                answer(b, rid, now, 0.002)
        now += 1.01
    assert "a-1" not in b.alive() and b.home == "b-1"
    assert now - 1.0 <= 4.1

def test_restart_detected_and_refusal():
    b = RelayBook(); b.update([R1])
    assert answer(b, "a-1", 0, 0.001) is False
    assert answer(b, "a-1", 1, 0.001, boot=b"boot0001") is True
    b.sent("a-1", b"r", 2); b.refused("a-1", b"r", "foreign")
    assert b.alive() == {} and b.home is None

def test_unknown_answers_ignored():
    b = RelayBook(); b.update([R1])
    b.sent("a-1", b"good", 0)
    assert b.answered("a-1", b"evil", 0.1, ("1.2.3.4", 1), b"x") is False
    assert b.alive() == {}

"""The relay's table: who may bind, where handshakes and data go, limits, garbage."""
import os
import random
import time

import pytest

from wire import relaymsg as rm, x25519
from controltower.relay.table import RelayTable, Limits, Send, AddRoute, RemoveRoute
from testbed import wgfake

RELAY_PRIV = x25519.generate_private_key()
RELAY_PUB = x25519.public_key(RELAY_PRIV)

class Node:
    def __init__(self, zone="z", addr=None):
        self.priv = x25519.generate_private_key(); self.pub = x25519.public_key(self.priv)
        self.zone = zone; self.addr = addr or (f"198.51.100.{random.randint(1, 250)}", random.randint(1024, 65535))
        self.mac_key = rm.derived_key(rm.RELAY_CONTEXT, x25519.exchange(self.priv, RELAY_PUB))
        self.ts = int(time.time() * 1000)
    def bind(self, ts=None, key=None, zone=None):
        self.ts += 1
        return rm.encode_bind(key or self.mac_key, rm.Bind(os.urandom(8), ts or self.ts, self.pub, zone or self.zone))

class Members:
    def __init__(self): self.zones = {}
    def add(self, n): self.zones.setdefault(n.zone, set()).add(n.pub)
    def serves(self, zone): return zone in self.zones
    def is_member(self, zone, key): return key in self.zones.get(zone, ())

def table(limits=Limits()):
    members = Members()
    t = RelayTable(lambda k: rm.derived_key(rm.RELAY_CONTEXT, x25519.exchange(RELAY_PRIV, k)), b"boot0001", members, limits)
    return t, members

def bound(t, members, *nodes):
    now = time.time()
    for n in nodes:
        members.add(n)
        acts = t.handle(n.bind(), n.addr, now)
        ok = rm.decode(acts[-1].data)
        assert isinstance(ok, rm.BindOk) and ok.address == n.addr and rm.mac_valid(n.mac_key, acts[-1].data)

def handshake(t, a, b, now=None):
    now = now or time.time()
    ia, ib = os.urandom(4), os.urandom(4)
    acts = t.handle(wgfake.initiation(ia, b.pub), a.addr, now)
    assert [type(x) for x in acts] == [Send] and acts[0].destination == b.addr
    acts = t.handle(wgfake.response(ib, ia, a.pub), b.addr, now)
    assert [type(x) for x in acts] == [AddRoute, AddRoute, Send] and acts[-1].destination == a.addr
    return ia, ib

def test_pair_routes_both_ways():
    t, m = table(); a, b = Node(), Node(); bound(t, m, a, b)
    ia, ib = handshake(t, a, b)
    now = time.time()
    out = t.handle(wgfake.transport(ib), a.addr, now); assert out[0].destination == b.addr
    out = t.handle(wgfake.transport(ia), b.addr, now); assert out[0].destination == a.addr
    # the index alone is not enough: the route is keyed by the sender's address too
    c = Node(); bound(t, m, c)
    assert t.handle(wgfake.transport(ib), c.addr, now) == []
    assert t.pairs(now) == 1

def test_initiation_goes_only_to_its_responder_in_its_zone():
    t, m = table(); a, b, c = Node(), Node(), Node(); x = Node(zone="other")
    bound(t, m, a, b, c, x)
    acts = t.handle(wgfake.initiation(os.urandom(4), c.pub), a.addr, time.time())
    assert acts[0].destination == c.addr
    # a node of another zone: its initiation to a member of z finds no responder
    assert t.handle(wgfake.initiation(os.urandom(4), a.pub), x.addr, time.time()) == []
    assert t.counters["dropped:no-responder"] == 1

def test_unbound_sources_get_nothing():
    t, m = table(); a, b = Node(), Node(); bound(t, m, b)
    assert t.handle(wgfake.initiation(os.urandom(4), b.pub), a.addr, time.time()) == []
    assert t.counters["dropped:unbound"] == 1

@pytest.mark.parametrize("case", ["forged", "expired", "replayed", "foreign", "unknown-zone"])
def test_bind_refused(case):
    t, m = table(); a = Node(); m.add(a)
    now = time.time()
    if case == "forged":
        data = a.bind(key=os.urandom(32))
    elif case == "expired":
        data = a.bind(ts=int((now - 120) * 1000))
    elif case == "replayed":
        data = a.bind(); t.handle(data, a.addr, now)
    elif case == "foreign":
        data = Node().bind()
    else:
        data = a.bind(zone="nope")
    acts = t.handle(data, a.addr, now)
    msg = rm.decode(acts[-1].data)
    want = "expired" if case == "replayed" else case
    assert isinstance(msg, rm.BindRefused) and msg.reason == want
    assert (len(t.bindings) == 1) == (case == "replayed")

def test_moved_node_loses_old_routes():
    t, m = table(); a, b = Node(), Node(); bound(t, m, a, b); handshake(t, a, b)
    a.addr = ("192.0.2.99", 4000)
    acts = t.handle(a.bind(), a.addr, time.time())
    assert sum(isinstance(x, RemoveRoute) for x in acts) == 2 and not t.routes

def test_member_removed_is_dropped_with_routes():
    t, m = table(); a, b = Node(), Node(); bound(t, m, a, b); handshake(t, a, b)
    m.zones["z"].discard(a.pub)
    acts = t.recheck_members()
    assert len(acts) == 2 and a.pub not in t.by_key and not t.routes

def test_peer_limit_and_handshake_rate():
    t, m = table(Limits(max_peers_per_node=2, handshakes_per_second=1, handshake_burst=5))
    a = Node(); others = [Node() for _ in range(3)]; bound(t, m, a, *others)
    handshake(t, a, others[0]); handshake(t, a, others[1])
    assert t.handle(wgfake.initiation(os.urandom(4), others[2].pub), a.addr, time.time()) == []
    assert t.counters["dropped:peer-limit"] == 1
    for _ in range(10):
        t.handle(wgfake.initiation(os.urandom(4), others[0].pub), a.addr, time.time())
    assert t.counters["dropped:handshake-rate"] >= 5
    # the others are not disturbed
    ia, ib = handshake(t, others[1], others[2])

def test_expiry():
    t, m = table(); a, b = Node(), Node(); bound(t, m, a, b); handshake(t, a, b)
    later = time.time() + 31
    acts = t.expire(later)
    assert not t.bindings and not t.routes and len(acts) == 2

def test_response_needs_pending_and_mac1():
    t, m = table(); a, b = Node(), Node(); bound(t, m, a, b)
    ia = os.urandom(4)
    t.handle(wgfake.initiation(ia, b.pub), a.addr, time.time())
    assert t.handle(wgfake.response(os.urandom(4), ia, b.pub), b.addr, time.time()) == []   # mac1 for the wrong key
    assert t.handle(wgfake.response(os.urandom(4), os.urandom(4), a.pub), b.addr, time.time()) == []
    assert t.handle(wgfake.response(os.urandom(4), ia, a.pub), a.addr, time.time()) == []   # not from the responder
    assert not t.routes

def test_fuzz_100k():
    t, m = table(); a, b = Node(), Node(); bound(t, m, a, b); ia, ib = handshake(t, a, b)
    rnd = random.Random(13)
    seeds = [wgfake.initiation(ia, b.pub), wgfake.response(ib, ia, a.pub), wgfake.cookie(ia),
             wgfake.transport(ib), a.bind(), rm.encode_probe(os.urandom(32), rm.Probe(os.urandom(8), a.pub, b.pub, "direct"))]
    now = time.time()
    t.handle(seeds[4], a.addr, now)       # a bind already delivered: its copies are replays
    for i in range(100_000):
        kind = rnd.random()
        if kind < 0.3:
            data = rnd.randbytes(rnd.randint(0, 200))
        else:
            data = bytearray(rnd.choice(seeds))
            if kind < 0.6:
                data = data[:rnd.randint(0, len(data))]
            else:
                for _ in range(rnd.randint(1, 4)):
                    data[rnd.randrange(len(data))] = rnd.randrange(256)
            data = bytes(data)
        src = rnd.choice([a.addr, b.addr, ("203.0.113.5", 9)])
        t.handle(data, src, now)
    out = t.handle(wgfake.transport(ib), a.addr, now)
    assert out and out[0].destination == b.addr

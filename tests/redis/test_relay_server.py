"""A running relay (Python data path) on loopback with a real Redis: binds, a relayed
pair, refusals, and 10^5 garbage datagrams that leave the pair working; a relay logged in
as its own Redis user, and a removed node dropped."""
from __future__ import annotations

import base64
import os
import random
import socket
import time

import pytest
import redis

from controltower import aclrules
from controltower.acl import AgentCredentials, new_secret
from controltower.nodes import Nodes
from controltower.relay.server import make_relay
from ipam.store import ZoneStore
from testbed import wgfake
from wire import identity, relaymsg as rm, x25519
from wire.keys import Keys


class Node:
    def __init__(self, relay_public: bytes, zone: str = "default") -> None:
        self.private = x25519.generate_private_key()
        self.public = x25519.public_key(self.private)
        self.key = base64.b64encode(self.public).decode()
        self.zone = zone
        self.mac = rm.derived_key(rm.RELAY_CONTEXT, x25519.exchange(self.private, relay_public))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2)

    def bind(self, relay) -> rm.Message:
        self.sock.sendto(rm.encode_bind(self.mac, rm.Bind(os.urandom(8), int(time.time() * 1000),
                                                          self.public, self.zone)), relay)
        return rm.decode(self.sock.recv(2048))

    def recv(self) -> bytes | None:
        try:
            return self.sock.recv(4096)
        except TimeoutError:
            return None


@pytest.fixture
def relay(redis_client):
    keys = Keys()
    redis_client.sadd(keys.zones, "default", "other")
    server = make_relay(redis_client, keys, x25519.generate_private_key(), region="test",
                        host=None, listen="127.0.0.1", port=0, datapath="user")
    server.start()
    yield server, redis_client, keys
    server.stop()


def member(redis_client, keys, node: Node) -> Node:
    redis_client.hset(keys.peers(node.zone), node.key, "{}")
    return node


def test_relayed_pair_refusals_and_garbage(relay):
    server, r, keys = relay
    addr = ("127.0.0.1", server.bound_port)
    record = r.hget(keys.relays, server.directory.record.id)
    assert record and f'"port":{server.bound_port}' in record
    a = member(r, keys, Node(server.public_key))
    b = member(r, keys, Node(server.public_key))
    assert isinstance(a.bind(addr), rm.BindOk) and isinstance(b.bind(addr), rm.BindOk)
    stranger = Node(server.public_key)                       # not a member of the zone
    refused = stranger.bind(addr)
    assert isinstance(refused, rm.BindRefused) and refused.reason == "foreign"
    other = member(r, keys, Node(server.public_key, zone="other"))
    assert isinstance(other.bind(addr), rm.BindOk)

    ia, ib = os.urandom(4), os.urandom(4)
    a.sock.sendto(wgfake.initiation(ia, b.public), addr)
    assert b.recv()[:1] == b"\x01"
    b.sock.sendto(wgfake.response(ib, ia, a.public), addr)
    assert a.recv()[:1] == b"\x02"
    data = wgfake.transport(ib, 128)
    a.sock.sendto(data, addr)
    assert b.recv() == data
    # a node of another zone cannot reach b: its initiation finds no responder
    other.sock.sendto(wgfake.initiation(os.urandom(4), b.public), addr)
    b.sock.settimeout(0.5)
    assert b.recv() is None

    rnd = random.Random(5)
    seeds = [wgfake.initiation(ia, b.public), wgfake.response(ib, ia, a.public),
             wgfake.transport(ib), rm.encode_bind(
                 a.mac, rm.Bind(os.urandom(8), 1, a.public, "default"))]
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(100_000):
        kind = rnd.random()
        if kind < 0.3:
            datagram = rnd.randbytes(rnd.randint(0, 200))
        else:
            datagram = bytearray(rnd.choice(seeds))
            if kind < 0.6:
                datagram = datagram[:rnd.randint(0, len(datagram))]
            else:
                datagram[rnd.randrange(len(datagram))] = rnd.randrange(256)
        junk.sendto(bytes(datagram), addr)
        if i % 2000 == 0:
            time.sleep(0.01)         # let the relay keep up (loopback drops on overflow)
    time.sleep(0.5)
    b.sock.settimeout(2)
    while b.recv() is not None:      # whatever the junk made the relay send b
        b.sock.settimeout(0.2)
    b.sock.settimeout(2)
    a.sock.sendto(data, addr)
    assert b.recv() == data
    assert server.errors == 0 and server.threads[0].is_alive()
    stats = server.stats()
    assert stats["bindings"] == 3 and stats["counters"]["dropped:malformed"] > 10_000


def test_a_relay_with_its_own_user_drops_a_removed_node(redis_client, redis_proc):
    """A relay alone logs in as ``ct-relay`` (aclrules.relay): that is all it needs, and
    nothing more. A node the tower removes (tombstone, peer record gone, Redis user
    revoked) loses its binding and its routes at the relay's next member refresh."""
    store = ZoneStore(redis_client)
    keys = store.keys
    store.ensure_default_zone()
    creds = AgentCredentials(redis_client, keys)
    password = new_secret()
    redis_client.execute_command("ACL", "SETUSER", "ct-relay", *aclrules.relay(keys),
                                 f">{password}")
    own = redis.Redis(port=redis_proc.port, username="ct-relay", password=password,
                      decode_responses=True)
    server = make_relay(own, keys, x25519.generate_private_key(), region="test", host=None,
                        listen="127.0.0.1", port=0, datapath="user")
    server.start()                                   # announced, members read: as ct-relay
    try:
        addr = ("127.0.0.1", server.bound_port)
        a, b = Node(server.public_key), Node(server.public_key)
        join, _ = creds.registry.create_join_key("default", store.get_zone("default").network,
                                                 reusable=True)
        for n in (a, b):
            node = store.run(creds.registry.enroll_call("default", join.key_id, n.key,
                                                        identity.digest(new_secret()), "n"))
            creds.apply_node("default", node)
            store.register("default", n.key, listen_port=51820, session="s")
        assert isinstance(a.bind(addr), rm.BindOk) and isinstance(b.bind(addr), rm.BindOk)
        ia, ib = os.urandom(4), os.urandom(4)
        a.sock.sendto(wgfake.initiation(ia, b.public), addr)
        assert b.recv()[:1] == b"\x01"
        b.sock.sendto(wgfake.response(ib, ia, a.public), addr)
        assert a.recv()[:1] == b"\x02"
        data = wgfake.transport(ib, 64)
        a.sock.sendto(data, addr)
        assert b.recv() == data

        for call in (lambda: own.hgetall(keys.peers("default")),      # records: no
                     lambda: own.hset(keys.peers("default"), a.key, "{}"),
                     lambda: own.get(keys.tower_private),
                     lambda: own.hgetall(keys.nodes("default")),
                     lambda: own.publish(keys.updates("default"), "x"),
                     lambda: own.xadd(keys.requests("default"), {"x": "y"})):
            with pytest.raises(redis.exceptions.ResponseError):
                call()

        nodes = Nodes(store, creds)
        nodes.remove(nodes.find(a.key), "deleted")
        start = time.monotonic()
        while server.stats()["bindings"] != 1 and time.monotonic() - start < 20:
            time.sleep(0.1)
        took = time.monotonic() - start
        assert server.stats()["bindings"] == 1 and took < 20     # refresh every 5 s: ≤ 5 s
        b.sock.settimeout(0.5)
        a.sock.sendto(data, addr)
        assert b.recv() is None                                  # its routes are gone too
        assert isinstance(a.bind(addr), rm.BindRefused)
    finally:
        server.stop()

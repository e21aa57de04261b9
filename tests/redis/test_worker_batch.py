"""The request worker's batches against a real redis-server: many requests read at once,
answered each on its own, with a few pipelines per batch.

The requests are queued in the stream first, then the worker is stepped by hand, so each
test knows exactly what one batch holds.
"""
from __future__ import annotations

import json
import time

import pytest

from controltower.acl import AgentCredentials
from controltower.worker import RequestWorker
from ipam.store import ZoneStore
from wire.keys import REQUEST_GROUP
from wire.messages import Request
from wire.proof import generate_private_key, public_key_of

BODY = {"listen_port": 51820, "endpoint": "203.0.113.7:51820"}


class Node:
    def __init__(self) -> None:
        self.private = generate_private_key()
        self.key = public_key_of(self.private)
        self.session = "s-" + self.key[:8].replace("/", "_").replace("+", "-")

    def request(self, kind: str, body: dict | None = None, zone: str = "default", **kw) -> Request:
        return Request(kind, zone, self.key, body or {}, session=kw.pop("session", self.session),
                       **kw)


@pytest.fixture
def world(redis_client):
    store = ZoneStore(redis_client, expiry=3600)
    store.ensure_default_zone()
    worker = RequestWorker(store, publish_window=0.0, zone_refresh=0.2, chunk=8)
    listener = redis_client.pubsub(ignore_subscribe_messages=True)
    listener.psubscribe(store.keys.reply_pattern("default"))
    listener.subscribe(store.keys.updates("default"))
    yield store, worker, listener
    listener.close()


def queue(store, worker, zone: str, *entries) -> None:
    """Add stream entries: Requests (signed by their node) or raw field dicts."""
    with store.redis.pipeline(transaction=False) as pipe:
        for entry in entries:
            if isinstance(entry, tuple):
                node, request = entry
                entry = request.signed(node.private, worker.tower_public)
            pipe.xadd(store.keys.requests(zone), entry)
        pipe.execute()


def drain(store, worker, zone: str = "default") -> None:
    stream = store.keys.requests(zone)
    deadline = time.monotonic() + 20
    while store.redis.xlen(stream) or store.redis.xpending(stream, REQUEST_GROUP)["pending"]:
        assert time.monotonic() < deadline, "the worker did not drain the stream"
        worker.step()


def messages(listener, settle: float = 0.5) -> list[tuple[str, dict]]:
    """(kind, message) in arrival order: kind is 'reply' or 'update'."""
    out = []
    quiet_until = time.monotonic() + settle
    while time.monotonic() < quiet_until:
        msg = listener.get_message(timeout=0.05)
        if msg is not None:
            out.append(("reply" if msg["type"] == "pmessage" else "update", json.loads(msg["data"])))
            quiet_until = time.monotonic() + settle
    return out


def replies_by_id(received) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for kind, msg in received:
        if kind == "reply":
            out.setdefault(msg["id"], []).append(msg)
    return out


def test_one_batch_of_mixed_requests_is_answered_request_by_request(world, redis_client):
    store, worker, listener = world
    a, b, c, d, mover = Node(), Node(), Node(), Node(), Node()
    for node in (c, d):
        store.register("default", node.key, listen_port=51820, session=node.session)
    replayed = a.request("register", BODY)
    forged = b.request("register", BODY)
    bad_body = b.request("register", {"listen_port": 0})
    wrong_zone = d.request("heartbeat", zone="elsewhere")
    requests = [
        (a, replayed),
        (a, replayed),                                           # same nonce: a replay
        {"m": forged.to_json(), "mac": "00" * 32},               # bad proof
        {"m": b"[" * 5000, "mac": "00"},                         # poison: dropped
        {"m": json.dumps({"v": 1, "type": "register", "key": b.key, "id": "junk-1"})},
        (b, bad_body),
        (c, c.request("heartbeat")),
        (c, c.request("heartbeat", session="another")),          # superseded
        (d, d.request("endpoint-update", {"endpoint": "198.51.100.1:4000",
                                          "nat_type": "cone"})),
        (d, wrong_zone),
        (mover, mover.request("register", BODY)),
        (c, c.request("leave")),
    ]
    queue(store, worker, "default", *requests)
    drain(store, worker)
    got = replies_by_id(messages(listener))

    granted, refused = sorted(got[replayed.id], key=lambda r: not r["ok"])  # (any order)
    assert granted["ok"] and granted["address"] == "10.200.0.3"
    assert refused == dict(refused, ok=False, code="forbidden", error="replayed request refused")
    assert got[forged.id][0]["code"] == "forbidden"
    assert "bad proof of possession" in got[forged.id][0]["error"]
    assert got["junk-1"][0]["code"] == "invalid"
    assert got[bad_body.id][0]["code"] == "invalid"
    assert got[wrong_zone.id][0]["code"] == "forbidden"
    heartbeat_ok, superseded = (got[r.id][0] for _, r in requests[6:8])
    assert heartbeat_ok == dict(heartbeat_ok, ok=True, type="heartbeat")
    assert superseded["code"] == "superseded"
    endpoint, _, moved, left = (got[r.id][0] for _, r in requests[8:])
    assert endpoint["ok"] and endpoint["rev"] >= 3
    assert moved["ok"] and moved["address"] == "10.200.0.4"
    assert left["ok"]
    assert len(got) == 10 and all(len(v) == 1 for k, v in got.items() if k != replayed.id)
    peers = {p.key: p for p in store.peers("default")}
    assert set(peers) == {a.key, d.key, mover.key}
    assert peers[d.key].endpoint == "198.51.100.1:4000"
    assert worker.handled == len(requests)
    assert redis_client.xlen(store.keys.requests("default")) == 0


def test_large_batch_publishes_between_chunks(world):
    """With publish window 0 and chunks of 8, a batch of 40 registrations publishes its
    changes chunk by chunk: the first update goes out before the last reply."""
    store, worker, listener = world
    nodes = [Node() for _ in range(40)]
    queue(store, worker, "default", *[(n, n.request("register", BODY)) for n in nodes])
    drain(store, worker)
    received = messages(listener)
    replies = [m for kind, m in received if kind == "reply"]
    assert len(replies) == 40 and all(r["ok"] for r in replies)
    assert len({r["address"] for r in replies}) == 40
    kinds = [kind for kind, _ in received]
    assert kinds.index("update") < len(kinds) - 1 - kinds[::-1].index("reply")
    updates = [m for kind, m in received if kind == "update"]
    assert len(updates) >= 40 // 8
    revs = [c["rev"] for u in updates for c in u["changes"]]
    assert revs == list(range(1, 41))


def test_scripts_lost_by_redis_are_loaded_and_every_change_published(world, redis_client):
    """After SCRIPT FLUSH (a Redis restart), the calls the pipeline could not run are run
    again, after that pipeline's flush: they must still be published."""
    store, worker, listener = world
    nodes = [Node() for _ in range(3)]
    queue(store, worker, "default", *[(n, n.request("register", BODY)) for n in nodes])
    drain(store, worker)
    messages(listener)
    redis_client.script_flush()
    queue(store, worker, "default", (nodes[0], nodes[0].request("leave")),
          (nodes[1], nodes[1].request("endpoint-update", {"endpoint": "192.0.2.9:9",
                                                           "nat_type": None})))
    drain(store, worker)
    deadline = time.monotonic() + 5
    while worker.publisher.unpublished() and time.monotonic() < deadline:
        worker.step()
    received = messages(listener)
    assert all(m["ok"] for kind, m in received if kind == "reply")
    changes = [c for kind, m in received if kind == "update" for c in m["changes"]]
    assert [c["op"] for c in changes] == ["remove", "upsert"]
    assert redis_client.get(store.keys.published("default")) == redis_client.get(
        store.keys.rev("default"))


def test_one_failing_script_call_fails_only_its_own_request(world, redis_client):
    store, worker, listener = world
    broken, fine = Node(), Node()
    redis_client.hset(store.keys.peers("default"), broken.key, "not a peer record")
    first = broken.request("register", BODY)
    second = fine.request("register", BODY)
    queue(store, worker, "default", (broken, first), (fine, second))
    drain(store, worker)
    got = replies_by_id(messages(listener))
    assert got[first.id][0] == dict(got[first.id][0], ok=False, code="error",
                                    error="internal error in the tower")
    assert got[second.id][0]["ok"] and got[second.id][0]["address"] == "10.200.0.1"


def test_ipv6_zone_through_the_worker(world):
    store, worker, listener = world
    store.create_zone("v6", "fd00:1::/64")
    listener.psubscribe(store.keys.reply_pattern("v6"))
    nodes = [Node() for _ in range(3)]
    worker.step()   # (sees the new zone)
    queue(store, worker, "v6", *[(n, n.request("register", BODY, zone="v6")) for n in nodes])
    drain(store, worker, "v6")
    replies = [m for kind, m in messages(listener) if kind == "reply"]
    assert sorted(r["address"] for r in replies) == ["fd00:1::1", "fd00:1::2", "fd00:1::3"]


def test_reaper_forgets_request_orders_older_than_ten_skew_windows(redis_client):
    store = ZoneStore(redis_client, expiry=3600)
    store.ensure_default_zone()
    worker = RequestWorker(store, zone_refresh=0.2, reap_interval=0.0, clock_skew=60.0)
    applied = store.keys.applied("default")
    now_ms = time.time() * 1000
    redis_client.zadd(applied, {"old": now_ms - 601_000, "recent": now_ms - 599_000})
    worker.step()
    assert redis_client.zrange(applied, 0, -1) == ["recent"]


class PipelineCounter:
    """Counts the pipelines a worker executes (its round trips besides XREADGROUP)."""

    def __init__(self, worker) -> None:
        self.count = 0
        real = worker.redis.pipeline

        def pipeline(*args, **kwargs):
            pipe = real(*args, **kwargs)
            execute = pipe.execute

            def counted(*a, **kw):
                self.count += 1
                return execute(*a, **kw)
            pipe.execute = counted
            return pipe
        worker.redis = worker.store.redis = _Proxy(worker.redis, pipeline)


class _Proxy:
    def __init__(self, client, pipeline) -> None:
        self._client, self.pipeline = client, pipeline

    def __getattr__(self, name):
        return getattr(self._client, name)


def one_batch(store, worker, zone: str, requests) -> int:
    """Queue requests, then let the worker read them as one batch; its pipelines."""
    queue(store, worker, zone, *requests)
    counter = PipelineCounter(worker)
    worker._process(zone, worker.redis.xreadgroup(REQUEST_GROUP, worker.consumer,
                                                   {store.keys.requests(zone): ">"},
                                                   count=worker.batch)[0][1], ack=True)
    worker._publish()
    return counter.count


@pytest.mark.parametrize("count", [1, 64, 130])
def test_a_batch_takes_a_pipeline_per_chunk_and_per_publication_and_one_more(redis_client,
                                                                             count):
    """One pipeline per chunk of 64 (the store calls with their replay guards, the read
    of the changes to publish, the replies of the chunk before), one per publication
    (here, with a window of 0, one per chunk), one for the last replies."""
    store = ZoneStore(redis_client, expiry=3600)
    store.ensure_default_zone()
    worker = RequestWorker(store, publish_window=0.0)
    worker._refresh_zones()
    listener = redis_client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(store.keys.updates("default"))
    listener.psubscribe(store.keys.reply_pattern("default"))
    nodes = [Node() for _ in range(count)]
    pipelines = one_batch(store, worker, "default",
                          [(n, n.request("register", BODY)) for n in nodes])
    chunks = -(-count // 64)
    received = messages(listener)
    updates = [m for kind, m in received if kind == "update"]
    assert len(updates) == chunks and pipelines == chunks + chunks + 1
    assert [c["rev"] for u in updates for c in u["changes"]] == list(range(1, count + 1))
    # Each update leaves before the replies of the requests it carries.
    kinds = [kind for kind, _ in received]
    assert kinds[0] == "update" and kinds.index("reply") > 0
    assert not worker.publisher.unpublished()
    listener.close()


def test_a_register_in_two_steps_is_published_before_its_reply(redis_client):
    """A tower that manages identities reads the node's record first: the register's
    change is read in the pipeline of the step that makes it and published at once,
    before the reply (the read of the node's record with the chunk's reads, the
    register with the read of its change, the publication, the reply)."""
    store = ZoneStore(redis_client, expiry=3600)
    store.ensure_default_zone()
    worker = RequestWorker(store, publish_window=0.02,
                           credentials=AgentCredentials(redis_client, store.keys))
    worker._refresh_zones()
    listener = redis_client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(store.keys.updates("default"))
    listener.psubscribe(store.keys.reply_pattern("default"))
    node = Node()
    assert one_batch(store, worker, "default", [(node, node.request("register", BODY))]) == 4
    received = messages(listener)
    assert [kind for kind, _ in received] == ["update", "reply"]
    assert received[0][1]["changes"][0]["peer"]["key"] == node.key
    assert received[1][1]["ok"] and received[1][1]["rev"] == received[0][1]["rev"]
    assert not worker.publisher.unpublished()
    listener.close()


def test_steps_after_the_first_are_batched_across_the_chunk(world):
    """IPv6 registrations (candidate, then register) and endpoint updates (read, then
    compare-and-set) take the same extra pipelines for one request or for twenty."""
    store, worker, listener = world
    worker.chunk = 64
    store.create_zone("v6", "fd00:1::/64")
    worker._refresh_zones()
    nodes = [Node() for _ in range(20)]
    # The chunk (register: 'need'), candidates, registers, the replies (and the read of
    # the changes made after the chunk's pipeline), their publication.
    assert one_batch(store, worker, "v6", [(n, n.request("register", BODY, zone="v6"))
                                           for n in nodes]) == 1 + 2 + 1 + 1
    updates = [(n, n.request("endpoint-update", {"endpoint": f"192.0.2.{i + 1}:4000",
                                                 "nat_type": "cone"}, zone="v6"))
               for i, n in enumerate(nodes)]
    # The reads of the records ride in the chunk's pipeline; the compare-and-sets: one.
    assert one_batch(store, worker, "v6", updates) == 1 + 1 + 1 + 1
    assert sorted(p.endpoint for p in store.peers("v6")) == sorted(
        f"192.0.2.{i + 1}:4000" for i in range(20))

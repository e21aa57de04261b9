"""Wire-message fuzzing.

1. The parsers (`parse_request`, `parse_update`, `parse_peer`) raise only InvalidInput,
   whatever they are fed (hypothesis: random bytes, random JSON, valid messages with
   fields replaced or bytes mutated).
2. A flood: 20,000 random and mutated requests into the zones' request streams (random
   text and JSON, signed requests with mutated bytes or fields, wrong types, oversized
   fields, bad or missing MACs, wrong zones, stale clocks, foreign sessions, unknown
   nodes) and some 5,000-8,000 junk messages onto the zone's update channel (every one
   refused by parse_update or naming another zone), while a request worker and three
   real agents (aircrew Agent, recording device) run. The worker stays up and answers a
   valid registration afterwards; the agents never drop their session and their
   mirrors and devices are untouched by junk; the zone's state in Redis (every key but
   the replay guards) is byte for byte what it was.
3. Inputs that once crashed a parser, the worker or an agent session (regression tests;
   each names the bug it was): non-UTF-8 bytes, nesting deeper than ~1000, integers
   beyond 1e308, Unicode digits in ports, non-ASCII MACs.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
import uuid

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aircrew.session import TowerSession
from controltower.worker import RequestWorker
from ipam.store import ZoneStore
from testbed import simagent
from testbed.redisserver import RedisProcess
from wire import messages, proof
from wire.errors import InvalidInput
from wire.keys import Keys
from wire.messages import Request
from wire.proof import generate_private_key, public_key_of

KEY = public_key_of(generate_private_key())
VALID_REQUEST = {"v": 1, "type": "register", "id": "r1", "zone": "default", "key": KEY,
                 "session": "s1", "ts": 1763781234.5, "nonce": "0123456789abcdef0123456789abcdef",
                 "body": {"endpoint": "203.0.113.7:51820", "listen_port": 51820,
                          "request_ip": "10.200.0.9", "child_prefixes": ["172.24.0.0/24"],
                          "nat_type": "cone", "hostname": "node1"}}
VALID_PEER = {"key": KEY, "address": "10.200.0.3", "endpoint": "203.0.113.7:51820",
              "child_prefixes": ["172.24.0.0/24"], "listen_port": 51820, "nat_type": "cone",
              "session": "s1", "hostname": "node1", "registered": 0.0}
VALID_UPDATE = {"v": 1, "zone": "default", "since": 16, "rev": 18, "changes": [
    {"rev": 17, "op": "upsert", "peer": VALID_PEER},
    {"rev": 18, "op": "remove", "key": KEY, "reason": "left"}]}

# -- 1. the parsers ---------------------------------------------------------------------

# JSON values; integers bounded to 64 bits and nesting to a few levels (the unbounded
# cases are known crashes, tested in section 3).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12)


def _paths(obj, prefix=()):
    """Every (path) to a dict key or list index inside obj."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


@st.composite
def field_mutations(draw, template):
    """A copy of template with one field replaced, removed, or one unknown field added."""
    obj = json.loads(json.dumps(template))
    path = draw(st.sampled_from(list(_paths(obj))))
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    action = draw(st.sampled_from(["replace", "remove", "add"]))
    if action == "replace":
        parent[path[-1]] = draw(json_values | st.integers(16000, 20000).map(lambda n: "x" * n))
    elif action == "remove":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(st.text(max_size=10))] = draw(json_values)
    else:
        parent.append(draw(json_values))
    return json.dumps(obj).encode()


@st.composite
def byte_mutations(draw, template):
    data = bytearray(json.dumps(template).encode())
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at:]
    return bytes(data)


def payloads(template):
    return (st.binary(max_size=2000) | json_values.map(lambda v: json.dumps(v).encode())
            | field_mutations(template) | byte_mutations(template))


def only_invalid_input(parse, payload) -> None:
    try:
        parse(payload)
    except InvalidInput:
        pass


FUZZ = settings(max_examples=800, deadline=None, suppress_health_check=list(HealthCheck))


def test_templates_are_valid():
    assert messages.parse_request(json.dumps(VALID_REQUEST).encode()).key == KEY
    assert messages.parse_update(json.dumps(VALID_UPDATE)).rev == 18
    assert messages.parse_peer(VALID_PEER).address == "10.200.0.3"


@FUZZ
@given(payloads(VALID_REQUEST))
@example(b"")
@example(b"\xff\xfe\xfd")
@example(json.dumps(dict(VALID_REQUEST, v=True)).encode())
@example(json.dumps(dict(VALID_REQUEST, ts=float("nan"))).encode())
def test_parse_request_raises_only_invalid_input(payload):
    only_invalid_input(messages.parse_request, payload)


@FUZZ
@given(payloads(VALID_UPDATE))
def test_parse_update_raises_only_invalid_input(payload):
    only_invalid_input(messages.parse_update, payload)


@FUZZ
@given(payloads(VALID_PEER) | json_values)
def test_parse_peer_raises_only_invalid_input(payload):
    only_invalid_input(messages.parse_peer, payload)


# -- 2. the flood ----------------------------------------------------------------------------

N_REQUESTS = 20_000
N_UPDATES = 8_000
BATCH = 500
UNICODE = "aé€😀\u0000\u202e\ufffd{}[]\":,\\"


class Junk:
    """Random and mutated wire messages, none of which may change anything."""

    def __init__(self, rng: random.Random, tower_public: str, agents: dict[str, str]) -> None:
        self.rng = rng
        self.tower_public = tower_public
        self.agents = agents                   # public key -> private key (registered)
        self.strangers = [generate_private_key() for _ in range(20)]
        self.mac_keys = {k: proof.mac_key(k, tower_public)
                         for k in self.strangers + list(agents.values())}

    # -- building blocks -------------------------------------------------------------------

    def text(self, n: int) -> str:
        r = self.rng
        return "".join(r.choice(UNICODE) if r.random() < 0.2 else chr(r.randrange(32, 127))
                       for _ in range(n))

    def value(self, depth: int = 0):
        r = self.rng
        kind = r.randrange(8 if depth < 3 else 5)
        if kind == 0:
            return None
        if kind == 1:
            return r.random() < 0.5
        if kind == 2:
            return r.choice([0, -1, 1, 2**31, 2**63, -2**63, r.randrange(-10**6, 10**6)])
        if kind == 3:
            return r.choice([0.5, -1e300, 1e300, float("nan"), float("inf"), r.random()])
        if kind == 4:
            return self.text(r.randrange(0, 40))
        if kind == 5:
            return [self.value(depth + 1) for _ in range(r.randrange(0, 4))]
        if kind == 6:
            return {self.text(r.randrange(0, 8)): self.value(depth + 1) for _ in range(r.randrange(0, 4))}
        return {k: self.value(depth + 1) for k in r.sample(list(VALID_REQUEST), r.randrange(1, 6))}

    def request(self, private: str, kind: str = "register", zone: str = "default",
                session: str | None = None, ts: float | None = None) -> dict:
        r = self.rng
        body = {"register": {"endpoint": f"203.0.113.{r.randrange(1, 255)}:51820",
                             "listen_port": 51820, "child_prefixes": ["172.30.0.0/24"],
                             "nat_type": "cone", "hostname": "fuzz"},
                "endpoint-update": {"endpoint": "198.51.100.3:4000", "nat_type": "cone"}}.get(kind, {})
        return {"v": 1, "type": kind, "id": uuid.uuid4().hex, "zone": zone,
                "key": public_key_of(private), "session": session or uuid.uuid4().hex,
                "ts": time.time() if ts is None else ts, "nonce": uuid.uuid4().hex, "body": body}

    def sign(self, private: str, payload: bytes) -> str:
        return proof.sign(self.mac_keys[private], payload)

    def mutate_text(self, text: str) -> str:
        r = self.rng
        for _ in range(r.randrange(1, 4)):
            if not text:
                break
            at = r.randrange(len(text))
            op = r.randrange(4)
            if op == 0:
                text = text[:at] + self.text(1) + text[at + 1:]
            elif op == 1:
                text = text[:at] + text[at + r.randrange(1, 10):]
            elif op == 2:
                text = text[:at] + self.text(r.randrange(1, 10)) + text[at:]
            else:
                text = text[:at]
        return text

    def replace_field(self, obj: dict) -> dict:
        obj = json.loads(json.dumps(obj))
        path = self.rng.choice(list(_paths(obj)))
        parent = obj
        for step in path[:-1]:
            parent = parent[step]
        roll = self.rng.random()
        if roll < 0.6:
            parent[path[-1]] = self.value() if self.rng.random() < 0.95 else "x" * 17000
        elif roll < 0.8:
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[self.text(5) or "extra"] = self.value()
        return obj

    # -- requests ---------------------------------------------------------------------------

    def stream_entry(self) -> tuple[str, dict]:
        """(zone stream, entry fields): never a request the tower may grant."""
        r = self.rng
        if r.random() < 0.1:     # the other zone's stream: every entry names "default"
            fields = self._entry()
            return ("zone-b" if b"zone-b" not in str(fields).encode() else "default"), fields
        return "default", self._entry()

    def _entry(self) -> dict:
        r = self.rng
        roll = r.random()
        stranger = r.choice(self.strangers)
        if roll < 0.10:      # random text
            return {"m": self.text(r.randrange(0, 300)), "mac": os.urandom(32).hex()}
        if roll < 0.20:      # random JSON
            return {"m": json.dumps(self.value()), "mac": os.urandom(32).hex()}
        if roll < 0.35:      # a signed valid request, then its bytes mutated
            payload = json.dumps(self.request(stranger))
            mutated = self.mutate_text(payload)
            if mutated == payload:
                mutated += " "
            return {"m": mutated, "mac": self.sign(stranger, payload.encode())}
        if roll < 0.55:      # one field replaced, removed or added, then signed
            payload = json.dumps(self.replace_field(self.request(stranger, r.choice(
                messages.REQUEST_TYPES)))).encode()
            mac = self.sign(stranger, payload)
            try:
                messages.parse_request(payload)
                mac = mac[::-1]          # still valid: it must not be granted
            except InvalidInput:
                pass
            return {"m": payload, "mac": mac}
        if roll < 0.70:      # a valid request with a bad MAC
            payload = json.dumps(self.request(stranger)).encode()
            other = r.choice([k for k in self.strangers if k != stranger])
            mac = r.choice(["", os.urandom(32).hex(), os.urandom(7).hex(),
                            self.sign(stranger, payload).upper(), self.sign(other, payload),
                            self.sign(stranger, payload)[:-1], "g" * 64])
            return {"m": payload, "mac": mac} if r.random() < 0.9 else {"m": payload}
        if roll < 0.85:      # signed, but refused: wrong zone, stale clock, wrong session...
            agent_public, agent_private = r.choice(list(self.agents.items()))
            case = r.randrange(5)
            if case == 0:
                req = self.request(stranger, zone="zone-b")
            elif case == 1:
                req = self.request(r.choice([stranger, agent_private]), r.choice(
                    messages.REQUEST_TYPES), ts=time.time() + r.choice([-1000, 1000, -1e9]))
            elif case == 2:      # a registered node's key, another session
                req = self.request(agent_private, r.choice(["heartbeat", "leave",
                                                            "endpoint-update"]))
            else:                # a node that is not registered
                req = self.request(stranger, r.choice(["heartbeat", "leave", "endpoint-update"]))
            signer = agent_private if req["key"] == agent_public else stranger
            payload = json.dumps(req).encode()
            return {"m": payload, "mac": self.sign(signer, payload)}
        if roll < 0.90:      # oversized
            req = self.request(stranger)
            req["body"]["hostname"] = "h" * r.randrange(16400, 20000)
            return {"m": json.dumps(req), "mac": "00"}
        # odd entry layouts
        return r.choice([{"x": "y"}, {"m": ""}, {"mac": "00"}, {"m": "{}", "mac": ""},
                         {"m": json.dumps(self.request(stranger)), "mac": "zz", "extra": "1"}])

    # -- updates -------------------------------------------------------------------------------

    def update(self, peers: list[dict], rev: int) -> str | None:
        """A message for the zone's update channel that no agent may act on, or None."""
        r = self.rng
        valid = {"v": 1, "zone": "default", "since": rev, "rev": rev + 2, "changes": [
            {"rev": rev + 1, "op": "upsert", "peer": dict(r.choice(peers), endpoint="192.0.2.1:1")},
            {"rev": rev + 2, "op": "remove", "key": r.choice(peers)["key"], "reason": "left"}]}
        roll = r.random()
        if roll < 0.15:
            text = self.text(r.randrange(0, 300))
        elif roll < 0.30:
            text = json.dumps(self.value())
        elif roll < 0.55:
            text = self.mutate_text(json.dumps(valid))
        elif roll < 0.85:
            text = json.dumps(self.replace_field(valid))
        elif roll < 0.95:
            return json.dumps(dict(valid, zone="zone-b"))       # another zone's
        else:        # big, and its revisions run backwards
            text = json.dumps(dict(valid, since=rev + 5, pad="x" * r.randrange(10**4, 3 * 10**5)))
        try:
            messages.parse_update(text)
        except InvalidInput:
            return text
        except Exception:  # noqa: BLE001 - a known parser crash (section 3): not here
            return None
        return None        # the mutation left it valid: skip it


def redis_state(client: redis.Redis) -> dict:
    """Every key but replay guards, request streams and the workers' liveness keys,
    with its full content."""
    out = {}
    for key in sorted(client.scan_iter(count=1000)):
        if ":nonce:" in key or key.endswith(":requests") or key.startswith("ct:tower:worker"):
            continue
        kind = client.type(key)
        out[key] = {"hash": client.hgetall, "set": client.smembers, "string": client.get,
                    "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
                    "stream": lambda k: client.xrange(k, "-", "+"),
                    }[kind](key)
    return out


class ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def fuzz_redis():
    proc = RedisProcess(extra=["--appendonly", "no"]).start()
    try:
        yield proc
    finally:
        proc.cleanup()


@pytest.fixture
def worker(fuzz_redis):
    client = fuzz_redis.client()
    store = ZoneStore(client, expiry=3600)
    store.ensure_default_zone()
    store.create_zone("zone-b", "10.201.0.0/20")
    w = RequestWorker(store, publish_window=0.005, zone_refresh=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=w.run, args=(stop,), daemon=True, name="fuzz-worker")
    thread.start()
    w.thread = thread
    try:
        yield w
    finally:
        stop.set()
        thread.join(10)
        client.close()


async def _register(port: int, private: str | None = None, body: dict | None = None,
                    timeout: float = 10.0) -> dict:
    client = await simagent.open_client(port)
    session = TowerSession(client, "default", private or generate_private_key())
    try:
        await session.open()
        return await session.request("register", body or {"listen_port": 51820},
                                     timeout=timeout)
    finally:
        await session.close()
        await client.aclose()


@pytest.mark.slow
async def drained(client) -> None:
    """Let the agents read what was sent before sending more: 5 % of the junk updates
    are 10-300 kB, and a subscriber starved by a loaded machine would fall behind
    Redis's pub/sub output limit (32 MB) and be disconnected, as Redis does with any
    slow subscriber; that is not what this test is about."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(int(c["omem"]) < 2**20 for c in client.client_list(_type="pubsub")):
            return
        await asyncio.sleep(0.01)


def test_flood_of_junk_changes_nothing_and_kills_nothing(worker, fuzz_redis, tmp_path):
    seed = int(os.environ.get("FUZZ_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    client = fuzz_redis.client()
    keys = Keys()
    errors = ErrorCounter()
    quiet = {name: logging.getLogger(name).level
             for name in ("controltower.worker", "controltower.admission",
                          "controltower.publisher", "aircrew.session", "aircrew.agent")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.ERROR)
        logging.getLogger(name).addHandler(errors)

    async def scenario():
        sims = [simagent.make_agent(fuzz_redis.url, tmp_path / f"a{i}", i,
                                     heartbeat_interval=3600, revision_interval=3600,
                                     endpoint_interval=3600) for i in range(3)]
        for sim in sims:
            simagent.start(sim)
        try:
            await _register(fuzz_redis.port, body={"listen_port": 51820,
                                                   "child_prefixes": ["172.25.0.0/24"]})
            await simagent.wait_in_sync(sims, client, 10)
            before = redis_state(client)
            agents_before = [(s.agent.session, s.agent.resyncs, s.agent.mirror.rev,
                              dict(s.agent.mirror.peers), s.device.operations) for s in sims]
            handled_before = worker.handled
            junk = Junk(rng, worker.tower_public,
                        {s.public_key: s.agent.s.private_key for s in sims})
            peers = [json.loads(v) for v in client.hvals(keys.peers("default"))]
            rev = int(client.get(keys.rev("default")))
            started = time.monotonic()
            sent_updates = 0
            for batch in range(N_REQUESTS // BATCH):
                with client.pipeline(transaction=False) as pipe:
                    for _ in range(BATCH):
                        zone, fields = junk.stream_entry()
                        pipe.xadd(keys.requests(zone), fields)
                    per_batch = N_UPDATES // (N_REQUESTS // BATCH)
                    for _ in range(per_batch):
                        text = junk.update(peers, rev)
                        if text is not None:
                            pipe.publish(keys.updates("default"), text)
                            sent_updates += 1
                    await asyncio.to_thread(pipe.execute)
                await drained(client)
                assert time.monotonic() - started < 120, "flood took too long"
            # Wait for the worker to drain both streams.
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if worker.handled - handled_before >= N_REQUESTS and not any(
                        client.xlen(keys.requests(z)) for z in ("default", "zone-b")):
                    break
                assert worker.thread.is_alive(), "the request worker died"
                await asyncio.sleep(0.2)
            elapsed = time.monotonic() - started
            print(f"seed {seed}: {N_REQUESTS} requests, {sent_updates} updates in {elapsed:.1f}s")
            assert worker.thread.is_alive(), "the request worker died"
            assert worker.handled - handled_before >= N_REQUESTS, \
                f"only {worker.handled - handled_before} of {N_REQUESTS} handled (seed {seed})"
            assert sent_updates > N_UPDATES * 0.6
            assert redis_state(client) == before, f"junk changed the zone state (seed {seed})"
            for sim, (session, resyncs, mrev, mpeers, ops) in zip(sims, agents_before):
                assert not sim.errors and not sim.task.done(), sim.errors
                assert sim.agent.session is session, "an agent lost its session to junk"
                assert sim.agent.resyncs == resyncs, "junk made an agent resync"
                assert sim.agent.mirror.rev == mrev and sim.agent.mirror.peers == mpeers
                assert sim.device.operations == ops
            # Still serving: a valid registration is answered and reaches every agent.
            reply = await _register(fuzz_redis.port)
            assert reply["ok"] and reply["rev"] == rev + 1
            await simagent.wait_in_sync(sims, client, 5)
            for sim, (session, resyncs, mrev, _, _) in zip(sims, agents_before):
                assert sim.agent.session is session and sim.agent.resyncs == resyncs
                assert sim.agent.mirror.rev == mrev + 1
        finally:
            await simagent.stop(sims)

    try:
        asyncio.run(asyncio.wait_for(scenario(), 200))
    finally:
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)
            logging.getLogger(name).removeHandler(errors)
        client.close()
    assert not [r.getMessage() for r in errors.records], \
        f"errors logged (internal errors on junk), seed {seed}"


# -- 3. inputs that once crashed (regression tests) ---------------------------------------

def _request_with(**changes) -> bytes:
    req = json.loads(json.dumps(VALID_REQUEST))
    body = changes.pop("body", {})
    req.update(changes)
    req["body"].update(body)
    return json.dumps(req).encode()


BUG_RECURSION = ("wire/messages.py parse_request/parse_update/parse_peer: json.loads raises "
                 "RecursionError on deeply nested JSON ('[' * 5000 fits in 16 KiB); "
                 "only ValueError is caught")
BUG_BIG_INT = ("wire/messages.py: float() of a JSON integer beyond 1e308 raises "
               "OverflowError (parse_request 'ts', parse_peer 'registered')")
BUG_DIGITS = ("wire/messages.py endpoint(): str.isdigit() accepts Unicode digits such as "
              "'²' that int() rejects, so ValueError escapes")


@pytest.mark.parametrize("parse, payload", [
    pytest.param(messages.parse_request, b"[" * 5000, id="request-deep-nesting"),
    pytest.param(messages.parse_update, "[" * 5000, id="update-deep-nesting"),
    pytest.param(messages.parse_request, _request_with(ts=10**400), id="request-huge-ts"),
    pytest.param(messages.parse_peer, dict(VALID_PEER, registered=10**400), id="peer-huge-registered"),
    pytest.param(messages.parse_request, _request_with(body={"endpoint": "203.0.113.7:5²"}),
                 id="request-unicode-digit-port"),
    pytest.param(messages.parse_peer, dict(VALID_PEER, endpoint="203.0.113.7:¹"),
                 id="peer-unicode-digit-port"),
])
def test_known_crashing_inputs_raise_invalid_input(parse, payload):
    with pytest.raises(InvalidInput):
        parse(payload)


BUG_NEWLINE = ("wire/messages.py: the validators use re.match with '$', which also matches "
               "before a trailing newline: 'default\\n' passes zone_name (use fullmatch or \\Z)")


@pytest.mark.parametrize("field", ["zone", "session", "id"])
def test_validators_refuse_a_trailing_newline(field):
    with pytest.raises(InvalidInput):
        messages.parse_request(_request_with(**{field: VALID_REQUEST[field] + "\n"}))


BUG_POISON = ("controltower/worker.py: an exception other than InvalidInput out of "
              "messages.parse_request (RecursionError, OverflowError, ValueError), or a "
              "UnicodeDecodeError raised by redis-py while XREADGROUP decodes a non-UTF-8 "
              "entry (the client has decode_responses=True), escapes handle()/step() and "
              "ends RequestWorker.run(): the worker thread dies, the entry stays pending, and "
              "every replica that claims it dies too")


def _poison_entries() -> list:
    return [
        pytest.param({b"m": b"\xff\xfe{", b"mac": b"00"}, id="non-utf8-bytes"),
        pytest.param({b"m": b"[" * 5000, b"mac": b"00"}, id="deep-nesting"),
        pytest.param({b"m": _request_with(ts=10**400), b"mac": b"00"}, id="huge-ts"),
        pytest.param({b"m": _request_with(body={"endpoint": "203.0.113.7:5²"}), b"mac": b"00"},
                     id="unicode-digit-port"),
    ]


@pytest.mark.parametrize("fields", _poison_entries())
def test_worker_survives_a_poison_request(worker, fuzz_redis, fields):
    raw = redis.Redis(port=fuzz_redis.port)
    try:
        raw.xadd(Keys().requests("default"), fields)
    finally:
        raw.close()
    time.sleep(0.5)
    assert worker.thread.is_alive(), "the request worker thread died"
    reply = asyncio.run(_register(fuzz_redis.port, timeout=5))
    assert reply["ok"]


BUG_INTERNAL = ("controltower/worker.py _authenticate: proof.verify -> hmac.compare_digest "
                "raises TypeError for a 'mac' field with non-ASCII characters; handle() "
                "logs a traceback and answers 'internal error' instead of a forbidden refusal")


def test_non_ascii_mac_is_refused_as_forbidden(worker, fuzz_redis):
    private = generate_private_key()
    payload = Request("register", "default", public_key_of(private),
                      {"listen_port": 51820}).to_json()
    client = fuzz_redis.client()
    pubsub = client.pubsub()
    pubsub.subscribe(Keys().reply("default", public_key_of(private)))
    try:
        pubsub.get_message(timeout=1)
        client.xadd(Keys().requests("default"), {"m": payload, "mac": "é" * 64})
        reply = None
        deadline = time.monotonic() + 5
        while reply is None and time.monotonic() < deadline:
            msg = pubsub.get_message(timeout=1)
            if msg and msg["type"] == "message":
                reply = json.loads(msg["data"])
        assert reply is not None and not reply["ok"]
        assert reply["code"] == "forbidden", reply
    finally:
        pubsub.close()
        client.close()


BUG_AGENT_JUNK = ("aircrew/session.py TowerSession._read: a zone update that is not UTF-8 "
                  "(redis-py decode_responses=True raises UnicodeDecodeError in get_message) "
                  "or a reply whose 'id' is unhashable (_on_reply catches only ValueError; "
                  "dict.get raises TypeError) ends the reader: the session is marked lost and "
                  "the agent reconnects and resyncs (and its never-reset backoff grows)")


@pytest.mark.parametrize("where, data", [("updates", b"\xff\xfe"), ("reply", b'{"id": []}')])
def test_agent_session_survives_junk_on_its_channels(worker, fuzz_redis, tmp_path, where, data):
    client = fuzz_redis.client()

    async def scenario():
        sim = simagent.make_agent(fuzz_redis.url, tmp_path / "a", 1, heartbeat_interval=3600,
                                   revision_interval=3600, endpoint_interval=3600)
        simagent.start(sim)
        try:
            # its first snapshot taken: a lone agent's empty device is "in sync" before it
            # (seen on a loaded machine: the first resync came after and was counted here)
            await simagent.wait_in_sync([sim], client, 30, resynced_since=[0])
            session, resyncs = sim.agent.session, sim.agent.resyncs
            channel = (Keys().updates("default") if where == "updates"
                       else Keys().reply("default", sim.public_key))
            raw = redis.Redis(port=fuzz_redis.port)
            raw.publish(channel, data)
            raw.close()
            await asyncio.sleep(2)
            assert sim.agent.session is session and not session.lost.is_set(), \
                "the agent dropped its session"
            assert sim.agent.resyncs == resyncs
        finally:
            await simagent.stop([sim])
    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        client.close()


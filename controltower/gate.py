"""The gate: where the nodes' requests enter the tower.

Nodes write nothing into Redis. A node publishes each request on its own channel
``ct:{zone}:req:<node id>``; its Redis user may publish there and nowhere else
(controltower/aclrules.py). The gate subscribes to every request channel over
``shards`` connections, split by the first hex digit of the node id (a flood queues
only behind itself), and checks each message before anything is stored:

1. at most ``messages.MAX_MESSAGE_BYTES``, else its sender is suspended at once;
2. a token bucket per sender (``Limits``): ``strikes`` drops suspend it;
3. parse; the request's zone and node are the channel's (the ACL made the channel that
   node's); proof of possession and timestamp (``Admission``);
4. the ``admit`` script: the nonce (replay guard, and the dedup between replicas, which
   all hear every message), then ``XADD`` into the zone's request stream, which only
   the tower writes. The request worker takes it from there.

On a Redis Cluster the requests stay on classic pub/sub (Redis has no sharded pattern
subscription; a classic message reaches every node, so each subscriber connection goes
to any one node), and the answers go out on sharded pub/sub, as the worker's replies.

Enrollment requests (``ct:{zone}:enroll:<credential>:<node id>``) pass the same checks
and are handled here (``Enrollment``): they need ACL commands, which no script may run.

A suspended sender keeps its reads but loses its publish right, and its connections are
cut; the suspension is lifted after ``suspend_for`` seconds, doubled for a repeat.
Measured (docs/security.md): a flood of 300 B, 16 KB or 1 MB messages from two
connections was suspended within 0.03-0.3 s; honest requests kept answering.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from ipam.calls import Call, queue, settle_all
from ipam.registry import Registry
from ipam.store import ZoneStore
from wire import identity, messages
from wire.errors import (Forbidden, InvalidInput, MeshError, Unavailable, code_of,
                         protocol_code)
from wire.keys import Keys, node_id
from wire.logs import Throttle
from wire.redisconn import publish

from . import metrics
from .acl import AgentCredentials
from .admission import Admission, Job

log = logging.getLogger(__name__)

HEX = "0123456789abcdef"
BATCH = 64


@dataclass
class Bucket:
    tokens: float
    at: float
    strikes: int = 0


@dataclass
class Limits:
    """Per-sender admission limits (pure: the caller passes the clock)."""
    rate: float = 20.0          # requests per second, sustained (an agent sends ~0.1/s)
    burst: float = 40.0
    strikes: int = 40           # drops in a row that suspend the sender
    max_bytes: int = messages.MAX_MESSAGE_BYTES + 200     # the MAC and its separator
    buckets: dict[str, Bucket] = field(default_factory=dict)

    def judge(self, sender: str, size: int, now: float) -> str:
        """'pass', 'drop' or 'suspend' for one message of ``size`` bytes."""
        if size > self.max_bytes:
            return "suspend"
        b = self.buckets.get(sender)
        if b is None:
            b = self.buckets[sender] = Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
        b.at = now
        if b.tokens >= 1:
            b.tokens -= 1
            b.strikes = 0
            return "pass"
        b.strikes += 1
        if b.strikes >= self.strikes:
            b.strikes = 0
            return "suspend"
        return "drop"


def shard_digits(shards: int) -> list[str]:
    """The first hex digits of the node ids each subscriber connection listens for."""
    per = -(-16 // max(1, min(16, shards)))
    return [HEX[i:i + per] for i in range(0, 16, per)]


@dataclass(frozen=True)
class Source:
    """What a channel says about its sender."""
    zone: str
    node: str
    cred: str = ""          # enrollment channels: the credential (join key id or 'zone')

    @property
    def sender(self) -> str:
        return f"{self.zone}/{self.cred or 'node'}/{self.node}"


def parse_channel(keys: Keys, channel: str) -> tuple[str, Source] | None:
    """('req' | 'enroll', Source) of a request or enrollment channel, else None."""
    if not channel.startswith(keys.prefix + "{"):
        return None
    zone, sep, rest = channel[len(keys.prefix) + 1:].partition("}:")
    if not sep:
        return None
    kind, _, tail = rest.partition(":")
    if kind == "req" and tail:
        return "req", Source(zone, tail)
    if kind == "enroll":
        cred, _, node = tail.partition(":")
        if cred and node:
            return "enroll", Source(zone, node, cred)
    return None


@dataclass
class Suspensions:
    """Who is suspended until when, and for how long next time (pure)."""
    first: float = 60.0
    until: dict[str, float] = field(default_factory=dict)
    length: dict[str, float] = field(default_factory=dict)

    def suspend(self, sender: str, now: float) -> float:
        length = self.length.get(sender, self.first / 2) * 2
        self.length[sender] = min(length, 86400.0)
        self.until[sender] = now + length
        return length

    def active(self, sender: str, now: float) -> bool:
        return self.until.get(sender, 0.0) > now

    def due(self, now: float) -> list[str]:
        """Suspensions over: their senders get their rights back."""
        over = [s for s, t in self.until.items() if t <= now]
        for sender in over:
            del self.until[sender]
        return over


class Gate:
    def __init__(self, store: ZoneStore, client_factory: Callable[[], redis.Redis],
                 tower_private: str, credentials: AgentCredentials | None, *,
                 clock_skew: float = 60.0, shards: int = 4, limits: Limits | None = None,
                 suspend_for: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.client_factory = client_factory
        self.credentials = credentials
        self.registry = credentials.registry if credentials else Registry(store.redis, store.keys,
                                                                          store.scripts)
        self.clock_skew = clock_skew
        self.shards = shards
        self.limits = limits or Limits()
        self.suspensions = Suspensions(suspend_for)
        self.clock = clock
        # Lines a node can cause (refusals): at most 10 per kind and 10 s, then a summary.
        self.throttle = Throttle(log)
        self.admission = Admission(self.keys, tower_private, clock_skew,
                                   metrics.worker().registrations.labels("invalid").inc,
                                   self.throttle)
        self.metrics = metrics.gate()
        self._lock = threading.Lock()
        self.admitted = 0
        self.running = threading.Event()
        self.arrived = threading.Event()    # set when a request was admitted (the worker)
        self.sharded = store.sharded
        self._subscribed = 0

    # -- threads ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """One subscriber thread per shard plus the enrollment one; returns at ``stop``."""
        patterns = [self.keys.request_patterns(digits) for digits in shard_digits(self.shards)]
        patterns.append([self.keys.enroll_patterns])
        threads = [threading.Thread(target=self._listen, args=(p, stop), daemon=True,
                                    name=f"gate-{i}") for i, p in enumerate(patterns)]
        for thread in threads:
            thread.start()
        while not stop.wait(1.0):
            self._lift_suspensions()
            self.throttle.tick()
        for thread in threads:
            thread.join(5)

    def _listen(self, patterns: list[str], stop: threading.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            client = self.client_factory()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                # (serve's connections are CLIENT NO-EVICT: wire.redisconn.never_evicted)
                pubsub.psubscribe(*patterns)
                with self._lock:
                    self._subscribed += 1
                    if self._subscribed >= self.shards + 1:
                        self.running.set()
                backoff = 0.1
                while not stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is None:
                        continue
                    batch = [message]
                    while len(batch) < BATCH:
                        more = pubsub.get_message(timeout=0)
                        if more is None:
                            break
                        batch.append(more)
                    self.handle(batch)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError,
                    TypeError) as exc:
                # TypeError: redis-py polling a socket it closed as Redis went away.
                log.warning("the gate lost its subscription (%s); again in %.1fs", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:  # noqa: BLE001 - the gate outlives any bug of one batch
                log.exception("error in the gate")
                stop.wait(backoff)
            finally:
                with self._lock:
                    self._subscribed = max(0, self._subscribed - 1)
                    self.running.clear()
                try:
                    pubsub.close()      # its own connection; the client's pool is shared
                except Exception:  # noqa: BLE001 - closing anyway
                    pass

    # -- messages --------------------------------------------------------------------------

    def handle(self, batch: list[dict[str, Any]]) -> None:
        """Check a batch of published messages; admit the requests that pass (one
        pipeline), handle the enrollments, answer the refusals."""
        now = self.clock()
        admits: list[tuple[Source, messages.Request, bytes, str]] = []
        answers: list[tuple[str, str]] = []
        for message in batch:
            channel = message.get("channel")
            channel = channel.decode("utf-8", "replace") if isinstance(channel, bytes) else str(channel)
            data = message.get("data") or b""
            data = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
            parsed = parse_channel(self.keys, channel)
            if parsed is None:
                continue
            kind, source = parsed
            with self._lock:
                if self.suspensions.active(source.sender, now):
                    continue
                verdict = self.limits.judge(source.sender, len(data), now)
            if verdict != "pass":
                self.metrics.dropped.labels(verdict).inc()
                if verdict == "suspend":
                    self._suspend(source, len(data), now)
                continue
            outcome = self._check(kind, source, data)
            if outcome is None:
                continue
            if isinstance(outcome, tuple) and outcome[0] == "answer":
                answers.append(outcome[1:])
                continue
            request, payload, mac = outcome
            if kind == "enroll":
                answers.append(self._enroll(source, request))
            else:
                admits.append((source, request, payload, mac))
        self._admit(admits, answers)

    def _check(self, kind: str, source: Source, data: bytes) -> Any:
        """(request, payload, mac) of a message that passes, ('answer', channel, text)
        for one refused with an answer, None for one dropped."""
        reply_channel = (self.keys.enrolled_channel(source.zone, source.cred, source.node)
                         if kind == "enroll" else self.keys.reply(source.zone, node=source.node))
        try:
            payload, mac = messages.unpack(data)
        except InvalidInput as exc:
            log.debug("dropped a malformed message of %s: %s", source.sender, exc)
            self.metrics.dropped.labels("invalid").inc()
            return None
        try:
            request = messages.parse_request(payload)
        except InvalidInput as exc:
            self.metrics.dropped.labels("invalid").inc()
            # Answered when it names this channel's node (as the worker did), else dropped.
            job = Job("")
            self.admission.refuse_unparsed(job, source.zone, payload, str(exc))
            if job.reply is None or job.channel != self.keys.reply(source.zone, node=source.node):
                return None
            return ("answer", reply_channel if kind == "req" else job.channel, job.reply)
        try:
            if node_id(request.key) != source.node:
                raise Forbidden("the request names another node than its channel's")
            if request.zone != source.zone:
                raise Forbidden(f"request for zone {request.zone} sent on a channel of zone "
                                f"{source.zone}")
            if (kind == "enroll") != (request.type == "enroll"):
                raise Forbidden(f"a {request.type} request does not go on this channel")
            self.admission.authenticate(request, payload, mac)
        except MeshError as exc:
            self.metrics.dropped.labels("refused").inc()
            self.throttle.log(logging.INFO, ("refused", source.zone, protocol_code(exc)),
                              "refused %s from %s in zone %s: %s", request.type, request.key,
                              source.zone, exc,
                              summary=f"{protocol_code(exc)} refusals in zone {source.zone}")
            return ("answer", reply_channel, messages.reply(
                request.id, request.type, False, error=str(exc), code=protocol_code(exc)))
        return request, payload, mac

    def _admit(self, admits: list[tuple[Source, messages.Request, bytes, str]],
               answers: list[tuple[str, str]]) -> None:
        ttl = int(self.clock_skew * 2) + 1
        calls = [Call.script(self.store.scripts.admit,
                             [self.keys.nonce(s.zone, r.key, r.nonce), self.keys.requests(s.zone)],
                             [ttl, payload, mac], lambda reply: reply)
                 for s, r, payload, mac in admits]
        if not calls and not answers:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for call in calls:
                queue(pipe, call)
            for channel, text in answers:
                publish(pipe, channel, text, self.sharded)
            replies = pipe.execute(raise_on_error=False)
        outcomes = settle_all(calls, replies)
        late: list[tuple[str, str]] = []
        for (source, request, _, _), outcome in zip(admits, outcomes):
            if isinstance(outcome, Call):        # Redis lost the script: once more
                outcome = self.store.run(outcome)
            if isinstance(outcome, list) and outcome and outcome[0] == "nozone":
                late.append((self.keys.reply(source.zone, node=source.node), messages.reply(
                    request.id, request.type, False, error=f"zone {source.zone} does not exist",
                    code="not-found")))
            elif isinstance(outcome, Exception):
                # e.g. a stream whose ID space is used up: the node hears why and retries.
                self.throttle.log(logging.ERROR, ("admit", source.zone),
                                  "admitting a request of %s failed: %s", source.sender, outcome,
                                  summary=f"requests not admitted in zone {source.zone}")
                late.append((self.keys.reply(source.zone, node=source.node), messages.reply(
                    request.id, request.type, False,
                    error=f"zone {source.zone}'s request stream refuses requests "
                          f"({messages.brief(str(outcome))})",
                    code=code_of(Unavailable))))
            elif outcome:
                self.admitted += 1
                self.metrics.admitted.inc()
                self.arrived.set()
        for channel, text in late:
            publish(self.redis, channel, text, self.sharded)

    # -- enrollment ------------------------------------------------------------------------

    def _enroll(self, source: Source, request: messages.Request) -> tuple[str, str]:
        """Enroll a node (its own Redis user); the answer to publish."""
        channel = self.keys.enrolled_channel(source.zone, source.cred, source.node)
        body = request.body
        name = body.get("name") or identity.name_from_host(body.get("hostname") or "")
        try:
            if self.credentials is None:
                raise Forbidden("this tower does not manage node credentials (--no-agent-acl)")
            if source.cred != identity.ZONE_SECRET_ID:
                identity.key_id(source.cred)
            node = self.store.run(self.registry.enroll_call(
                source.zone, source.cred, request.key, body["credential_sha256"], name))
            try:
                self.credentials.apply_node(source.zone, node)
            except Exception:
                self.registry.undo_enroll(source.zone, source.cred, request.key)
                raise
        except MeshError as exc:
            self.throttle.log(logging.INFO, ("enroll", source.zone, protocol_code(exc)),
                              "refused to enroll %s in zone %s: %s", request.key, source.zone,
                              exc, summary=f"refused enrollments in zone {source.zone}")
            self.metrics.enrollments.labels(protocol_code(exc)).inc()
            return channel, messages.reply(request.id, "enroll", False, error=str(exc),
                                           code=protocol_code(exc))
        except redis.exceptions.ConnectionError:
            raise
        except Exception:  # noqa: BLE001 - that enrollment's failure only
            log.exception("enrolling %s in zone %s failed", request.key, source.zone)
            self.metrics.enrollments.labels("error").inc()
            return channel, messages.reply(request.id, "enroll", False,
                                           error="internal error in the tower", code="error")
        log.info("enrolled %s in zone %s as %s (credential %s)", request.key, source.zone,
                 node.name, source.cred)
        self.metrics.enrollments.labels("ok").inc()
        return channel, messages.reply(request.id, "enroll", True, user=node.user,
                                       name=node.name, expires=node.expires)

    # -- suspensions -----------------------------------------------------------------------

    def _suspend(self, source: Source, size: int, now: float) -> None:
        with self._lock:
            length = self.suspensions.suspend(source.sender, now)
        log.warning("suspended %s for %.0fs: it floods the tower (last message %d bytes)",
                    source.sender, length, size)
        self.metrics.suspensions.inc()
        if self.credentials is None:
            return
        user = (self.keys.node_user(source.zone, source.node) if not source.cred
                else self.keys.agent_user(source.zone) if source.cred == identity.ZONE_SECRET_ID
                else self.keys.join_user(source.zone, source.cred))
        try:
            self.credentials.suspend_node(source.zone, source.node, user)
        except redis.exceptions.RedisError as exc:
            log.error("could not suspend %s: %s", source.sender, exc)

    def _lift_suspensions(self) -> None:
        with self._lock:
            over = self.suspensions.due(self.clock())
        if not over or self.credentials is None:
            return
        for sender in over:
            zone, cred, node = sender.split("/")
            try:
                if cred == "node":
                    record = self.registry.node(zone, node)
                    if record is not None and not record.removed:
                        self.credentials.apply_node(zone, record)
                elif cred == identity.ZONE_SECRET_ID:
                    self.credentials.apply_zone(zone)
                else:
                    record = self.registry.join_key(zone, cred)
                    if not record.revoked:
                        self.credentials.apply_join_key(zone, cred, record.sha256)
                log.info("lifted the suspension of %s", sender)
            except (MeshError, redis.exceptions.RedisError) as exc:
                log.warning("could not lift the suspension of %s: %s", sender, exc)

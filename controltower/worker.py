"""The request worker: reads agent requests from the zones' streams and answers them.

Each zone has one request stream read by the consumer group ``controltower``, so every
request is handled by exactly one replica; entries left pending by a replica that died
are claimed by another after ``claim_idle`` seconds. Handlers are idempotent, and a
request handled again after a newer one of the same node changes nothing (the store
orders requests by their stream entry id).

Every Redis round trip of the worker is a step of this module:

1. XREADGROUP: up to ``batch`` (256) entries of a zone (``step``), admitted without I/O
   (controltower/admission.py);
2. per chunk of ``chunk`` (64) requests, one pipeline (``_round_trip``): the chunk's
   store calls (ipam/store.py; each script checks its request's replay guard first),
   the reads of the zones' changes due for publication (controltower/publisher.py),
   the previous chunk's replies and acknowledgements;
3. when such a read found changes: one pipeline that publishes the updates built from
   them (``_publish``);
4. only for the requests of the chunk that need more: their next steps, one pipeline
   per step for all of them (``_run``): the register of a tower that manages
   identities (after the read of the node's record), an IPv6 zone's candidate address
   and the register that takes it, an endpoint update's compare-and-set, a call sent
   again with its script after Redis lost it; each such pipeline carries the reads of
   the changes due after its calls (the change of a step is read in its pipeline),
   and what they found is published at once, as in 3 (on a Redis Cluster the changes
   are read after the WAIT for a replica, as the replies leave);
5. one last pipeline with the last chunk's replies and acknowledgements (``_round_trip``
   again), then the publications due since (``_publish``).

About 1 + n/64 + 1 round trips for n requests, plus one per publication (at most one
per publish window) and one per further step. A lone join of a tower that manages
identities: XREADGROUP; the node's record; the register with the read of its change;
the update; the reply. Zone changes are published when the zone's publish window has
elapsed (``PublishWindow``, adaptive), also between the chunks of one large batch.
"""
from __future__ import annotations

import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from ipam.calls import MAX_STEPS, Call, queue, settle_all
from ipam.store import Guard, Zone, ZoneStore
from wire import messages
from wire.errors import Forbidden, MeshError, NotFound, protocol_code
from wire.keys import REQUEST_GROUP
from wire.logs import Throttle
from wire.messages import Request
from wire.redisconn import publish

from . import metrics, towerkey
from .acl import AgentCredentials
from .admission import Admission, Job
from .gate import Gate
from .publisher import Publisher

log = logging.getLogger(__name__)

# How long a chunk's writes wait for a replica on a Redis Cluster (``WAIT``), in ms.
WAIT_MS = 500
WAIT_ATTEMPTS = 4            # a lagging replica gets up to 2 s before the replies leave
UNREPLICATED_SKIP = 10.0     # seconds without WAIT on a shard whose replicas did not answer
# Request orders are kept this many clock-skew windows (see RequestWorker._reap).
ORDER_MEMORY = 10


class RequestWorker:
    def __init__(self, store: ZoneStore, *, consumer: str | None = None,
                 clock_skew: float = 60.0, publish_window: float = 0.02,
                 publish_window_max: float = 0.25, claim_idle: float = 5.0,
                 batch: int = 256, chunk: int = 64,
                 zone_refresh: float = 1.0, reap_interval: float = 5.0,
                 heartbeat_ttl: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 credentials: "AgentCredentials | None" = None,
                 replica_acks: int = 1) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.consumer = consumer or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.clock_skew = clock_skew
        self.clock = clock      # monotonic seconds; tests step a worker on their own clock
        self.claim_idle = claim_idle
        self.batch = batch
        self.chunk = chunk
        self.zone_refresh = zone_refresh
        self.reap_interval = reap_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.credentials = credentials   # the node users' manager: ephemeral/expired nodes
        self.tower_private, self.tower_public = towerkey.load_or_create(self.redis, self.keys)
        store.copy_tower_key(store.zone_names(), self.tower_public)
        # A Redis Cluster (docs/operations.md): replies on sharded pub/sub, streams read
        # zone by zone, every write replicated before its reply (``replica_acks``).
        self.sharded = store.sharded
        self.replica_acks = replica_acks if self.sharded else 0
        self._unreplicated: dict[str, float] = {}       # cluster node -> skip WAIT until
        self._unreplicated_warned: dict[str, float] = {}
        # Requests reach the stream through the gate only (controltower/gate.py); its
        # subscriber connections come from the store's connection pool.
        self.gate = Gate(store, self._subscriber_client, self.tower_private, credentials,
                         clock_skew=clock_skew)
        store.scripts.load()
        self.metrics = metrics.worker()
        # Per-request lines an agent can cause: at most 10 per kind and 10 s, then a summary.
        self.throttle = Throttle(log)
        self.admission = Admission(self.keys, self.tower_private, clock_skew,
                                   self.metrics.registrations.labels("invalid").inc,
                                   self.throttle)
        self.publisher = Publisher(store, publish_window, publish_window_max, clock,
                                   self.metrics.publish_latency.observe)
        self._zones: list[str] = []
        self._settings: dict[str, Zone] = {}    # zone name -> its (immutable) settings
        self._zones_at = 0.0
        self._claimed_at = 0.0
        self._reaped_at = clock()
        self._beat_at = 0.0
        self.handled = 0
        self.running = threading.Event()

    def _subscriber_client(self) -> redis.Redis:
        """The client of the gate's subscriber connections: the store's, or on a Redis
        Cluster one primary's, any one (classic pub/sub reaches every node; a primary
        gone makes the gate subscribe again elsewhere; requests sent meanwhile are lost,
        as on a single Redis restarting, and the agents send them again)."""
        if not self.sharded:
            return self.redis
        return random.choice(self.redis.get_primaries()).redis_connection

    # -- loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set (the gate too); survives Redis outages by retrying."""
        gate = threading.Thread(target=self.gate.run, args=(stop,), name="gate", daemon=True)
        gate.start()
        try:
            self._serve(stop)
        finally:
            gate.join(10)

    def _serve(self, stop: threading.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            try:
                self.step()
                if self.gate.running.is_set():     # requests can reach the stream
                    self.running.set()
                backoff = 0.1
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                self.running.clear()
                log.warning("redis unreachable (%s); retrying in %.1fs", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:  # noqa: BLE001 - the worker outlives any bug of one step
                log.exception("error in the request worker")
                stop.wait(backoff)
        self.running.clear()
        try:
            self.redis.delete(self.keys.tower_worker(self.consumer))
        except redis.exceptions.RedisError:
            pass

    def step(self) -> None:
        now = self.clock()
        if now - self._beat_at >= self.heartbeat_ttl / 4:
            self._beat(now)
        if now - self._zones_at >= self.zone_refresh:
            self._refresh_zones()
        if now - self._claimed_at >= self.claim_idle / 2:
            self._claim_abandoned()
        if now - self._reaped_at >= self.reap_interval:
            self._reap()
        streams = {self.keys.requests(z): ">" for z in self._zones}
        if streams:
            block = self._block_ms()
            try:
                if self.sharded:
                    batches = self._read_each(streams, block)
                else:
                    batches = self.redis.xreadgroup(REQUEST_GROUP, self.consumer, streams,
                                                    count=self.batch, block=block)
            except redis.exceptions.ResponseError as exc:
                # A zone deleted under us: its group is gone (NOGROUP), or Redis 7 ends
                # the blocked read of its stream (UNBLOCKED ... no longer exists).
                if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                    raise
                log.debug("a zone's request stream went away (%s): refreshing zones", exc)
                self._zones_at = 0.0
                batches = []
            for stream, entries in batches or []:
                self._handle_entries(self._zone_of(stream), entries)
        else:
            time.sleep(min(self.zone_refresh, 0.2))
        self._publish()
        self.throttle.tick()

    def _read_each(self, streams: dict[str, str], block: int) -> list[Any]:
        """A Redis Cluster: one XREADGROUP reads streams of one slot only. So one
        non-blocking XREADGROUP per zone, in one pipeline (redis-py writes every node's
        commands before reading any reply); when none had anything, wait until the gate
        admits a request (in this process) or ``block`` ms pass. A request another
        replica's gate admitted is read at the latest ``block`` ms later."""
        for attempt in range(2):
            with self.redis.pipeline(transaction=False) as pipe:
                for stream in streams:
                    pipe.xreadgroup(REQUEST_GROUP, self.consumer, {stream: ">"},
                                    count=self.batch)
                replies = pipe.execute(raise_on_error=False)
            batches: list[Any] = []
            for reply in replies:
                if isinstance(reply, redis.exceptions.ResponseError):
                    if "NOGROUP" not in str(reply):
                        raise reply
                    self._zones_at = 0.0     # a zone was deleted under us: refresh
                elif isinstance(reply, Exception):
                    raise reply
                elif isinstance(reply, dict):        # RESP3
                    batches += [(stream, entries[0]) for stream, entries in reply.items()]
                else:
                    batches += reply or []
            if batches or attempt:
                return batches
            self.gate.arrived.wait(block / 1000)
            self.gate.arrived.clear()
        return []

    def _wait_replicas(self, zone: str, pipe: Any = None) -> bool:
        """On a Redis Cluster, ``WAIT`` until a replica of the zone's shard has the writes
        just made (queued on ``pipe``, whose last reply the caller hands to
        ``_check_replicated``; or sent now): a primary lost after a reply then loses no
        write the reply acknowledged (docs/operations.md). False: nothing to wait for."""
        if not self.replica_acks:
            return False
        node = self.redis.get_node_from_key(self.keys.requests(zone))
        if self._unreplicated.get(node.name, 0.0) > self.clock():
            return False        # its replicas did not answer lately: do not stall on them
        if pipe is not None:
            pipe.execute_command("WAIT", self.replica_acks, WAIT_MS, target_nodes=node)
        else:
            self._check_replicated(zone, self.redis.execute_command(
                "WAIT", self.replica_acks, WAIT_MS, target_nodes=node))
        return True

    def _check_replicated(self, zone: str, acks: Any) -> None:
        """A replica lagging (``WAIT`` answered fewer acks): wait again, up to
        ``WAIT_ATTEMPTS`` in all, before the replies leave; then reply anyway, warn, and
        skip ``WAIT`` on that shard for ``UNREPLICATED_SKIP`` seconds (a replica down must
        not stall every chunk by ``WAIT_MS``)."""
        node = self.redis.get_node_from_key(self.keys.requests(zone))
        for _ in range(WAIT_ATTEMPTS - 1):
            if isinstance(acks, int) and acks >= self.replica_acks:
                return
            acks = self.redis.execute_command("WAIT", self.replica_acks, WAIT_MS,
                                              target_nodes=node)
        if isinstance(acks, int) and acks >= self.replica_acks:
            return
        now = self.clock()
        self._unreplicated[node.name] = now + UNREPLICATED_SKIP
        self.metrics.unreplicated.inc()
        if now - self._unreplicated_warned.get(node.name, -1e9) >= 60:
            self._unreplicated_warned[node.name] = now
            log.warning("no replica of the Redis Cluster node %s (zone %s) confirmed the "
                        "writes within %.1f s: replying anyway; a failover now could lose "
                        "them", node.name, zone, WAIT_MS * WAIT_ATTEMPTS / 1000)

    def _beat(self, now: float) -> None:
        """Tell the API (``/ready``) this worker is alive: a key that expires unless renewed."""
        self.redis.set(self.keys.tower_worker(self.consumer), int(time.time()),
                       ex=max(1, round(self.heartbeat_ttl)))
        self._beat_at = now

    def _block_ms(self) -> int:
        wait = self.zone_refresh
        due = self.publisher.wait()
        if due is not None:
            wait = min(wait, due)
        return max(1, int(wait * 1000))

    def _zone_of(self, stream: str) -> str:
        # ct:{zone}:requests
        return stream[stream.index("{") + 1:stream.rindex("}")]

    def _refresh_zones(self) -> None:
        """The zones' names and settings (two round trips): a zone deleted and created
        again under its name may have another CIDR (register.lua checks ``created``)."""
        names = self.store.zone_names()
        settings = {zone.name: zone for zone in self.store.list_zones(names)}
        self._zones, self._settings = names, settings
        self._zones_at = self.clock()

    def _zone(self, name: str) -> Zone:
        zone = self._settings.get(name)
        if zone is None:      # a zone newer than the last refresh (one round trip)
            zone = self._settings[name] = self.store.get_zone(name)
        return zone

    def _claim_abandoned(self) -> None:
        self._claimed_at = self.clock()
        for zone in self._zones:
            stream = self.keys.requests(zone)
            try:
                result = self.redis.xautoclaim(stream, REQUEST_GROUP, self.consumer,
                                               int(self.claim_idle * 1000), count=self.batch)
            except redis.exceptions.ResponseError:
                continue
            entries = result[1]
            if entries:
                log.info("claimed %d abandoned requests of zone %s", len(entries), zone)
                self._handle_entries(zone, entries)

    def _reap(self) -> None:
        """Remove the nodes silent for longer than the expiry: one pipeline finds them
        in every zone, one removes them all; then forget old request orders."""
        self._reaped_at = self.clock()
        cutoff = self.store.expiry_cutoff()
        zones = list(self._zones)
        silent = self._run([self.store.silent_call(zone, cutoff) for zone in zones])
        found = [(zone, key) for zone, keys in zip(zones, silent)
                 if not isinstance(keys, Exception) for key in keys]
        removed = self._run([self.store.remove_call(zone, key, "expired", seen_before=cutoff)
                             for zone, key in found])
        for (zone, key), outcome in zip(found, removed):
            if isinstance(outcome, Exception) and not isinstance(outcome, NotFound):
                log.error("expiring node %s of zone %s failed: %s", key, zone, outcome)
            elif outcome is not None and not isinstance(outcome, Exception):
                log.info("node %s of zone %s expired and was removed", key, zone)
                self.publisher.changed(zone)
        if self.credentials is not None:
            self._remove_due(zones)
        # A request older than this is refused for its timestamp: no need to know any
        # more whether it came before the last applied one of its node.
        self.store.forget_orders(zones, time.time() - ORDER_MEMORY * self.clock_skew)

    def _remove_due(self, zones: list[str]) -> None:
        """Remove ephemeral nodes offline longer than their timeout and nodes whose
        credential expired: revoked like any removal (ipam/registry.py ``due``)."""
        from .nodes import Found, Nodes
        nodes = Nodes(self.store, self.credentials)
        now = time.time()
        for zone in zones:
            try:
                due = nodes.registry.due(zone, now)
            except redis.exceptions.ResponseError as exc:
                log.error("reading zone %s's ephemeral and expiring nodes failed: %s", zone, exc)
                continue
            for key, reason in due:
                try:
                    found = nodes.find(key, zone)
                    nodes.remove(Found(zone, key, found.peer, found.node), reason)
                    log.info("node %s of zone %s removed: %s", key, zone, reason)
                except NotFound:
                    self.redis.zrem(self.keys.ephemeral(zone), key)
                    self.redis.zrem(self.keys.expiring(zone), key)
                except MeshError as exc:
                    log.error("removing node %s of zone %s failed: %s", key, zone, exc)

    # -- round trips -----------------------------------------------------------------------

    def _send(self, calls: list[Call]) -> list[Any]:
        """One pipeline of calls; each one's outcome (ipam/calls.py settle)."""
        if not calls:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for call in calls:
                queue(pipe, call)
            return settle_all(calls, pipe.execute(raise_on_error=False))

    def _run(self, calls: list[Call], zone: str | None = None) -> list[Any]:
        """Run calls to their end: one pipeline per step, with the next step of every
        call that needs one. Returns each call's result or exception.

        With ``zone`` (the calls may change it), each pipeline also carries the
        publication steps due, after the calls: the read of the zone's changes rides on
        the step that made them, and what it found is published at once, in a pipeline
        of its own, before the replies of the requests it carries."""
        outcomes: list[Any] = list(calls)
        for _ in range(MAX_STEPS):
            todo = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, Call)]
            if not todo:
                return outcomes
            steps = []
            if zone is not None:
                if zone not in self.publisher.dirty:    # an earlier read took its mark
                    self.publisher.changed(zone, len(todo))
                steps = self.publisher.calls()
            sent = self._send([outcomes[i] for i in todo] + [step.call for step in steps])
            self.publisher.settled(steps, sent[len(todo):])
            if steps:
                self._publish(start=False)
            for i, outcome in zip(todo, sent):
                outcomes[i] = outcome
        return [RuntimeError(f"more than {MAX_STEPS} steps") if isinstance(o, Call) else o
                for o in outcomes]

    def _publish(self, start: bool = True) -> None:
        """The publications under way to their end, one pipeline per step, and
        (``start``) those of the zones whose window has elapsed."""
        for _ in range(MAX_STEPS):
            steps = self.publisher.calls(start)
            if not steps:
                return
            self.publisher.settled(steps, self._send([step.call for step in steps]))

    # -- a batch of requests -------------------------------------------------------------
    #
    # Every request is answered on its own: a refusal or a failure of one is that
    # request's reply only; a connection error leaves the unacknowledged entries pending
    # (handled again, here or by another replica).

    def handle(self, zone: str, entry_id: str, fields: dict[str, Any]) -> None:
        """Handle one stream entry without acknowledging it (tests: a replica that dies
        after answering)."""
        self._process(zone, [(entry_id, fields)], ack=False)

    def _handle_entries(self, zone: str, entries: list[tuple[str, dict[str, Any]]]) -> None:
        self._process(zone, entries, ack=True)

    def _process(self, zone: str, entries: list[tuple[str, dict[str, Any]]], ack: bool) -> None:
        # A claimed entry deleted meanwhile comes back without fields: acknowledged only.
        jobs = [self._admit(zone, entry_id, fields) if fields else Job(entry_id)
                for entry_id, fields in entries]
        todo = [job for job in jobs if job.waiting]
        outbox = [job for job in jobs if not job.waiting]
        for start in range(0, len(todo), self.chunk):
            chunk = todo[start:start + self.chunk]
            self._round_trip(zone, chunk, outbox, ack)
            outbox = chunk
        if outbox:
            self._round_trip(zone, [], outbox, ack)

    def _admit(self, zone: str, entry_id: str, fields: dict[str, Any]) -> Job:
        self.handled += 1
        job = self.admission.admit(zone, entry_id, fields)
        if job.error is not None:
            self._answer(job, job.error)
        return job

    def _round_trip(self, zone: str, chunk: list[Job], outbox: list[Job], ack: bool) -> None:
        """One pipeline: the chunk's store calls, the publication steps due (the read of
        a zone's changes after the chunk's), the outbox's replies and acknowledgements.
        Then the updates just read, published at once (one pipeline, when a zone's window
        had elapsed: an update leaves before the replies of the requests it carries),
        and the next steps of the chunk's requests that need more. Sets the reply of
        every job of the chunk."""
        called: list[tuple[Job, Call]] = []
        for job in chunk:
            try:
                called.append((job, self._call(zone, job)))
            except redis.exceptions.ConnectionError:
                raise
            except Exception as exc:  # noqa: BLE001 - bad input, or a zone gone: its reply
                self._answer(job, exc)
        changes = sum(1 for job in chunk if job.request.type != "heartbeat")
        if changes:
            self.publisher.changed(zone, changes)  # read after the calls, in this pipeline
        steps = self.publisher.calls()
        calls = [call for _, call in called] + [step.call for step in steps]
        stream = self.keys.requests(zone)
        ids = [job.entry_id for job in outbox] if ack else []
        with self.redis.pipeline(transaction=False) as pipe:
            for call in calls:
                queue(pipe, call)
            for job in outbox:
                if job.channel is not None and job.reply is not None:
                    publish(pipe, job.channel, job.reply, self.sharded)
            if ids:
                pipe.xack(stream, REQUEST_GROUP, *ids)
                pipe.xdel(stream, *ids)
            waited = bool(called) and self._wait_replicas(zone, pipe)   # before the replies
            replies = pipe.execute(raise_on_error=False)
            outcomes = settle_all(calls, replies)
        if waited:
            self._check_replicated(zone, replies[-1])
        self.publisher.settled(steps, outcomes[len(called):])
        self._publish(start=False)    # the updates just read go out now, before the replies
        more = [(job, outcome) for (job, _), outcome in zip(called, outcomes)
                if isinstance(outcome, Call)]
        for (job, _), outcome in zip(called, outcomes):
            if not isinstance(outcome, Call):
                self._answer(job, outcome)
        if more:
            # Their changes are read in the pipeline of the step that makes them and
            # published at once; on a Redis Cluster only after the WAIT for a replica
            # (read after it, as the replies).
            ride = None if self.replica_acks else zone
            for (job, _), outcome in zip(more, self._run([call for _, call in more], ride)):
                self._answer(job, outcome)
            self._wait_replicas(zone)
            if ride is None:
                self.publisher.changed(zone, len(more))

    def _call(self, zone: str, job: Job) -> Call:
        """The request's first store call, with its replay guard: the script that acts
        on the request records the request's nonce and refuses a replay (the nonce
        keeps the entry id, so the same entry handled again, claimed after a replica
        died, is no replay)."""
        r = job.request
        guard = Guard(self.keys.nonce(zone, r.key, r.nonce), job.entry_id,
                      int(self.clock_skew * 2) + 1)
        if r.type == "register":
            # A tower that manages identities reads the node's record first (one round
            # trip per chunk: name, tags, approved prefixes); one that does not, as before.
            register = (self.store.register_call if self.credentials is None
                        else self.store.enrolled_register_call)
            return register(self._zone(zone), r.key, session=r.session, order=job.entry_id,
                            guard=guard, **r.body)
        if r.type == "heartbeat":
            return self.store.heartbeat_call(zone, r.key, r.session, guard=guard,
                                             report={k: v for k, v in r.body.items()
                                                     if k != "policy"} or None,
                                             policy=r.body.get("policy"))
        if r.type == "endpoint-update":
            return self.store.endpoint_call(zone, r.key, r.session, r.body["endpoint"],
                                            r.body["nat_type"], order=job.entry_id,
                                            guard=guard, relay=r.body.get("relay", False))
        if r.type != "leave":
            raise Forbidden(f"a {r.type} request does not go on the request stream")
        return self.store.remove_call(zone, r.key, "left", session=r.session,
                                      order=job.entry_id, guard=guard)

    # -- answers -------------------------------------------------------------------------

    def _answer(self, job: Job, outcome: Any) -> None:
        """Set a job's reply from its outcome: a result, or the exception that refused
        or failed it."""
        r = job.request
        if isinstance(outcome, MeshError):
            if r.type == "register" and isinstance(outcome, NotFound):
                self._settings.pop(r.zone, None)     # the zone is gone: read it again
            self._refuse(job, outcome)
            return
        if isinstance(outcome, Exception):
            self._fail(job, outcome)
            return
        if r.type == "register":
            log.info("registered %s in zone %s at %s (request %s)", r.key, r.zone,
                     outcome.address, r.id, extra={"request_id": r.id})
            fields = {"address": outcome.address, "prefix_len": outcome.prefix_len,
                      "cidr": outcome.cidr, "rev": outcome.rev}
        else:
            fields = {} if r.type == "heartbeat" else {"rev": outcome}
        job.reply = messages.reply(r.id, r.type, True, **fields)
        self._count(r, "ok")

    def _refuse(self, job: Job, exc: MeshError) -> None:
        r = job.request
        code = protocol_code(exc)
        self.throttle.log(logging.INFO, ("refused", r.zone, code),
                          "refused %s from %s in zone %s (request %s): %s", r.type, r.key,
                          r.zone, r.id, exc, summary=f"{code} refusals in zone {r.zone}")
        job.reply = messages.reply(r.id, r.type, False, error=str(exc), code=code)
        self._count(r, code)

    def _fail(self, job: Job, exc: Exception) -> None:
        r = job.request
        log.error("failed to handle %s request %s", r.type, r.id, exc_info=exc,
                  extra={"request_id": r.id})
        job.reply = messages.reply(r.id, r.type, False, error="internal error in the tower",
                                   code="error")
        self._count(r, "error")

    def _count(self, request: Request, result: str) -> None:
        if request.type == "register":
            self.metrics.registrations.labels(result).inc()

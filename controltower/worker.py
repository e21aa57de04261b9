"""The request worker: reads agent requests from the zones' streams and answers them.

Each zone has one request stream read by the consumer group ``controltower``, so every
request is handled by exactly one replica; entries left pending by a replica that died
are claimed by another after ``claim_idle`` seconds. Handlers are idempotent, and a
request handled again after a newer one of the same node changes nothing (the store
orders requests by their stream entry id).

Requests are handled in batches, a few Redis round trips per batch whatever its size
(see ``_process``); zone changes are published when the zone's publish window has
elapsed, also between the chunks of one large batch. The window adapts to the zone's
activity (see ``PublishWindow``).
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from ipam.store import Call, ZoneStore
from wire import messages, proof
from wire.errors import Forbidden, InvalidInput, MeshError, protocol_code
from wire.keys import REQUEST_GROUP
from wire.messages import Request

from . import metrics, towerkey

log = logging.getLogger(__name__)

# Request orders are kept this many clock-skew windows (see RequestWorker._reap).
ORDER_MEMORY = 10


@dataclass
class PublishWindow:
    """How long a zone's changes wait for others before they are published together.

    A quiet zone uses the ``base`` window: a change is published as soon as the zone's
    last publication is ``base`` old (at once, in a zone quiet for that long). The zone
    is busy when its first change after a publication comes less than ``base`` after it,
    or less than ``maximum`` after a publication that carried several changes; each
    publication in a row that finds it busy doubles the window (``base``, 2x, 4x...) up
    to ``maximum``, so a storm goes out in a few large messages instead of one per
    ``base`` (every subscriber pays per message). Otherwise the zone is quiet: back to
    ``base``. ``maximum`` <= ``base`` keeps the window fixed.
    """
    base: float
    maximum: float
    busy: int = 0         # publications in a row that found the zone busy
    pending: int = 0      # changes waiting for the next publication
    carried: int = 0      # changes the last publication carried

    @property
    def window(self) -> float:
        if not self.busy:
            return self.base
        return max(self.base, min(self.base * 2 ** (self.busy - 1), self.maximum))

    def changed(self, since_publication: float, count: int = 1) -> float:
        """``count`` changes, ``since_publication`` seconds after the zone's last
        publication: returns the window the zone waits now."""
        if not self.pending:
            busy = since_publication < self.base or (
                self.carried > 1 and since_publication < self.maximum)
            self.busy = min(self.busy + 1, 64) if busy else 0
        self.pending += count
        return self.window

    def published(self) -> None:
        self.carried, self.pending = self.pending, 0


class RequestWorker:
    def __init__(self, store: ZoneStore, *, consumer: str | None = None,
                 clock_skew: float = 60.0, publish_window: float = 0.02,
                 publish_window_max: float = 0.25, claim_idle: float = 5.0,
                 batch: int = 256, chunk: int = 64,
                 zone_refresh: float = 1.0, reap_interval: float = 5.0,
                 heartbeat_ttl: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.consumer = consumer or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.clock_skew = clock_skew
        self.publish_window = publish_window
        self.publish_window_max = publish_window_max
        self.clock = clock      # monotonic seconds; tests step a worker on their own clock
        self.claim_idle = claim_idle
        self.batch = batch
        self.chunk = chunk
        self.zone_refresh = zone_refresh
        self.reap_interval = reap_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.tower_private, self.tower_public = towerkey.load_or_create(self.redis, self.keys)
        store.scripts.load()
        self._mac_keys: OrderedDict[str, bytes] = OrderedDict()
        self._zones: list[str] = []
        self._zones_at = 0.0
        self._dirty: dict[str, float] = {}      # zone -> time of its first unpublished change
        self._last_flush: dict[str, float] = {}
        self._windows: dict[str, PublishWindow] = {}
        self._claimed_at = 0.0
        self._reaped_at = clock()
        self._beat_at = 0.0
        self.metrics = metrics.worker()
        self.handled = 0
        self.running = threading.Event()

    # -- loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; survives Redis outages by retrying."""
        backoff = 0.1
        while not stop.is_set():
            try:
                self.step()
                self.running.set()
                backoff = 0.1
            except redis.exceptions.ConnectionError as exc:
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
                batches = self.redis.xreadgroup(REQUEST_GROUP, self.consumer, streams,
                                                count=self.batch, block=block)
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._zones_at = 0.0  # a zone was deleted under us: refresh
                batches = []
            for stream, entries in batches or []:
                self._handle_entries(self._zone_of(stream), entries)
        else:
            time.sleep(min(self.zone_refresh, 0.2))
        self._flush_due()

    def _beat(self, now: float) -> None:
        """Tell the API (``/ready``) this worker is alive: a key that expires unless renewed."""
        self.redis.set(self.keys.tower_worker(self.consumer), int(time.time()),
                       ex=max(1, round(self.heartbeat_ttl)))
        self._beat_at = now

    def _block_ms(self) -> int:
        wait = self.zone_refresh
        if self._dirty:
            due = min(self._due_at(z) for z in self._dirty)
            wait = min(wait, max(0.0, due - self.clock()))
        return max(1, int(wait * 1000))

    def _zone_of(self, stream: str) -> str:
        # ct:{zone}:requests
        return stream[stream.index("{") + 1:stream.rindex("}")]

    def _refresh_zones(self) -> None:
        self._zones = self.store.zone_names()
        self._zones_at = self.clock()

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
        self._reaped_at = self.clock()
        for zone in self._zones:
            for key in self.store.expire(zone):
                log.info("node %s of zone %s expired and was removed", key, zone)
                self._mark_dirty(zone)
        # A request older than this is refused for its timestamp: no need to know any
        # more whether it came before the last applied one of its node.
        self.store.forget_orders(self._zones, time.time() - ORDER_MEMORY * self.clock_skew)

    def _mark_dirty(self, zone: str, changes: int = 1) -> None:
        """``changes``: requests (or expiries) that may have changed the zone."""
        now = self.clock()
        self._dirty.setdefault(zone, now)
        window = self._windows.get(zone)
        if window is None:
            window = self._windows[zone] = PublishWindow(self.publish_window,
                                                         self.publish_window_max)
        last = self._last_flush.get(zone)
        window.changed(now - last if last is not None else float("inf"), changes)

    def _due_at(self, zone: str) -> float:
        """When the changes of a dirty zone are due for publication."""
        last = self._last_flush.get(zone)
        return -float("inf") if last is None else last + self._windows[zone].window

    def _due_flushes(self) -> list[tuple[str, Call]]:
        """The flush calls of the zones with changes and an elapsed publish window."""
        now = self.clock()
        return [(zone, self.store.flush_call(zone)) for zone in self._dirty
                if now >= self._due_at(zone)]

    def _flush_due(self) -> None:
        flushes = self._due_flushes()
        if flushes:
            with self.redis.pipeline(transaction=False) as pipe:
                self.store.queue(pipe, [call for _, call in flushes])
                self._flushed(flushes, pipe.execute(raise_on_error=False))

    def _flushed(self, flushes: list[tuple[str, Call]], results: list[Any]) -> None:
        now = self.clock()
        for (zone, call), result in zip(flushes, results):
            if isinstance(result, redis.exceptions.NoScriptError):
                result = self.store.run(call)  # Redis lost its scripts: loads it
            if isinstance(result, Exception):
                log.error("publishing the changes of zone %s failed (tried again at the "
                          "next change): %s", zone, result)
            changed_at = self._dirty.pop(zone)
            self._last_flush[zone] = now
            self._windows[zone].published()
            if result and not isinstance(result, Exception):
                self.metrics.publish_latency.observe(now - changed_at)

    # -- a batch of requests -------------------------------------------------------------
    #
    # A batch is parsed and authenticated first (no I/O), then every request's replay
    # guard is recorded (one pipeline), then its requests go to the store in chunks: one
    # pipeline per chunk carries the chunk's script calls, then the replies and the
    # acknowledgements of the chunk before, then the flush of each zone whose publish
    # window has elapsed; one last pipeline answers the last chunk. Every request is
    # answered on its own: a refusal or a failure of one is that request's reply only; a
    # connection error leaves the unacknowledged entries pending (handled again, here or
    # by another replica).

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
        self._guard_replays([job for job in jobs if job.waiting])
        todo = [job for job in jobs if job.waiting]
        outbox = [job for job in jobs if not job.waiting]
        for start in range(0, len(todo), self.chunk):
            chunk = todo[start:start + self.chunk]
            self._round_trip(zone, chunk, outbox, ack)
            outbox = chunk
        if outbox:
            self._round_trip(zone, [], outbox, ack)

    def _admit(self, zone: str, entry_id: str, fields: dict[str, Any]) -> "Job":
        """Parse and authenticate one entry (no I/O). A refused entry is answered when it
        names a key; one that breaks the parser is logged and dropped."""
        self.handled += 1
        job = Job(entry_id)
        try:
            payload = fields.get("m", "")
            payload = payload.encode() if isinstance(payload, str) else payload
            try:
                request = messages.parse_request(payload)
            except InvalidInput as exc:
                self._refuse_unparsed(job, zone, payload, str(exc))
                return job
        except Exception:  # noqa: BLE001 - a poison entry is dropped (acknowledged)
            log.exception("dropped request entry %s of zone %s", entry_id, zone)
            return job
        job.request, job.channel = request, self.keys.reply(zone, request.key)
        try:
            if request.zone != zone:
                raise Forbidden(f"request for zone {request.zone} sent on the stream of "
                                f"zone {zone}")
            self._authenticate(request, payload, str(fields.get("mac", "")))
        except MeshError as exc:
            self._refuse(job, exc)
        except Exception as exc:  # noqa: BLE001 - that request's failure only
            self._fail(job, exc)
        return job

    def _authenticate(self, request: Request, payload: bytes, mac: str) -> None:
        if not proof.verify(self._mac_key(request.key), payload, mac):
            raise Forbidden("bad proof of possession: the request is not signed by the "
                            "private key of this public key")
        skew = time.time() - request.ts
        if abs(skew) > self.clock_skew:
            raise Forbidden(f"request timestamp is {skew:+.0f}s off the tower's clock "
                            f"(allowed: {self.clock_skew:.0f}s)")

    def _guard_replays(self, jobs: list["Job"]) -> None:
        """Record every request's nonce (one pipeline) and refuse the replays. The nonce
        keeps the entry id, so the same entry handled again (claimed after a replica
        died) is no replay."""
        if not jobs:
            return
        ttl = int(self.clock_skew * 2) + 1
        with self.redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                r = job.request
                pipe.set(self.keys.nonce(r.zone, r.key, r.nonce), job.entry_id, nx=True,
                         get=True, ex=ttl)
            holders = pipe.execute(raise_on_error=False)
        for job, holder in zip(jobs, holders):
            if isinstance(holder, Exception):
                self._fail(job, holder)
            elif holder is not None and holder != job.entry_id:
                self._refuse(job, Forbidden("replayed request refused"))

    def _round_trip(self, zone: str, chunk: list["Job"], outbox: list["Job"], ack: bool) -> None:
        """One pipeline: the chunk's store calls, the outbox's replies and
        acknowledgements, the due flushes. Sets the reply of every job of the chunk."""
        calls, called = [], []
        for job in chunk:
            try:
                if job.request.type != "endpoint-update":
                    calls.append(self._call(job))
                    called.append(job)
            except MeshError as exc:
                self._refuse(job, exc)
            except Exception as exc:  # noqa: BLE001 - that request's failure only
                self._fail(job, exc)
        changes = sum(1 for job in chunk if job.request.type != "heartbeat")
        if changes:
            self._mark_dirty(zone, changes)   # flushed after the calls, in this same pipeline
        flushes = self._due_flushes()
        stream = self.keys.requests(zone)
        ids = [job.entry_id for job in outbox] if ack else []
        with self.redis.pipeline(transaction=False) as pipe:
            self.store.queue(pipe, calls)
            for job in outbox:
                if job.channel is not None and job.reply is not None:
                    pipe.publish(job.channel, job.reply)
            if ids:
                pipe.xack(stream, REQUEST_GROUP, *ids)
                pipe.xdel(stream, *ids)
            self.store.queue(pipe, [call for _, call in flushes])
            replies = pipe.execute(raise_on_error=False)
        self._flushed(flushes, replies[len(replies) - len(flushes):])
        outcomes = replies[:len(calls)]
        for job, result in zip(called, self.store.results(calls, outcomes)):
            self._answer(job, result)
        late = [job for job in chunk if job.waiting]
        for job in late:   # endpoint updates: a read and a compare-and-set each (rare)
            self._answer(job, self._update_endpoint(job))
        if late or any(isinstance(r, redis.exceptions.NoScriptError) for r in outcomes):
            self._mark_dirty(zone, max(1, len(late)))   # changed after this pipeline's flush

    def _call(self, job: "Job") -> Call:
        r = job.request
        if r.type == "register":
            return self.store.register_call(r.zone, r.key, session=r.session,
                                            order=job.entry_id, **r.body)
        if r.type == "heartbeat":
            return self.store.heartbeat_call(r.zone, r.key, r.session)
        return self.store.remove_call(r.zone, r.key, "left", session=r.session,
                                      order=job.entry_id)

    def _update_endpoint(self, job: "Job") -> Any:
        """The new revision, or the exception that refused or failed the update."""
        r = job.request
        try:
            return self.store.update_endpoint(r.zone, r.key, r.session, r.body["endpoint"],
                                              r.body["nat_type"], order=job.entry_id)
        except redis.exceptions.ConnectionError:
            raise
        except Exception as exc:  # noqa: BLE001 - answered by _answer
            return exc

    def _answer(self, job: "Job", result: Any) -> None:
        """Set a job's reply from its store result (a value, or the exception raised)."""
        if isinstance(result, MeshError):
            self._refuse(job, result)
            return
        if isinstance(result, Exception):
            self._fail(job, result)
            return
        r = job.request
        if r.type == "register":
            log.info("registered %s in zone %s at %s (request %s)", r.key, r.zone,
                     result.address, r.id, extra={"request_id": r.id})
            fields = {"address": result.address, "prefix_len": result.prefix_len,
                      "cidr": result.cidr, "rev": result.rev}
        else:
            fields = {} if r.type == "heartbeat" else {"rev": result}
        job.reply = messages.reply(r.id, r.type, True, **fields)
        self._count(r, "ok")

    def _refuse(self, job: "Job", exc: MeshError) -> None:
        r = job.request
        code = protocol_code(exc)
        log.info("refused %s from %s in zone %s (request %s): %s", r.type, r.key, r.zone,
                 r.id, exc, extra={"request_id": r.id})
        job.reply = messages.reply(r.id, r.type, False, error=str(exc), code=code)
        self._count(r, code)

    def _fail(self, job: "Job", exc: Exception) -> None:
        r = job.request
        log.error("failed to handle %s request %s", r.type, r.id, exc_info=exc,
                  extra={"request_id": r.id})
        job.reply = messages.reply(r.id, r.type, False, error="internal error in the tower",
                                   code="error")
        self._count(r, "error")

    def _count(self, request: Request, result: str) -> None:
        if request.type == "register":
            self.metrics.registrations.labels(result).inc()

    def _mac_key(self, public_key: str) -> bytes:
        key = self._mac_keys.get(public_key)
        if key is None:
            key = proof.mac_key(self.tower_private, public_key)
            self._mac_keys[public_key] = key
            if len(self._mac_keys) > 100_000:
                self._mac_keys.popitem(last=False)
        return key

    def _refuse_unparsed(self, job: "Job", zone: str, payload: bytes, error: str) -> None:
        """Answer a malformed request when it names a valid key, else log and drop it."""
        try:
            data = json.loads(payload)
            if data.get("type") == "register":
                self.metrics.registrations.labels("invalid").inc()
            key = messages.public_key(data.get("key"))
            request_id = str(data.get("id", ""))[:64]
        except (ValueError, TypeError, AttributeError, RecursionError, MeshError):
            log.warning("dropped a malformed request on zone %s: %s", zone, error)
            return
        log.info("refused a malformed request from %s: %s", key, error)
        job.channel = self.keys.reply(zone, key)
        job.reply = messages.reply(request_id, "error", False, error=error, code="invalid")


@dataclass
class Job:
    """One stream entry on its way through a batch. ``request`` is None for an entry that
    is not a valid request; ``reply`` is set once answered, and sent to ``channel``."""
    entry_id: str
    request: Request | None = None
    channel: str | None = None
    reply: str | None = None

    @property
    def waiting(self) -> bool:
        """A valid request not answered yet."""
        return self.request is not None and self.reply is None

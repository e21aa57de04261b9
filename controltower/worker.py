"""The request worker: reads agent requests from the zones' streams and answers them.

Each zone has one request stream read by the consumer group ``controltower``, so every
request is handled by exactly one replica; entries left pending by a replica that died
are claimed by another after ``claim_idle`` seconds. Handlers are idempotent.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

import redis

from ipam.store import ZoneStore
from wire import messages, proof
from wire.errors import Conflict, Forbidden, InvalidInput, MeshError, NotFound
from wire.keys import REQUEST_GROUP
from wire.messages import Request

from . import logs, metrics, towerkey

log = logging.getLogger(__name__)

ERROR_CODES = {InvalidInput: "invalid", NotFound: "not-found", Conflict: "conflict",
               Forbidden: "forbidden"}


class RequestWorker:
    def __init__(self, store: ZoneStore, *, consumer: str | None = None,
                 clock_skew: float = 60.0, publish_window: float = 0.02,
                 claim_idle: float = 5.0, batch: int = 256, zone_refresh: float = 1.0,
                 reap_interval: float = 5.0, heartbeat_ttl: float = 10.0) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.consumer = consumer or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.clock_skew = clock_skew
        self.publish_window = publish_window
        self.claim_idle = claim_idle
        self.batch = batch
        self.zone_refresh = zone_refresh
        self.reap_interval = reap_interval
        self.heartbeat_ttl = heartbeat_ttl
        self.tower_private, self.tower_public = towerkey.load_or_create(self.redis, self.keys)
        self._mac_keys: OrderedDict[str, bytes] = OrderedDict()
        self._zones: list[str] = []
        self._zones_at = 0.0
        self._dirty: dict[str, float] = {}      # zone -> time of its first unpublished change
        self._last_flush: dict[str, float] = {}
        self._claimed_at = 0.0
        self._reaped_at = time.monotonic()
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
        now = time.monotonic()
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
            due = min(self._last_flush.get(z, 0.0) + self.publish_window for z in self._dirty)
            wait = min(wait, max(0.0, due - time.monotonic()))
        return max(1, int(wait * 1000))

    def _zone_of(self, stream: str) -> str:
        # ct:{zone}:requests
        return stream[stream.index("{") + 1:stream.rindex("}")]

    def _refresh_zones(self) -> None:
        self._zones = self.store.zone_names()
        self._zones_at = time.monotonic()

    def _handle_entries(self, zone: str, entries: list[tuple[str, dict[str, Any]]]) -> None:
        stream = self.keys.requests(zone)
        for entry_id, fields in entries:
            if fields:  # a claimed entry deleted meanwhile comes back empty
                self.handle(zone, entry_id, fields)
        with self.redis.pipeline(transaction=False) as pipe:
            ids = [entry_id for entry_id, _ in entries]
            pipe.xack(stream, REQUEST_GROUP, *ids)
            pipe.xdel(stream, *ids)
            pipe.execute()

    def _claim_abandoned(self) -> None:
        self._claimed_at = time.monotonic()
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
        self._reaped_at = time.monotonic()
        for zone in self._zones:
            for key in self.store.expire(zone):
                log.info("node %s of zone %s expired and was removed", key, zone)
                self._mark_dirty(zone)

    def _mark_dirty(self, zone: str) -> None:
        self._dirty.setdefault(zone, time.monotonic())

    def _flush_due(self) -> None:
        now = time.monotonic()
        for zone in list(self._dirty):
            if now - self._last_flush.get(zone, 0.0) >= self.publish_window:
                changed_at = self._dirty.pop(zone)
                self._last_flush[zone] = now
                if self.store.flush(zone):
                    self.metrics.publish_latency.observe(time.monotonic() - changed_at)

    # -- one request ---------------------------------------------------------------------

    def handle(self, zone: str, entry_id: str, fields: dict[str, Any]) -> None:
        """Handle one stream entry; never raises for bad input (it is acknowledged and
        dropped, so a poison entry cannot stop this or any other replica)."""
        try:
            self._handle_entry(zone, entry_id, fields)
        except redis.exceptions.ConnectionError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("dropped request entry %s of zone %s", entry_id, zone)

    def _handle_entry(self, zone: str, entry_id: str, fields: dict[str, Any]) -> None:
        self.handled += 1
        payload = fields.get("m", "")
        payload = payload.encode() if isinstance(payload, str) else payload
        try:
            request = messages.parse_request(payload)
        except InvalidInput as exc:
            self._reply_unparsed(zone, payload, str(exc))
            return
        token = logs.request_id.set(request.id)
        try:
            self._handle(zone, entry_id, fields, request, payload)
        finally:
            logs.request_id.reset(token)

    def _handle(self, zone: str, entry_id: str, fields: dict[str, Any], request: Request,
                payload: bytes) -> None:
        try:
            if request.zone != zone:
                raise Forbidden(f"request for zone {request.zone} sent on the stream of zone {zone}")
            self._authenticate(request, payload, str(fields.get("mac", "")), entry_id)
            result = self._dispatch(request)
            self._reply(request, True, **result)
            self._count(request, "ok")
        except MeshError as exc:
            code = ERROR_CODES.get(type(exc), "error")
            log.info("refused %s from %s in zone %s (request %s): %s", request.type,
                     request.key, zone, request.id, exc)
            self._reply(request, False, error=str(exc), code=code)
            self._count(request, code)
        except redis.exceptions.ConnectionError:
            raise
        except Exception:  # noqa: BLE001 - a worker must survive any single request
            log.exception("failed to handle %s request %s", request.type, request.id)
            self._reply(request, False, error="internal error in the tower", code="error")
            self._count(request, "error")

    def _count(self, request: Request, result: str) -> None:
        if request.type == "register":
            self.metrics.registrations.labels(result).inc()

    def _authenticate(self, request: Request, payload: bytes, mac: str, entry_id: str) -> None:
        if not proof.verify(self._mac_key(request.key), payload, mac):
            raise Forbidden("bad proof of possession: the request is not signed by the "
                            "private key of this public key")
        skew = time.time() - request.ts
        if abs(skew) > self.clock_skew:
            raise Forbidden(f"request timestamp is {skew:+.0f}s off the tower's clock "
                            f"(allowed: {self.clock_skew:.0f}s)")
        nonce_key = self.keys.nonce(request.zone, request.key, request.nonce)
        ttl = int(self.clock_skew * 2) + 1
        if not self.redis.set(nonce_key, entry_id, nx=True, ex=ttl):
            if self.redis.get(nonce_key) != entry_id:  # same entry again = redelivery
                raise Forbidden("replayed request refused")

    def _mac_key(self, public_key: str) -> bytes:
        key = self._mac_keys.get(public_key)
        if key is None:
            key = proof.mac_key(self.tower_private, public_key)
            self._mac_keys[public_key] = key
            if len(self._mac_keys) > 100_000:
                self._mac_keys.popitem(last=False)
        return key

    def _dispatch(self, request: Request) -> dict[str, Any]:
        zone, key, body = request.zone, request.key, request.body
        if request.type == "register":
            got = self.store.register(zone, key, session=request.session, **body)
            self._mark_dirty(zone)
            log.info("registered %s in zone %s at %s (request %s)", key, zone, got.address, request.id)
            return {"address": got.address, "prefix_len": got.prefix_len, "cidr": got.cidr,
                    "rev": got.rev}
        if request.type == "heartbeat":
            self.store.heartbeat(zone, key, request.session)
            return {}
        if request.type == "endpoint-update":
            rev = self.store.update_endpoint(zone, key, request.session, body["endpoint"],
                                             body["nat_type"])
            self._mark_dirty(zone)
            return {"rev": rev}
        # leave
        rev = self.store.remove_peer(zone, key, "left", session=request.session)
        self._mark_dirty(zone)
        return {"rev": rev}

    def _reply(self, request: Request, ok: bool, **fields: Any) -> None:
        channel = self.keys.reply(request.zone, request.key)
        self.redis.publish(channel, messages.reply(request.id, request.type, ok, **fields))

    def _reply_unparsed(self, zone: str, payload: bytes, error: str) -> None:
        """Answer a malformed request when it names a valid key, else log and drop it."""
        try:
            data = json.loads(payload)
            if data.get("type") == "register":
                self.metrics.registrations.labels("invalid").inc()
            key = messages.public_key(data.get("key"))
            request_id = str(data.get("id", ""))[:64]
        except (ValueError, TypeError, AttributeError, MeshError):
            log.warning("dropped a malformed request on zone %s: %s", zone, error)
            return
        log.info("refused a malformed request from %s: %s", key, error)
        self.redis.publish(self.keys.reply(zone, key),
                           messages.reply(request_id, "error", False, error=error, code="invalid"))

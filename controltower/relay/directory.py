"""A relay in Redis: its announcement, and the zone members it may serve.

The record (``ct:relays``: id -> JSON) tells agents where the relay is and its key;
``ct:relays:seen`` (id scored by unix time) says it is alive. Members are read per zone
(``HKEYS ct:{z}:peers``) every ``refresh`` seconds; a key missing from that copy is
looked up at once (a node binds right after it registered), and a miss is remembered
for ``negative_ttl`` so a stranger cannot make every datagram a Redis round trip.
"""
from __future__ import annotations

import base64
import json
import logging
import threading
import time
from dataclasses import dataclass

from wire.keys import Keys

import redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelayRecord:
    id: str
    region: str
    host: str | None          # None: agents use the controller's host
    port: int
    public_key: str
    zones: tuple[str, ...]    # ("*",): every zone
    started: float

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "region": self.region, "host": self.host,
                           "port": self.port, "public_key": self.public_key,
                           "zones": list(self.zones), "started": self.started},
                          separators=(",", ":"))


class Directory:
    def __init__(self, client: redis.Redis, record: RelayRecord, keys: Keys = Keys(),
                 refresh: float = 5.0, negative_ttl: float = 1.0) -> None:
        self.redis = client
        self.record = record
        self.keys = keys
        self.refresh = refresh
        self.negative_ttl = negative_ttl
        self._members: dict[str, frozenset[bytes]] = {}
        self._misses: dict[tuple[str, bytes], float] = {}
        self._lock = threading.Lock()

    def announce(self) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.keys.relays, self.record.id, self.record.to_json())
            pipe.zadd(self.keys.relays_seen, {self.record.id: time.time()})
            pipe.execute()

    def withdraw(self) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(self.keys.relays, self.record.id)
            pipe.zrem(self.keys.relays_seen, self.record.id)
            pipe.execute()

    def refresh_members(self) -> None:
        if "*" in self.record.zones:
            zones = sorted(z.decode() if isinstance(z, bytes) else z
                           for z in self.redis.smembers(self.keys.zones))
        else:
            zones = list(self.record.zones)
        with self.redis.pipeline(transaction=False) as pipe:
            for zone in zones:
                pipe.hkeys(self.keys.peers(zone))
            found = pipe.execute()
        members = {}
        for zone, keys in zip(zones, found):
            members[zone] = frozenset(_raw(k) for k in keys)
        with self._lock:
            self._members = members
            self._misses.clear()

    def serves(self, zone: str) -> bool:
        return "*" in self.record.zones or zone in self.record.zones

    def is_member(self, zone: str, key: bytes) -> bool:
        if key in self._members.get(zone, ()):
            return True
        now = time.monotonic()
        with self._lock:
            if self._misses.get((zone, key), 0.0) > now:
                return False
        found = bool(self.redis.hexists(self.keys.peers(zone), base64.b64encode(key).decode()))
        with self._lock:
            if found:
                self._members[zone] = self._members.get(zone, frozenset()) | {key}
            else:
                if len(self._misses) > 100_000:
                    self._misses.clear()
                self._misses[(zone, key)] = now + self.negative_ttl
        return found


def _raw(key: bytes | str) -> bytes:
    text = key.decode() if isinstance(key, bytes) else key
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return b""


def prune(client: redis.Redis, keys: Keys, stale: float = 60.0) -> list[str]:
    """Remove the records of relays not seen for ``stale`` seconds; returns their ids."""
    gone = [g.decode() if isinstance(g, bytes) else g
            for g in client.zrangebyscore(keys.relays_seen, 0, time.time() - stale)]
    if gone:
        with client.pipeline(transaction=False) as pipe:
            pipe.hdel(keys.relays, *gone)
            pipe.zrem(keys.relays_seen, *gone)
            pipe.execute()
    return gone


def read_relays(client: redis.Redis, keys: Keys) -> list[dict]:
    """Every announced relay's record with ``seen`` (unix time), sorted by id."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.relays)
        pipe.zrange(keys.relays_seen, 0, -1, withscores=True)
        records, seen = pipe.execute()
    seen_at = {(k.decode() if isinstance(k, bytes) else k): score for k, score in seen}
    out = []
    for rid, text in records.items():
        rid = rid.decode() if isinstance(rid, bytes) else rid
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if isinstance(record, dict):
            record["seen"] = seen_at.get(rid)
            out.append(record)
    return sorted(out, key=lambda r: str(r.get("id")))

"""Per-process cache of each zone's ``GET /peers`` answer, exact for its peer set.

Every request reads the zone's state, ``(created, rev)``, in one round trip: ``rev`` is
bumped by every write to the zone's peer records (register, endpoint change, removal,
expiry) and ``created`` tells a zone recreated under the same name (its ``rev`` starts
again at 0). A cached answer is served only while that state is unchanged, so the peer
set and every record field are always those of the moment of the request.

``LastSeen`` and ``Online`` come from the heartbeat set, which changes all the time
without a revision: the cached answer is also reloaded once it is ``max_age`` seconds
old (which also bounds what any unforeseen path to a stale state could show). A reload
reads the records, the revision and the heartbeats in one transaction, and parses and
renders only the records that changed since the last load. While one thread reloads an
expired answer of an unchanged revision, the others keep serving the previous one;
after a change they wait for the new one.
"""
from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ipam.store import ZoneStore
from wire import messages
from wire import snapshot as snapshots
from wire.errors import NotFound

from . import render

State = tuple[str, int]       # (zone created, zone revision)
STATE_FIELDS = ("name", "created")


@dataclass(frozen=True)
class Record:
    """A peer record as read from Redis, and encoded for the API."""
    raw: str
    encoded: render.EncodedPeer


@dataclass(frozen=True)
class Answer:
    """One zone's encoded peer list as of ``state``, read at ``loaded`` (monotonic)."""
    zone: str
    state: State
    loaded: float
    body: bytes                        # the encoded JSON list
    etag: str
    records: dict[str, Record] = field(repr=False)


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    answer: Answer | None = None


class PeerCache:
    def __init__(self, store: ZoneStore, offline_after: float, max_age: float = 1.0,
                 max_zones: int = 256, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.offline_after = offline_after
        self.max_age = max_age
        self.max_zones = max_zones
        self.clock = clock
        self.wall_clock = wall_clock
        self._slots: dict[str, _Slot] = {}
        self._slots_lock = threading.Lock()

    def answer(self, zone: str) -> Answer:
        """The zone's peer list; NotFound when the zone does not exist."""
        zone = messages.zone_name(zone)
        began = self.clock()
        try:
            state = self._state(zone)
        except NotFound:
            self._forget(zone)
            raise
        slot = self._slot(zone)
        cached = slot.answer
        if self._usable(cached, state, began):
            return cached
        if _not_older(cached, state):
            if not slot.lock.acquire(blocking=False):
                return cached            # expired, and another thread is reloading it
        else:
            slot.lock.acquire()
        try:
            cached = slot.answer
            if self._usable(cached, state, began):
                return cached            # loaded by another thread while we waited
            slot.answer = self._load(zone, cached)
            return slot.answer
        except NotFound:
            self._forget(zone)
            raise
        finally:
            slot.lock.release()

    def _usable(self, answer: Answer | None, state: State, began: float) -> bool:
        """Not older than ``state``, and read after the request began or within max_age."""
        return _not_older(answer, state) and (answer.loaded >= began
                                              or began - answer.loaded < self.max_age)

    def _forget(self, zone: str) -> None:
        with self._slots_lock:
            self._slots.pop(zone, None)

    def _slot(self, zone: str) -> _Slot:
        slot = self._slots.get(zone)
        if slot is None:
            with self._slots_lock:
                while len(self._slots) >= self.max_zones:       # forget the oldest zone
                    self._slots.pop(next(iter(self._slots)), None)
                slot = self._slots.setdefault(zone, _Slot())
        return slot

    def _read(self, read: snapshots.Read) -> snapshots.Snapshot:
        """One transaction (``wire.snapshot``); NotFound when the zone does not exist."""
        with self.store.redis.pipeline(transaction=True) as pipe:
            snapshots.queue(pipe, snapshots.commands(self.store.keys, read))
            return snapshots.parse(read, pipe.execute())

    def _state(self, zone: str) -> State:
        return _state_of(self._read(snapshots.Read(zone, STATE_FIELDS, peers=False)))

    def _load(self, zone: str, previous: Answer | None) -> Answer:
        loaded = self.clock()
        found = self._read(snapshots.Read(zone, STATE_FIELDS, peers=True, seen=True))
        records = _parse(zone, found.records, previous.records if previous is not None else {})
        peers = [records[key].encoded for key in sorted(records)]
        body = render.peer_list(peers, found.seen, self.offline_after, self.wall_clock())
        return Answer(zone, _state_of(found), loaded, body, _etag(body), records)


def _not_older(answer: Answer | None, state: State) -> bool:
    """Whether an answer holds the zone's peers as of ``state`` or later. Revisions only
    grow within one zone's life, so a higher one was read after ``state`` was."""
    return answer is not None and answer.state[0] == state[0] and answer.state[1] >= state[1]


def _state_of(found: snapshots.Snapshot) -> State:
    return (found.fields["created"] or "", found.rev)


def _parse(zone: str, raw: dict[str, str], known: dict[str, Record]) -> dict[str, Record]:
    """The records; those whose raw text is unchanged since the last load are reused."""
    out = {}
    for key, text in raw.items():
        old = known.get(key)
        if old is not None and old.raw == text:
            out[key] = old
        else:
            out[key] = Record(text, render.encoded_peer(zone, messages.parse_peer(text)))
    return out


def _etag(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def combined_etag(answers: list[Answer]) -> str:
    """The ETag of several zones' lists in one answer."""
    return _etag(" ".join(f"{a.zone}:{a.etag}" for a in answers).encode())

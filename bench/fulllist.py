"""``--mode full-list``: how the original distributed a zone, rebuilt for comparison.

The original published the whole peer list of a zone on a pub/sub channel after every
change, and every agent rebuilt its interface from it. Our tower publishes deltas only,
so the benchmark adds a small publisher: it follows the tower's update channel and, for
every new zone revision, publishes the zone's complete peer list (every stored peer
record, read in one transaction with the revision) on a channel of its own::

    {"v": 1, "zone": "bench", "rev": 42, "peers": [<peer record>, <peer record>, ...]}

Agents in full-list mode are the real agent following that channel instead of the delta
channel (a ``Keys`` whose ``updates`` names it). Each full list reaches the agent as one
zone update that upserts every peer of the list and removes the peers that left
(:class:`ListUpdates`), so the agent loads the whole list into its mirror and reconciles
all of it on every message. The publisher adds one local hop (a few ms) that the
original did not have; the bytes each agent receives per change are what the original
sent.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import redis

from wire import messages
from wire.errors import InvalidInput
from wire.keys import Keys
from wire.messages import Change, Peer, ZoneUpdate

log = logging.getLogger(__name__)


class FullListKeys(Keys):
    """Key names with the zone's update channel replaced by the full-list channel."""

    def updates(self, zone: str) -> str:
        return self._z(zone, "full-list")


@dataclass(frozen=True)
class FullList:
    zone: str
    rev: int
    peers: dict[str, Peer]


def encode(zone: str, rev: int, records: list[str]) -> str:
    return (f'{{"v":1,"zone":{json.dumps(zone)},"rev":{rev},"peers":['
            + ",".join(records) + "]}")


def parse(payload: bytes | str) -> FullList:
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("full list is not JSON") from None
    if not isinstance(data, dict) or data.get("v") != 1 or not isinstance(data.get("peers"), list):
        raise InvalidInput("full list must be a version 1 object with a peer list")
    rev = data.get("rev")
    if not isinstance(rev, int) or isinstance(rev, bool) or rev < 0:
        raise InvalidInput("full list revision is malformed")
    peers = {}
    for record in data["peers"]:
        peer = messages.parse_peer(record)
        peers[peer.key] = peer
    return FullList(messages.zone_name(data.get("zone")), rev, peers)


class ListUpdates:
    """Full lists as the zone updates the agent applies: every peer upserted, the peers
    missing since the list before removed. The agents of a process receive the same lists
    in the same order; the list before each one is remembered per revision, so parsing a
    list again (per agent) gives the same update."""

    def __init__(self, remember: int = 64) -> None:
        self.remember = remember
        self._last: FullList | None = None
        self._before: OrderedDict[int, tuple[int, tuple[str, ...]]] = OrderedDict()

    def __call__(self, payload: bytes | str) -> ZoneUpdate:
        full = parse(payload)
        found = self._before.get(full.rev)
        if found is None:
            last = self._last
            since = last.rev if last is not None and last.rev < full.rev else 0
            gone = tuple(sorted(last.peers.keys() - full.peers.keys())) if last else ()
            found = self._before[full.rev] = (since, gone)
            if len(self._before) > self.remember:
                self._before.popitem(last=False)
            if last is None or full.rev > last.rev:
                self._last = full
        since, gone = found
        changes = [Change(full.rev, "upsert", peer=p) for p in full.peers.values()]
        changes += [Change(full.rev, "remove", key=k, reason="left") for k in gone]
        return ZoneUpdate(full.zone, since, full.rev, tuple(changes))


class FullListPublisher:
    """Republishes the whole peer list on every new revision of one zone (a thread)."""

    def __init__(self, client: redis.Redis, zone: str, keys: Keys | None = None) -> None:
        self.client = client
        self.zone = zone
        self.keys = keys or Keys()
        self.channel = FullListKeys(self.keys.prefix).updates(zone)
        self.published = 0
        self.bytes = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="full-list-publisher", daemon=True)

    def __enter__(self) -> "FullListPublisher":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the full-list publisher did not subscribe within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.keys.updates(self.zone))
        self._ready.set()
        last = -1
        try:
            while not self._stop.is_set():
                msg = pubsub.get_message(timeout=0.2)
                if msg is None or msg.get("type") != "message":
                    continue
                while pubsub.get_message(timeout=0) is not None:
                    pass  # several deltas queued: one full list covers them all
                last = self._publish(last)
        except redis.exceptions.ConnectionError as exc:
            if not self._stop.is_set():
                log.warning("full-list publisher lost Redis: %s", exc)
        finally:
            pubsub.close()

    def _publish(self, last: int) -> int:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.rev(self.zone))
            pipe.hvals(self.keys.peers(self.zone))
            rev, records = pipe.execute()
        rev = int(rev or 0)
        if rev <= last:
            return last
        payload = encode(self.zone, rev, records)
        self.client.publish(self.channel, payload)
        self.published += 1
        self.bytes += len(payload)
        return rev

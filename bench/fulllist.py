"""``--mode full-list``: how the original distributed a zone, rebuilt for comparison.

The original published the whole peer list of a zone on a pub/sub channel after every
change, and every agent rebuilt its interface from it. Our tower publishes deltas only,
so the benchmark adds a small publisher: it follows the tower's update channel and, for
every new zone revision, publishes the zone's complete peer list (every stored peer
record, read in one transaction with the revision) on a channel of its own::

    {"v": 1, "zone": "bench", "rev": 42, "peers": [<peer record>, <peer record>, ...]}

Agents in full-list mode are the real agent following that channel instead of the delta
channel (a ``Keys`` whose ``updates`` names it). Each full list is a snapshot to the agent
(:class:`ListSnapshots`): it loads the whole list into its mirror and reconciles the whole
zone against its device on every message (its resync). The publisher adds one local hop (a few ms) that the
original did not have; the bytes each agent receives per change are what the original
sent.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass

import redis

from wire import messages
from wire.errors import InvalidInput
from wire.keys import Keys
from aircrew.session import ZoneSnapshot
from wire.messages import Peer, ZoneUpdate

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


class ListSnapshots:
    """Full lists as the agent takes them: each one is a snapshot.

    A list reaches the agent as an update that starts past the agent's revision (a gap),
    so the agent resyncs; the snapshot it then reads (``latest``, in place of a read from
    Redis) is the newest list. The agent thus loads the whole list into its mirror and
    reconciles the whole zone against its device on every message, as the original's
    agents rebuilt from every list."""

    def __init__(self) -> None:
        self.latest: FullList | None = None

    def __call__(self, payload: bytes | str) -> ZoneUpdate:
        full = parse(payload)
        if self.latest is None or full.rev >= self.latest.rev:
            self.latest = full
        return ZoneUpdate(full.zone, full.rev, full.rev, ())

    def snapshot(self, cidr: str) -> ZoneSnapshot | None:
        """The newest list as a zone snapshot (None before the first list)."""
        if self.latest is None:
            return None
        return ZoneSnapshot(cidr, self.latest.rev, self.latest.peers)


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

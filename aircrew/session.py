"""The agent's side of the wire protocol: requests, replies, snapshots and zone updates.

Used by the real agent and by the benchmark's simulated agents alike. One pub/sub
connection carries both the node's reply channel and the zone's update channel; it is
subscribed before any request is sent, so no reply and no update can be missed.

A request is published on the node's own request channel (``Route``), where the tower's
gate hears it; the node's Redis user may publish there and nowhere else, and writes no
key. ``PUBLISH`` answers how many listened: none means no tower is running.

On a Redis Cluster (``sharded``) the agent talks to its zone's shard only (every key and
channel of its zone is in one slot): the tower's replies and updates come on sharded
pub/sub (``SSUBSCRIBE``), requests still go on classic pub/sub (the tower hears them on
any node; the count ``PUBLISH`` answers is that node's listeners only, so a zero proves
nothing there). A ``sunsubscribe`` the session did not ask for (the slot moved to
another shard, or its primary was demoted) is a lost connection: the agent reconnects
to the zone's shard and resyncs.
"""
from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from wire import messages, proof
from wire import snapshot as snapshots
from wire.errors import InvalidInput, MeshError, NotFound, Unavailable, code_of
from wire.keys import Keys, node_id
from wire.logs import Throttle
from wire.messages import Peer, Request, ZoneUpdate

from .inbox import Inbox
from .pubsubreader import reader_for

log = logging.getLogger(__name__)
# Malformed messages from the controller: a few lines and a summary, not one line each.
_THROTTLE = Throttle(log)


class TowerRefused(MeshError):
    """The tower answered a request with an error; ``code`` says which kind."""

    def __init__(self, message: str, code: str = "error", request_id: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id    # of the refused request, for the logs


class NoReply(MeshError):
    """The tower did not answer in time (it may be down)."""


@dataclass(frozen=True)
class Route:
    """The channels of a session: where requests go, where replies and zone updates come."""
    request: str
    reply: str
    updates: str | None = None
    sharded: bool = False        # replies and updates on sharded pub/sub (Redis Cluster)

    @classmethod
    def node(cls, keys: Keys, zone: str, public_key: str, sharded: bool = False) -> Route:
        nid = node_id(public_key)
        return cls(keys.request_channel(zone, nid), keys.reply(zone, node=nid),
                   keys.updates(zone), sharded)

    @classmethod
    def enroll(cls, keys: Keys, zone: str, cred: str, public_key: str,
               sharded: bool = False) -> Route:
        """Enrollment with a join key (``cred`` its id) or the zone secret (``zone``)."""
        nid = node_id(public_key)
        return cls(keys.enroll_channel(zone, cred, nid), keys.enrolled_channel(zone, cred, nid),
                   None, sharded)


@dataclass(frozen=True)
class ZoneSnapshot:
    cidr: str
    rev: int
    peers: dict[str, Peer]
    policy: str | None = None       # the stored policy (``wire.policy.stored``); None: none


class TowerSession:
    def __init__(self, client: aioredis.Redis, zone: str, private_key: str, *,
                 keys: Keys | None = None, session_id: str | None = None,
                 route: Route | None = None, sharded: bool = False) -> None:
        self.client = client
        self.zone = messages.zone_name(zone)
        self.private_key = private_key
        self.policies = True        # read the zone's policy with the snapshot
        self.public_key = proof.public_key_of(private_key)
        self.keys = keys or Keys()
        self.route = route or Route.node(self.keys, self.zone, self.public_key, sharded)
        self.session_id = session_id or uuid.uuid4().hex
        self.updates: Inbox[ZoneUpdate] = Inbox()
        self.bytes_received = 0
        self.lost = asyncio.Event()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._pubsub: aioredis.client.PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tower_public: str | None = None

    async def open(self) -> None:
        """Subscribe to the reply and update channels (before any request)."""
        self.lost.clear()
        channels = [c for c in (self.route.reply, self.route.updates) if c is not None]
        if self.route.sharded:
            # Subscription messages kept: a sunsubscribe pushed by the server must be seen.
            self._pubsub = self.client.pubsub(ignore_subscribe_messages=False)
            await self._pubsub.ssubscribe(*channels)
        else:
            self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            await self._pubsub.subscribe(*channels)
        self._reader = asyncio.create_task(self._read(), name=f"pubsub-{self.zone}")
        # The copy in the zone's slot (a Redis Cluster: this shard), else the tower's own
        # (a tower older than the copy).
        try:
            public = await self.client.get(self.keys.zone_tower(self.zone))
        except redis.exceptions.NoPermissionError:
            public = None        # a tower older than the copy: its users may not read it
        if public is None:
            public = await self.client.get(self.keys.tower_public)
        if public is None:
            raise Unavailable("no ControlTower has started on this Redis yet")
        self._tower_public = public if isinstance(public, str) else public.decode()

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing anyway
                pass
            self._reader = None
        if self._pubsub:
            try:
                await self._pubsub.aclose()
            except Exception:  # noqa: BLE001 - the connection may already be gone
                pass
            self._pubsub = None
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self.updates.close()

    async def _read(self) -> None:
        assert self._pubsub is not None
        updates_channel = self.route.updates
        try:
            reader = reader_for(self._pubsub)
            while True:
                kind, channel, data = await reader.next()
                if kind == "sunsubscribe":
                    # Not asked for (we never unsubscribe): the slot left this node.
                    raise Unavailable("the zone's shard moved (slot migration or failover)")
                if kind not in ("message", "smessage"):
                    continue
                self.bytes_received += len(data)
                channel = channel.decode() if isinstance(channel, bytes) else channel
                if channel == updates_channel:
                    self._on_update(data)
                else:
                    self._on_reply(data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure means the link is gone
            log.warning("lost the connection to the controller: %s", exc)
            self.lost.set()
            self.updates.wake()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(Unavailable("lost the connection to the controller"))

    def _on_update(self, data: bytes | str) -> None:
        try:
            update = messages.parse_update(data)
        except InvalidInput as exc:
            _THROTTLE.log(logging.WARNING, "update", "ignored a malformed zone update: %s", exc,
                          summary="malformed zone updates ignored")
            return
        if update.zone == self.zone:
            self.updates.put_nowait(update)

    def _on_reply(self, data: bytes | str) -> None:
        try:
            reply = json.loads(data)
            reply_id = reply.get("id") if isinstance(reply, dict) else None
            future = self._pending.get(reply_id) if isinstance(reply_id, str) else None
        except (ValueError, UnicodeDecodeError):
            _THROTTLE.log(logging.WARNING, "reply", "ignored a malformed reply",
                          summary="malformed replies ignored")
            return
        if future is not None and not future.done():
            future.set_result(reply)

    async def request(self, kind: str, body: dict[str, Any] | None = None,
                      timeout: float = 5.0, attempts: int = 1) -> dict[str, Any]:
        """Send a signed request; return the reply or raise TowerRefused / NoReply."""
        if self._tower_public is None:
            raise Unavailable("session is not open")
        request_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            for attempt in range(attempts):
                request = Request(kind, self.zone, self.public_key, body or {},
                                  session=self.session_id, id=request_id)
                packed = request.packed(self.private_key, self._tower_public)
                await self._publish(packed, timeout)
                # Waits without cancelling the future on a timeout (the next attempt
                # waits for the same reply) and without a task of its own.
                await asyncio.wait((future,), timeout=timeout)
                if future.done():
                    reply = future.result()
                    break
                log.info("no reply to %s request %s after %.0fs (attempt %d of %d)",
                         kind, request_id, timeout, attempt + 1, attempts,
                         extra={"request_id": request_id})
            else:
                raise NoReply(f"the tower did not answer the {kind} request")
        finally:
            self._pending.pop(request_id, None)
        if not reply.get("ok"):
            raise TowerRefused(str(reply.get("error", "refused")), str(reply.get("code", "error")),
                               request_id)
        return reply

    async def _publish(self, packed: bytes, timeout: float) -> None:
        """Publish a request; a tower that is (re)starting may not listen yet: try again
        for up to ``timeout`` before giving up (Unavailable: tunnels stay, retry later)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.05
        if self.route.sharded:        # the count is this node's listeners only
            await self.client.publish(self.route.request, packed)
            return
        while not await self.client.publish(self.route.request, packed):
            if loop.time() + delay > deadline:
                raise Unavailable("no ControlTower is listening for requests")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def snapshot(self) -> ZoneSnapshot:
        """A consistent (revision, peers) pair, read in one transaction (``wire.snapshot``);
        a malformed peer record is skipped with a warning."""
        read = snapshots.Read(self.zone, fields=("cidr",), policy=self.policies)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                snapshots.queue(pipe, snapshots.commands(self.keys, read))
                replies = await pipe.execute()
        except redis.exceptions.ResponseError as exc:
            if not read.policy or ("NOPERM" not in str(exc) and "EXECABORT" not in str(exc)):
                raise
            # A tower older than this agent: its node users may not read policies, and
            # it has none to send.
            log.info("the tower does not let this node read zone policies: reading without")
            self.policies = False
            return await self.snapshot()
        try:
            found = snapshots.parse(read, replies)
        except NotFound as exc:
            raise TowerRefused(str(exc), code_of(NotFound)) from None
        peers = snapshots.peers(found.records, lambda exc: _THROTTLE.log(
            logging.WARNING, "record", "skipped a malformed peer record in the snapshot: %s",
            exc, summary="malformed peer records skipped"))
        return ZoneSnapshot(found.fields["cidr"], found.rev, peers, found.policy)

    async def revision(self) -> int:
        """The highest revision published on the zone's update channel.

        Not the zone's ``rev``: the tower publishes changes a moment after committing them
        (coalesced), so a revision above ``published`` is not missed, only on its way.
        """
        try:
            value = await self.client.get(self.keys.published(self.zone))
        except redis.exceptions.NoPermissionError:
            # A tower older than this agent: its agent user may read ``rev`` only.
            value = await self.client.get(self.keys.rev(self.zone))
        return int(value or 0)

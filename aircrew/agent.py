"""The agent's connection loop: register, follow the zone, keep the device equal to it.

Tower or Redis unreachable: every tunnel stays as it is; the agent retries with
jittered backoff and resyncs (subscribe, snapshot, buffered updates) when back. A
heartbeat, revision check or read of the relays whose command fails while the
subscription is intact is tried again at its next turn instead (``Agent._command``).

An update is applied to the peers it touched only, against what was last applied
(``reconcile.Applied``): no pass over the zone, no device read. The whole zone is diffed
against the device read back at start, after a resync, on the drift check and after a
failed device operation. The changes are carried out by ``aircrew.applier``; the state
files are written off that path by ``aircrew.statewriter`` (at most once per
``SAVE_INTERVAL``, at once after a resync and on exit).
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

import redis
import redis.asyncio as aioredis

from wire import identity, redisconn
from wire import policy as policies
from wire.errors import (InvalidInput, MeshError, NotFound, Removed, Superseded, Unavailable,
                         code_of)
from wire.keys import Keys, node_id
from wire.messages import ZoneUpdate
from wire.policy import Member
from wire.proof import public_key_of

from .applier import Links, apply_ops, apply_zone, ensure_device
from .device import Device, DeviceState
from .device_errors import DeviceError
from .firewall import Firewall
from .inbox import Inbox
from .mirror import Outcome, ZoneMirror
from .credential import CredentialFile, NodeCredential
from .hosts import HostsFile
from .enroll import EnrollRefused, enroll
from .paths import NodeView
from .pathkeeper import PathKeeper
from .pathservice import PeerLink
from .reconcile import Applied, ResetPeer, UpdatePeer, peer_config
from .session import NoReply, TowerRefused, TowerSession
from .state import StateFiles
from .statewriter import AgentState, StateWriter

log = logging.getLogger(__name__)
T = TypeVar("T")

# NoPermissionError: the tower suspended this node's publish right (it flooded the tower)
# or is re-applying users: keep the tunnels, try again.
# On a Redis Cluster: MOVED/ASK (AskError is MovedError's base), TRYAGAIN and CLUSTERDOWN
# (a slot migrating, a failover under way): reconnect to the zone's shard and resync.
CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                     redis.exceptions.NoPermissionError, OSError, Unavailable, NoReply,
                     redis.exceptions.AskError, redis.exceptions.TryAgainError,
                     redis.exceptions.ClusterDownError)


class AgentExit(MeshError):
    """The agent must stop: the message says why. ``status`` is the exit status: 1 for a
    refusal that a fix on this node may cure, 3 when the tower ended this node
    (deleted, superseded, zone deleted): a supervisor must not restart it."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


ENDED = 3
# Reasons of a removal after which the node must not register again (protocol.md).
REMOVED = {"deleted": "by an administrator", "key-expired": "its credential expired",
           "ephemeral": "an ephemeral node, offline too long"}
# Reconnect delays (seconds, before a 0.5-1.5 jitter): short, so a node that was cut off
# converges within seconds of its link coming back; a refused connection is cheap.
RETRY_MIN = 0.5
RETRY_MAX = 2.0
# A published revision above ours is taken for a missed update only when a second look
# this much later still finds it missing (it may have been in a socket buffer).
REVISION_RECHECK = 2.0
# Snapshots in a row a resync takes while updates buffered meanwhile show a gap.
RESYNC_ATTEMPTS = 3
# A heartbeat, revision check or read of the relays whose command failed to reach Redis
# (a new connection timed out, say) while the subscription is intact is tried again at
# its next turn; this many such failures in a row end the session as any connection
# error does.
COMMAND_FAILURES = 3
COMMAND_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def controller_client(url: str, tls: dict[str, str] | None = None) -> aioredis.Redis:
    """The agent's asyncio client for a redis://, rediss:// (``tls``: ssl_* options),
    unix:// or redis+sentinel:// URL (``wire.redisconn``)."""
    return redisconn.connect_async(url, tls, decode_responses=True, encoding_errors="replace",
                                   socket_connect_timeout=5, socket_keepalive=True,
                                   health_check_interval=15)


class EndpointSource(Protocol):
    def discover(self, port_in_use: bool) -> tuple[str | None, str | None]:
        """(endpoint "ip:port" or None, NAT type or None)."""


@dataclass
class AgentSettings:
    zone: str
    private_key: str
    controller_urls: list[str]          # tried in order until one authenticates
    controller_tls: dict[str, str] = field(default_factory=dict)  # ssl_* for rediss://
    listen_port: int = 51820
    child_prefixes: tuple[str, ...] = ()
    request_ip: str | None = None
    heartbeat_interval: float = 10.0
    endpoint_interval: float = 60.0
    revision_interval: float = 30.0
    drift_interval: float = 60.0        # whole zone against the device read back
    request_timeout: float = 5.0
    key_prefix: str = "ct:"
    hostname: str = field(default_factory=socket.gethostname)
    # Per-node identity: the node's own credential (kept in ``credentials``), got once
    # by enrolling with ``join_key`` or, where the zone allows it, the zone secret.
    controller: str = ""                 # host[:port] or URL, without credentials
    join_key: str | None = None
    zone_secret: str | None = None
    name: str | None = None
    credentials: CredentialFile | None = None
    hosts: HostsFile | None = None       # the zone's names, <name>.<zone>[.suffix]
    relays: bool = True                 # use the zone's relays and probe direct paths
    controller_host: str | None = None  # where relays without an address of their own are
    relayed_endpoint_interval: float = 5.0    # endpoint re-checks while a peer is relayed


class Agent:
    def __init__(self, settings: AgentSettings, device: Device, links: Links,
                 endpoints: EndpointSource, state: StateFiles,
                 client_factory=None, firewall: Firewall | None = None) -> None:
        self.s = settings
        self.device = device
        self.links = links
        self.endpoints = endpoints
        self.keys = Keys(settings.key_prefix)
        self.urls = list(settings.controller_urls)
        factory = client_factory or (lambda url: controller_client(url, settings.controller_tls))
        # A Redis Cluster: every key and channel of the zone is on one shard, found by the
        # MOVED its first key answers; a node's client goes there (``_home``).
        self.sharded = redisconn.is_cluster_url(settings.controller or self.urls[0])
        self.home: tuple[str, int] | None = None
        self._directory: aioredis.Redis | None = None   # the cluster node of ct:relays
        self.client_factory = (lambda url: factory(self._node_url(url))) if self.sharded \
            else factory
        self.mirror = ZoneMirror()
        self.applied = Applied()
        self._touched: set[str] = set()     # peers changed since the last reconcile
        self.firewall = firewall            # None: policies are not enforced here
        self._closed = False                # the firewall's state the device follows
        self._reported: dict | None = None  # the policy state the last heartbeat carried
        self._behind: int | None = None     # a published revision missing at the last check
        self._command_failures = 0          # periodic commands failed in a row (``_command``)
        self._ahead: int | None = None      # a published revision below ours at the last check
        self.assignment: dict[str, Any] | None = None
        self.endpoint: str | None = None
        self.nat_type: str | None = None
        self.session: TowerSession | None = None
        self.stop = asyncio.Event()
        # Device and route calls block (UAPI and netlink sockets) and must not overlap;
        # the kernel backend's pyroute2 also runs an event loop of its own, which cannot
        # run inside ours. So they all run in order on one thread of their own: the
        # agent's (``_on_device``) and the metrics endpoint's (``read_device``).
        self._device_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="device")
        self.state_writer = StateWriter(state, self._state_now)
        self._state_thread = self.state_writer.thread
        self.resyncs = 0
        self._authenticated = False   # the controller accepted our credentials once
        self._stored_refused = False  # this login attempt: the stored credential was refused
        self._rejoined = False        # removed: tried the join key once
        self.public_key = public_key_of(settings.private_key)
        self.paths: PathKeeper | None = None
        if settings.relays and settings.controller_host:
            self.paths = PathKeeper(settings.private_key, settings.zone, settings.listen_port,
                                    settings.controller_host)
        self._paths_lock = asyncio.Lock()
        self._published_home: str | None = None
        self._paths_saved = float("-inf")
        self._paths_shown: dict = {}
        self._synced = False

    def _node_url(self, url: str) -> str:
        """A redis+cluster:// URL as a redis:// URL of the zone's shard (once known) or
        of one of its seeds, at random (any node answers MOVED for the zone's keys)."""
        if not redisconn.is_cluster_url(url):
            return url
        cluster = redisconn.parse_cluster_url(url)
        return cluster.node_url(*(self.home or random.choice(cluster.nodes)))

    async def _to_shard(self, client: aioredis.Redis, url: str) -> aioredis.Redis:
        """On a Redis Cluster, the client of the node that holds the zone's slot: the
        first read of a zone key answers MOVED elsewhere (the node's Redis user needs no
        CLUSTER rights for that)."""
        if not self.sharded:
            return client
        # The tower key's copy; a removed node's user may read its tombstone only.
        probes = (self.keys.zone_tower(self.s.zone),
                  self.keys.gone(self.s.zone, node_id(self.public_key)))
        for key in probes:
            try:
                await client.get(key)
                return client
            except redis.exceptions.NoPermissionError:
                continue
            except redis.exceptions.MovedError as exc:
                self.home = (exc.host, int(exc.port))
                log.info("zone %s is on the cluster node %s:%d", self.s.zone, *self.home)
                break
        else:
            return client          # nothing of the zone readable: the session says why
        await client.aclose()
        client = self.client_factory(url)
        await client.ping()
        return client

    @property
    def state(self) -> StateFiles:
        """The state files (written by ``state_writer``)."""
        return self.state_writer.files

    @state.setter
    def state(self, files: StateFiles) -> None:
        self.state_writer.files = files

    # -- start-up ----------------------------------------------------------------------

    async def run(self) -> None:
        """Run until ``stop`` is set; raises AgentExit when the tower says to stop."""
        writer = asyncio.create_task(self.write_state_files(), name="state-files")
        loop = asyncio.get_running_loop()
        tasks = [writer]
        if self.paths is not None and not self.paths.start(loop):
            self.paths = None
        if self.paths is not None:
            tasks.append(asyncio.create_task(self._paths_loop(), name="paths"))
        try:
            await self._run()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.paths is not None:
                self.paths.close(loop)
            if self.state_writer.dirty:
                await self._save()
            self._state_thread.shutdown(wait=False)

    async def _run(self) -> None:
        cache = self.state.load()
        if cache is not None and cache.zone == self.s.zone:
            log.info("bringing the mesh up from the cached snapshot (revision %d)", cache.rev)
            self.assignment = {"address": cache.address, "prefix_len": cache.prefix_len,
                               "cidr": cache.cidr}
            await self._on_device(self._ensure_device)
            self._load_mirror(cache.rev, cache.peer_map(), cache.policy)
            await self._sync_firewall()       # the cached rules before any peer
            await self._reconcile_all()
        elif self.firewall is not None:
            await self._sync_firewall()       # no cache: no table of ours left over
        exists = await self._on_device(self.device.exists)
        self.endpoint, self.nat_type = await asyncio.to_thread(self.endpoints.discover, exists)
        log.info("advertising endpoint %s (NAT type %s)", self.endpoint or "none", self.nat_type)
        backoff = RETRY_MIN
        while not self.stop.is_set():
            self._synced = False
            try:
                await self._connected()
            except CONNECTION_ERRORS as exc:
                if self.sharded:
                    self._rehome(exc)
                if self.mirror.loaded:
                    log.warning("controller unreachable (%s); tunnels stay up, retrying in %.0fs",
                                exc, backoff)
                else:
                    log.warning("controller unreachable (%s) and no cached snapshot: waiting "
                                "for it, retrying in %.0fs", exc, backoff)
            if self._synced:  # it worked until the link broke: start over quickly
                backoff = RETRY_MIN
            await self._sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, RETRY_MAX)

    def _rehome(self, exc: BaseException) -> None:
        """Where to reconnect on a Redis Cluster: the node a MOVED names; after a lost
        connection a seed (the shard's primary may be gone: any node knows the new one)."""
        if isinstance(exc, redis.exceptions.MovedError):
            self.home = (exc.host, int(exc.port))
        elif isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                              OSError, Unavailable, redis.exceptions.ClusterDownError)):
            self.home = None

    async def _on_device(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._device_thread, fn, *args)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _connected(self) -> None:
        self._command_failures = 0
        try:
            client = await self._login()
        except redis.exceptions.InvalidResponse:
            raise AgentExit("the controller does not speak the Redis protocol: is "
                            "--controller the tower's Redis port (6379), not its HTTP port "
                            "(8080)?") from None
        session = TowerSession(client, self.s.zone, self.s.private_key, keys=self.keys,
                               session_id=self.session.session_id if self.session else None,
                               sharded=self.sharded)
        self.session = session
        try:
            try:
                await session.open()
                await self._register()
            except redis.exceptions.NoPermissionError:
                # Logged in, but may do nothing a node does: removed (its tombstone).
                await self._removed(client)
            await self._read_relays(wait=True)
            await self._resync()
            self._synced = True
            await self._follow()
        finally:
            await session.close()
            await client.aclose()
            if self._directory is not None:
                await self._directory.aclose()
                self._directory = None

    # -- credentials -----------------------------------------------------------------------

    async def _login(self) -> aioredis.Redis:
        """A client logged in as this node (its own credential, enrolling first when it
        has none), or, towers without per-node identities, with the given password."""
        stored = self._stored_credential()
        self._stored_refused = False
        if stored is not None:
            url = self._url(stored.user, stored.password)
            client = self.client_factory(url)
            try:
                await client.ping()
                self._authenticated = True
                return await self._to_shard(client, url)
            except redis.exceptions.AuthenticationError:
                await client.aclose()
                if self._authenticated:
                    # It worked before: a failover or restart before the tower re-applied
                    # the users, most likely. Keep the tunnels and try again.
                    raise Unavailable("the controller refused credentials that worked before")
                if not (self.s.join_key or self.s.zone_secret):
                    raise AgentExit(
                        f"the controller refused this node's credential for zone {self.s.zone} "
                        f"({self.s.credentials.path}): enroll again with --join-key") from None
                log.warning("the controller refused this node's stored credential: enrolling "
                            "again")
                self._stored_refused = True
        if self.s.join_key:
            return await self._enroll_with(identity.parse_join_key(self.s.join_key))
        if self.s.zone_secret and self.s.credentials is not None:
            client = await self._enroll_with(None)
            if client is not None:
                return client
        return await self._plain_login()

    def _refused_after_restart(self) -> None:
        """Everything refused, the node's own credential too: a tower that has just started
        and not yet applied its users refuses all of them, so a node holding a credential
        the tower issued keeps its tunnels and tries again rather than stopping."""
        if self._stored_refused:
            raise Unavailable("the controller refused this node's credential and the zone's "
                              "enrollment; a tower starting up does so until it has applied "
                              "its users")

    def _stored_credential(self) -> NodeCredential | None:
        if self.s.credentials is None:
            return None
        stored = self.s.credentials.load()
        if stored is not None and stored.zone != self.s.zone:
            log.warning("the stored credential is for zone %s, not %s: not used", stored.zone,
                        self.s.zone)
            return None
        return stored

    async def _enroll_with(self, key: identity.JoinKey | None) -> aioredis.Redis | None:
        """Enroll with a join key (or, ``key`` None, the zone secret), store the node's
        credential, log in with it. None: the zone secret is no tower-managed user
        (a plain Redis password: use it as it is)."""
        if key is not None:
            if key.zone != self.s.zone:
                raise AgentExit(f"the join key is for zone {key.zone}, not {self.s.zone}")
            user, secret, cred = self.keys.join_user(key.zone, key.key_id), key.secret, key.key_id
        else:
            user, secret = self.keys.agent_user(self.s.zone), self.s.zone_secret or ""
            cred = identity.ZONE_SECRET_ID
        url = self._url(user, secret)
        client = self.client_factory(url)
        try:
            try:
                await client.ping()
                client = await self._to_shard(client, url)
            except redis.exceptions.AuthenticationError:
                if key is None:
                    return None
                self._refused_after_restart()
                raise AgentExit(f"the controller refused the join key {key.key_id} of zone "
                                f"{key.zone}: unknown, revoked, or expired more than a week "
                                "ago") from None
            name = self.s.name or identity.name_from_host(self.s.hostname)
            try:
                credential = await enroll(client, self.keys, self.s.zone, cred,
                                          self.s.private_key, name, self.s.hostname,
                                          timeout=self.s.request_timeout, sharded=self.sharded)
            except EnrollRefused as exc:
                if exc.code == code_of(Unavailable):      # undone by the tower: try again
                    raise Unavailable(f"the tower cannot enroll this node now: {exc}") from None
                status = ENDED if exc.code == code_of(Removed) else 1
                raise AgentExit(f"the tower refused to enroll this node: {exc}", status) from None
        finally:
            await client.aclose()
        if self.s.credentials is not None:
            self.s.credentials.save(credential)
            log.info("this node's credential is in %s", self.s.credentials.path)
        url = self._url(credential.user, credential.password)
        node = self.client_factory(url)
        await node.ping()
        self._authenticated = True
        return await self._to_shard(node, url)

    async def _plain_login(self) -> aioredis.Redis:
        client = self.client_factory(self.urls[0])
        try:
            await client.ping()
            client = await self._to_shard(client, self.urls[0])
        except redis.exceptions.AuthenticationError:
            await client.aclose()
            if self._authenticated:
                raise Unavailable("the controller refused credentials that worked before")
            if len(self.urls) == 1:
                self._refused_after_restart()
                raise AgentExit(f"the controller refused the credentials for zone {self.s.zone}: "
                                "wrong --controller-password, or no such zone") from None
            self.urls.pop(0)  # not a tower-managed agent user: try the next form
            return await self._plain_login()
        self._authenticated = True
        return client

    def _url(self, user: str, password: str) -> str:
        from .config import login_url
        return login_url(self.s.controller or self.urls[0], user, password)

    async def _removed(self, client: aioredis.Redis) -> None:
        """This node's user may only read its tombstone: say why it was removed and stop
        (or, given a join key, let the tower decide whether it may come back)."""
        try:
            raw = await client.get(self.keys.gone(self.s.zone, node_id(self.public_key)))
        except redis.exceptions.RedisError:
            raw = None
        if raw is None:
            raise Unavailable("the controller refused a command this node may run")
        try:
            tomb = json.loads(raw)
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(tomb.get("at"))))
            why = f" ({tomb.get('reason')}, {when})"
        except (ValueError, TypeError, AttributeError):
            why = ""
        if self.s.join_key and not self._rejoined:
            self._rejoined = True
            if self.s.credentials is not None:
                self.s.credentials.remove()
            raise Unavailable("this node was removed from the zone: enrolling again with the "
                              "join key")
        raise AgentExit(f"this node was removed from zone {self.s.zone}{why}", ENDED)

    async def _register(self) -> None:
        body = {"endpoint": self.endpoint, "listen_port": self.s.listen_port,
                "request_ip": self.s.request_ip, "child_prefixes": list(self.s.child_prefixes),
                "nat_type": self.nat_type, "hostname": self.s.hostname[:253] or None}
        try:
            reply = await self.session.request("register", body, timeout=self.s.request_timeout,
                                               attempts=3)
        except TowerRefused as exc:
            log.info("register request %s refused", exc.request_id,
                     extra={"request_id": exc.request_id})
            if exc.code == code_of(Removed):
                raise AgentExit(f"{exc} ({REMOVED['deleted']})", ENDED) from None
            if exc.code == code_of(Unavailable):     # e.g. the zone's request stream broke
                raise Unavailable(f"the tower cannot take requests now: {exc}") from None
            raise AgentExit(f"the tower refused to register this node: {exc}") from None
        if self.assignment and self.assignment["address"] != reply["address"]:
            log.warning("the tower moved this node from %s to %s", self.assignment["address"],
                        reply["address"])
        self.assignment = {k: reply[k] for k in ("address", "prefix_len", "cidr")}
        log.info("registered in zone %s as %s/%d (request %s)", self.s.zone, reply["address"],
                 reply["prefix_len"], reply["id"], extra={"request_id": reply["id"]})
        await self._on_device(self._ensure_device)

    def _ensure_device(self) -> None:
        """On the device thread: the interface as the assignment says."""
        ensure_device(self.device, self.links, self.s.private_key, self.public_key,
                      self.s.listen_port, self.assignment["address"],
                      int(self.assignment["prefix_len"]))

    # -- following the zone ------------------------------------------------------------------

    async def _resync(self) -> None:
        for _ in range(RESYNC_ATTEMPTS):
            self.resyncs += 1
            snapshot = await self.session.snapshot()
            self._load_mirror(snapshot.rev, snapshot.peers, snapshot.policy)
            # Updates buffered while the snapshot was read; a gap among them (one lost
            # between the snapshot and them) takes another snapshot at once.
            if self._apply_buffered():
                break
        self._check_membership()
        await self._sync_firewall()
        await self._reconcile_all()
        self._state_changed(urgent=True)

    def _load_mirror(self, rev: int, peers: dict, stored_policy: str | None) -> None:
        """A snapshot (or the cache) into the mirror; ``stored_policy`` as Redis keeps it.
        A policy this agent cannot read (a newer tower's) leaves the one it had in force."""
        try:
            found = policies.stored(stored_policy)
        except InvalidInput as exc:
            log.error("cannot read the zone's policy (%s): the previous rules stay in force",
                      exc)
            found = ((self.mirror.policy_rev or 0, self.mirror.policy)
                     if self.mirror.policy is not None else None)
        if found is None:
            self.mirror.load(rev, peers)
        else:
            policy_rev, policy = found
            self.mirror.load(rev, peers, policy, policy_rev)

    def _apply_buffered(self) -> bool:
        """Apply every update waiting in the queue; False at a gap (a resync is needed)."""
        updates = self.session.updates
        while not updates.empty():
            if not self._apply_update(updates.get_nowait()):
                return False
        return True

    def _apply_update(self, update) -> bool:
        """Apply one update; False when a resync is needed."""
        outcome = self.mirror.apply(update)
        if outcome is Outcome.ZONE_DELETED:
            raise AgentExit(f"zone {self.s.zone} was deleted on the tower", ENDED)
        if outcome is Outcome.GAP:
            log.info("missed a zone update (have revision %d, got %d..%d): resyncing",
                     self.mirror.rev, update.since, update.rev)
            return False
        self._touched |= self.mirror.touched
        return True

    def _check_membership(self) -> None:
        self._check_removed(self.mirror.removed.get(self.public_key))
        own = self.mirror.peers.get(self.public_key)
        if own is not None and own.session != self.session.session_id:
            raise AgentExit(f"this key was registered from another host (endpoint "
                            f"{own.endpoint or 'unknown'}); this agent stops", ENDED)

    def _check_removed(self, reason: str | None) -> None:
        """Stop (exit 3) when the zone says this node was removed for good."""
        if reason in REMOVED:
            raise AgentExit(f"this node was removed from zone {self.s.zone} "
                            f"({REMOVED[reason]})", ENDED)

    async def _follow(self) -> None:
        session = self.session
        loop = asyncio.get_running_loop()
        now = loop.time()
        next_heartbeat = now + self.s.heartbeat_interval
        last_endpoint = now
        next_revision = now + self.s.revision_interval
        next_drift = now + self.s.drift_interval
        # A stop ends the wait for the next update at once (a lost connection does too:
        # the session wakes its inbox), so the loop needs no wake-up of its own.
        stopping = asyncio.create_task(self._wake_on_stop(session.updates),
                                       name="follow-stop")
        try:
            while not self.stop.is_set():
                if session.lost.is_set():
                    raise Unavailable("lost the connection to the controller")
                next_endpoint = last_endpoint + self._endpoint_interval()
                update = await self._next_update(
                    min(next_heartbeat, next_endpoint, next_revision, next_drift))
                if update is not None:
                    if not (self._apply_update(update) and self._apply_buffered()):
                        await self._resync()
                        continue
                    if self.public_key not in self.mirror.peers:
                        reason = self.mirror.removed.get(self.public_key, "")
                        self._check_removed(reason)
                        log.warning("the tower removed this node (%s): registering again",
                                    reason or "unknown reason")
                        await self._register()
                        await self._resync()
                        continue
                    self._check_membership()
                    await self._reconcile_touched()
                now = loop.time()
                if self._reported != self._policy_report():
                    next_heartbeat = now     # the rules' state changed: tell the tower now
                if now >= next_heartbeat:
                    next_heartbeat = now + self.s.heartbeat_interval
                    await self._command("heartbeat", self._heartbeat, None)
                if now >= next_endpoint:
                    last_endpoint = now
                    await self._recheck_endpoint()
                if now >= next_revision:
                    next_revision = now + await self._command(
                        "revision check", self._check_revision, REVISION_RECHECK)
                    await self._command("reading the relays", self._read_relays, None)
                if now >= next_drift:
                    next_drift = now + self.s.drift_interval
                    if await self._reconcile_all():
                        self._state_changed()
        finally:
            stopping.cancel()

    def _endpoint_interval(self) -> float:
        """Seconds between endpoint re-checks: sooner while a peer is relayed (a NAT that
        changed may now let the pair go direct)."""
        if self.paths is not None and self.paths.any_relayed():
            return min(self.s.endpoint_interval, self.s.relayed_endpoint_interval)
        return self.s.endpoint_interval

    async def _wake_on_stop(self, updates: Inbox) -> None:
        await self.stop.wait()
        updates.wake()

    async def _next_update(self, deadline: float) -> ZoneUpdate | None:
        """The next zone update, waiting for one until the event loop's clock reaches
        ``deadline`` (None when none came). No task and no timer per wait: the inbox's
        one timer stays armed for the deadline however many updates come first."""
        updates = self.session.updates
        if updates.empty():
            await updates.wait(deadline)
            if updates.empty():
                return None
        return updates.get_nowait()

    async def _command(self, what: str, step: Callable[[], Awaitable[T]], instead: T) -> T:
        """A periodic step of the follow loop; ``instead`` when its command did not reach
        Redis while the subscription is intact. Ending the session for it would give up
        the one connection that works and cost a resync (the whole zone read again),
        just when Redis is short of connections or time; the step is tried again at its
        next turn. A lost subscription, or ``COMMAND_FAILURES`` such failures in a row,
        end the session as before."""
        try:
            result = await step()
        except COMMAND_ERRORS as exc:
            self._command_failures += 1
            if self.session.lost.is_set() or self._command_failures >= COMMAND_FAILURES:
                raise
            log.warning("%s failed (%s); the subscription is intact: trying again at the "
                        "next one", what, exc)
            return instead
        self._command_failures = 0
        return result

    async def _check_revision(self) -> float:
        """Resync when the tower published a revision that never reached us; returns the
        seconds until the next check (sooner while one is suspected missing)."""
        published = await self.session.revision()
        if published < self.mirror.rev and self.session.updates.empty():
            # Below ours: a snapshot read a revision not published yet (it will be within
            # a publish window), or a failover lost changes we had (Redis replication is
            # asynchronous): then no update up to our revision would ever be applied.
            if self._ahead is not None and published <= self._ahead:
                log.warning("the zone's published revision %d is below ours (%d): changes "
                            "were lost by the controller (a failover?): resyncing",
                            published, self.mirror.rev)
                self._ahead = None
                await self._resync()
                return self.s.revision_interval
            self._ahead = published
            return REVISION_RECHECK
        self._ahead = None
        if published <= self.mirror.rev or not self.session.updates.empty():
            self._behind = None
        elif self._behind is not None and self.mirror.rev < self._behind:
            log.info("zone revision %d was published but never reached us: resyncing",
                     self._behind)
            self._behind = None
            await self._resync()
        else:
            self._behind = published     # it may still be on its way: look again soon
            return REVISION_RECHECK
        return self.s.revision_interval

    async def _heartbeat(self) -> None:
        if self.firewall is not None and self.firewall.state in ("failed", "closed"):
            await self._on_device(self.firewall.retry)
            await self._follow_firewall()
        body = self.paths.report(self.mirror.peers) if self.paths is not None else {}
        report = self._policy_report()
        if report is not None:
            body = {**(body or {}), "policy": report}
            self._reported = report
        try:
            await self.session.request("heartbeat", body or None,
                                       timeout=self.s.request_timeout)
        except NoReply:
            log.info("no answer to a heartbeat; the tower may be down")
        except TowerRefused as exc:
            if exc.code == code_of(NotFound):
                log.warning("the tower no longer knows this node: registering again")
                await self._register()
                await self._resync()
            elif exc.code == code_of(Superseded):
                raise AgentExit("this key was registered from another host; this agent stops", ENDED)
            else:
                log.warning("heartbeat refused: %s", exc)

    async def _recheck_endpoint(self) -> None:
        endpoint, nat_type = await asyncio.to_thread(self.endpoints.discover, True)
        if endpoint is None or (endpoint, nat_type) == (self.endpoint, self.nat_type):
            return
        log.info("endpoint changed from %s to %s", self.endpoint, endpoint)
        self.endpoint, self.nat_type = endpoint, nat_type
        await self._send_endpoint()

    async def _send_endpoint(self) -> None:
        """Tell the tower our endpoint, NAT type and home relay."""
        if self.endpoint is None or self.session is None:
            return
        body: dict[str, Any] = {"endpoint": self.endpoint, "nat_type": self.nat_type}
        if self.paths is not None:
            body["relay"] = self.paths.home
        try:
            await self.session.request("endpoint-update", body,
                                       timeout=self.s.request_timeout, attempts=2)
            self._published_home = body.get("relay")
        except TowerRefused as exc:
            log.warning("endpoint update refused: %s", exc)
        except CONNECTION_ERRORS as exc:
            log.info("endpoint update not sent: %s", exc)

    # -- relays and paths ----------------------------------------------------------------

    async def _read_relays(self, wait: bool = False) -> None:
        """The zone's relays from the tower's Redis (and, at start, a bind to each)."""
        if self.paths is None or self.session is None:
            return
        try:
            try:
                records = await (self._directory or self.session.client).hgetall(
                    self.keys.relays)
            except redis.exceptions.MovedError as exc:
                # A Redis Cluster: the relay directory is no zone's, so it lives on the
                # node its own slot names; this node's user may read it there (the
                # users are on every node). One more connection, kept while connected.
                pool = self.session.client.connection_pool
                self._directory = aioredis.Redis(connection_pool=type(pool)(
                    connection_class=pool.connection_class,
                    **{**pool.connection_kwargs, "host": exc.host, "port": int(exc.port)}))
                records = await self._directory.hgetall(self.keys.relays)
        except redis.exceptions.ResponseError as exc:     # an older tower's node user
            log.debug("cannot read the relays: %s", exc)
            return
        self.paths.set_relays(records or {})
        if wait:
            await self.paths.bind_all()

    def _own_view(self) -> NodeView:
        return NodeView(self.public_key, self.endpoint, self.nat_type, None)

    def _path_endpoints(self, keys: Iterable[str] | None = None
                        ) -> dict[str, str | None] | None:
        """The paths' endpoint per peer (of ``keys`` only, given them); None without paths."""
        return self.paths.endpoints(keys) if self.paths is not None else None

    async def _paths_loop(self) -> None:
        while not self.stop.is_set():
            try:
                await self._path_step()
            except DeviceError as exc:
                log.warning("a path change failed on the device: %s", exc)
            except Exception:  # noqa: BLE001 - paths must never end the agent
                log.exception("path step failed")
            await self._sleep(0.25)

    async def _path_step(self) -> None:
        """Decide every peer's path; re-create or re-point the peers whose path changed."""
        if self.paths is None:
            return
        now = time.monotonic()
        if self.paths.links_due(now) and self.assignment is not None:
            try:
                state = await self._on_device(self.device.read)
            except DeviceError:
                state = None
            if state is not None:
                # The handshake times as of now (after the read, which may have waited).
                wall, read_at = time.time(), time.monotonic()
                self.paths.set_links(read_at, {
                    key: PeerLink(wall - st.last_handshake if st.last_handshake else None,
                                  state.peers[key].endpoint if key in state.peers else None)
                    for key, st in state.stats.items()})
        async with self._paths_lock:
            changes = self.paths.tick(now, self._own_view(), self.mirror.peers)
            ops = []
            for key, decision in changes.items():
                peer = self.mirror.peers.get(key)
                if peer is None or key not in self.applied.peers or decision.endpoint is None:
                    continue           # not on the device yet: reconcile adds it so
                config = peer_config(peer, endpoints={key: decision.endpoint})
                ops.append(ResetPeer(config) if decision.fresh else UpdatePeer(config))
                log.info("peer %s: %s%s (%s)%s", key, decision.mode,
                         f" via {decision.relay}" if decision.relay else "", decision.endpoint,
                         ", new handshake" + (" (none came since the move)" if decision.kick
                                              else "") if decision.fresh else "")
            if ops:
                try:
                    await self._on_device(apply_ops, self.device, self.links, ops)
                except DeviceError:
                    self.paths.give_back(changes)      # owed again: the next tick retries
                    raise
                for op in ops:
                    self.applied.peers[op.peer.public_key] = op.peer
        if self.paths.home != self._published_home and self.session is not None \
                and self._synced and self.endpoint is not None:
            self._published_home = self.paths.home
            asyncio.create_task(self._send_endpoint(), name="home-relay")
        shown = self.paths.shown()
        if shown != self._paths_shown or time.monotonic() - self._paths_saved > 5.0:
            self._paths_saved, self._paths_shown = time.monotonic(), shown
            status = self.paths.status(self.mirror.peers)
            try:
                await asyncio.to_thread(self.state.save_paths, status)
            except OSError as exc:
                log.debug("cannot write the path status: %s", exc)

    # -- the device ------------------------------------------------------------------------

    def read_device(self, timeout: float = 5.0) -> DeviceState:
        """The device's state, read on the device thread (for callers on other threads,
        such as the metrics endpoint)."""
        return self._device_thread.submit(self.device.read).result(timeout)

    async def _reconcile_touched(self) -> None:
        """Apply the peers the updates since the last reconcile touched, and only them:
        the firewall first (a revocation never waits for the device), then the device."""
        keys, self._touched = self._touched, set()
        if self.firewall is not None:
            peers = self.mirror.peers
            changed = [(k, Member.of(peers[k]) if k in peers else None) for k in keys]
            await self._on_device(self.firewall.update, self.mirror.policy,
                                  self.mirror.policy_rev, changed, self._me())
            if await self._follow_firewall():
                self._state_changed()
                return
        if self.paths is not None:           # decide new peers' paths before adding them
            async with self._paths_lock:
                self.paths.decide(time.monotonic(), self._own_view(), self.mirror.peers, keys)
        endpoints, zone = self._path_endpoints(keys), self._device_peers()
        ops = self.applied.diff(self.public_key, keys, zone, endpoints)
        if ops:
            try:
                await self._on_device(apply_ops, self.device, self.links, ops)
            except DeviceError as exc:
                log.warning("a device operation failed (%s): reconciling the whole zone "
                            "against the device", exc)
                await self._reconcile_all()
                self._state_changed()
                return
            log.info("zone revision %d applied with %d operations", self.mirror.rev, len(ops))
        self.applied.record(self.public_key, keys, zone, endpoints)
        self._state_changed()

    async def _reconcile_all(self) -> int:
        """The whole zone against the device read back; returns the operations needed."""
        self._touched = set()
        if self.paths is not None:
            async with self._paths_lock:
                self.paths.decide(time.monotonic(), self._own_view(), self.mirror.peers)
        return await self._on_device(self._reconcile_device, self._path_endpoints())

    def _reconcile_device(self, endpoints: dict[str, str | None] | None = None) -> int:
        """On the device thread: the whole zone against the device read back."""
        self.applied, count = apply_zone(self.device, self.links, self.public_key,
                                         self._device_peers(), self.applied, endpoints)
        if count:
            log.info("zone revision %d applied with %d operations (whole zone against the "
                     "device)", self.mirror.rev, count)
        return count

    # -- the firewall (zone policy) ----------------------------------------------------------

    def _me(self) -> Member | None:
        own = self.mirror.peers.get(self.public_key)
        return Member.of(own) if own is not None else None

    async def _sync_firewall(self) -> None:
        """Our nft table as the mirror's policy and members say (one transaction)."""
        if self.firewall is None:
            return
        members = {key: Member.of(peer) for key, peer in self.mirror.peers.items()}
        await self._on_device(self.firewall.sync, self.mirror.policy, self.mirror.policy_rev,
                              self._me(), members)
        await self._follow_firewall()

    async def _follow_firewall(self) -> bool:
        """The device follows the firewall's state: no peers while it is closed (no
        rules could be loaded under a policy: never open), every peer again once it is
        not. True when the whole zone was reconciled for it."""
        closed = self.firewall is not None and self.firewall.closed
        if closed == self._closed:
            return False
        self._closed = closed
        if closed:
            log.error("no policy rules are in force: every peer is removed until they are")
        await self._reconcile_all()
        return True

    def _policy_report(self) -> dict | None:
        """What the heartbeat tells the tower of this node's rules (None: nothing, in a
        zone that never had a policy here: an older tower takes no heartbeat body)."""
        fw = self.firewall
        if fw is None or (fw.state == "none" and self._reported is None):
            return None
        return {"rev": fw.rev if fw.state != "none" else None, "state": fw.state,
                "error": fw.error[:256]}

    def _device_peers(self) -> dict:
        """The zone's peers as the device gets them: none but this node's own record
        while the firewall is closed."""
        if not self._closed:
            return self.mirror.peers
        return {k: p for k, p in self.mirror.peers.items() if k == self.public_key}

    # -- the state files ---------------------------------------------------------------------

    def _state_changed(self, urgent: bool = False) -> None:
        self.state_writer.changed(urgent)

    async def write_state_files(self) -> None:
        """Write the state files after changes (``StateWriter.run``); runs until cancelled."""
        await self.state_writer.run()

    async def _save(self) -> None:
        await self.state_writer.save()

    def _state_now(self) -> AgentState | None:
        """What the state files hold now, captured on the event loop (None before the
        first assignment)."""
        if self.assignment is None:
            return None
        return AgentState(
            zone=self.s.zone, private_key=self.s.private_key, listen_port=self.s.listen_port,
            cidr=self.assignment["cidr"], address=self.assignment["address"],
            prefix_len=int(self.assignment["prefix_len"]), rev=self.mirror.rev,
            session=self.session.session_id if self.session else "",
            peers=tuple(self.mirror.peers.values()), configs=tuple(self.applied.peers.values()),
            hosts=self.s.hosts,
            policy=policies.stored_text(self.mirror.policy_rev or 0, self.mirror.policy)
            if self.mirror.policy is not None else None)

"""The Redis ACL users of agents: one per node, one per join key, one per zone secret.

Every user is derived from what the tower stores (ipam/registry.py and the zone's auth
hash): only SHA-256 digests, never a secret. ``sync`` re-applies them all after a Redis
restart or failover (ACLs are neither replicated nor in the AOF), and on every node of
a cluster. ``ACL SAVE`` is never called for them: with 10,000 users its first run
blocked Redis for 1.6-1.8 s (docs/security.md).

Revocation sets the node's user to its tombstone rules (it may log in and read why it
was removed, nothing else) and cuts its connections in one MULTI: ``ACL SETUSER off``
would leave open connections working.

ACL commands cannot run in a script, so a user is never written atomically with its
record. Every change therefore ends by making the users agree with what is stored: the
zone secret's user under a short per-zone lock (read the digest, apply it), a node's or
join key's user by checking its record still exists after applying it, and a zone's
deletion by removing every user of the zone that no record backs. Creations, rotations,
enrollments and deletions racing each other leave no user of a zone that is gone.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from ipam.registry import Node, Registry
from ipam.store import DEFAULT_ZONE
from wire import identity
from wire.errors import NotFound, Unavailable
from wire.keys import Keys
from wire.redisconn import ClusterNodes, is_cluster
from wire.secretfile import write_secret

from . import aclrules

log = logging.getLogger(__name__)

ZONE_SECRET_FIELD = "zone_secret_sha256"
LEGACY_SECRET_FIELD = "agent_secret_sha256"   # in the zone hash, before issue 14
ZONE_SECRET_AT = "zone_secret_at"
ZONE_SECRET_SETTING = "zone_secret"      # in the zone hash: 'off' refuses the zone secret
JOIN_KEY_GRACE = 7 * 86400               # an expired key's user stays this long (clear refusals)
# In the auth hash: digests of the secrets the default-zone-secret files held that the
# tower applied or wrote (the last FILE_HISTORY, comma-separated). A file holding one of
# them while the zone has another secret is older than a rotation done since: a restart
# does not apply it again.
FILE_FIELD = "file_secrets_sha256"
FILE_HISTORY = 32
LOCK_TTL_MS = 5000
LOCK_WAIT = 10.0
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def new_secret() -> str:
    return secrets.token_urlsafe(24)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AgentCredentials:
    """The tower's manager of agents' Redis users."""

    def __init__(self, client: redis.Redis, keys: Keys, registry: Registry | None = None) -> None:
        self.redis = client
        self.keys = keys
        self.registry = registry or Registry(client, keys)
        self._extra: tuple[str, ...] | None = None
        self._unlock = client.register_script(_UNLOCK)
        self.nodes = ClusterNodes(client) if is_cluster(client) else None

    def servers(self) -> list[redis.Redis]:
        """Where the users live: the one Redis, or every node of a Redis Cluster."""
        return [self.redis] if self.nodes is None else self.nodes.clients()

    @property
    def extra(self) -> tuple[str, ...]:
        """Connect-time commands only newer servers know (Redis 7.2's CLIENT SETINFO):
        naming an unknown command in ACL SETUSER fails."""
        if self._extra is None:
            try:
                version = str(self.servers()[0].info("server").get("redis_version", "0"))
                major, minor = (int(x) for x in (version.split(".") + ["0"])[:2])
                self._extra = ("client|setinfo",) if (major, minor) >= (7, 2) else ()
            except (redis.exceptions.RedisError, ValueError):
                self._extra = ()
        return self._extra

    # -- the zone secret -------------------------------------------------------------------

    @staticmethod
    def secret_fields(secret: str, now: float | None = None) -> dict[str, str]:
        """The auth hash's fields for a zone secret (written with the zone, or by ``set``)."""
        return {ZONE_SECRET_FIELD: digest(secret),
                ZONE_SECRET_AT: repr(time.time() if now is None else now)}

    def set(self, zone: str, secret: str, now: float | None = None) -> None:
        """Create or replace the zone secret (an enrollment credential); NotFound when the
        zone does not exist (nothing is written then)."""
        self.registry.zone_hset(zone, self.keys.auth(zone), self.secret_fields(secret, now))
        self.apply_zone(zone)

    def rotate(self, zone: str) -> str:
        secret = new_secret()
        self.set(zone, secret)
        log.info("rotated the agent secret of zone %s", zone)
        return secret

    def allow_zone_secret(self, zone: str, allowed: bool) -> None:
        self.registry.zone_hset(zone, self.keys.zone(zone),
                                {ZONE_SECRET_SETTING: "on" if allowed else "off"})
        self.apply_zone(zone)

    def zone_secret_allowed(self, zone: str) -> bool:
        return self.redis.hget(self.keys.zone(zone), ZONE_SECRET_SETTING) != "off"

    def apply_zone(self, zone: str) -> None:
        """The zone secret's user as stored: deleted when the zone does not exist or does
        not accept it. Read and applied under the zone's lock, so the last of concurrent
        changes leaves the user as the zone is."""
        with self._locked(zone):
            cidr, setting = self.redis.hmget(self.keys.zone(zone), "cidr", ZONE_SECRET_SETTING)
            stored = self.redis.hget(self.keys.auth(zone), ZONE_SECRET_FIELD)
            user = self.keys.agent_user(zone)
            if cidr is not None and stored and setting != "off":
                self._setuser(user, aclrules.enroller(self.keys, zone, identity.ZONE_SECRET_ID,
                                                      self.extra), stored)
            else:
                self._deluser(user)

    def delete(self, zone: str) -> None:
        """After a zone's deletion: every Redis user of it goes, unless a record backs it
        (the zone was created again meanwhile and enrolled that node or made that key).
        On a Redis Cluster: the users of it on any node, deleted on every node."""
        with self._locked(zone):
            users = self._users_of(zone)
            if self.redis.hexists(self.keys.zone(zone), "cidr"):
                backed = {node.user for node in self.registry.nodes(zone).values()}
                backed |= {self.keys.join_user(zone, r.id) for r in self.registry.join_keys(zone)
                           if not r.revoked}
                users = [u for u in users if u not in backed and u != self.keys.agent_user(zone)]
            self._delusers(users)
        self.apply_zone(zone)

    def _users_of(self, zone: str) -> list[str]:
        """The Redis users of one zone that exist now (node, join key, zone secret)."""
        prefixes = (self.keys.node_user(zone, ""), self.keys.join_user(zone, ""))
        return [u for u in self._all_users()
                if u.startswith(prefixes) or u == self.keys.agent_user(zone)]

    def _all_users(self, servers: list[redis.Redis] | None = None) -> list[str]:
        """The users on ``servers`` (by default all: on a cluster, a user on any node)."""
        found: dict[str, None] = {}
        for server in self.servers() if servers is None else servers:
            for user in server.execute_command("ACL", "USERS"):
                found[user if isinstance(user, str) else user.decode()] = None
        return list(found)

    def _delusers(self, users: list[str], servers: list[redis.Redis] | None = None) -> None:
        """Delete ``users`` on ``servers`` (by default all: every node of a cluster)."""
        if not users:
            return
        for server in self.servers() if servers is None else servers:
            with server.pipeline(transaction=False) as pipe:
                for user in users:
                    pipe.execute_command("ACL", "DELUSER", user)
                pipe.execute(raise_on_error=False)

    def _still_backed(self, zone: str, key: str, field: str, user: str) -> None:
        """After applying ``user``: delete it again if its record (``field`` of ``key``)
        or its zone went meanwhile (a deletion that listed the users before it existed)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hexists(self.keys.zone(zone), "cidr")
            pipe.hexists(key, field)
            zone_there, record_there = pipe.execute()
        if not (zone_there and record_there):
            self._deluser(user)
            raise NotFound(f"zone {zone} does not exist" if not zone_there
                           else f"{user} was removed meanwhile")

    # -- join keys -------------------------------------------------------------------------

    def apply_join_key(self, zone: str, key_id: str, sha256: str) -> None:
        user = self.keys.join_user(zone, key_id)
        self._setuser(user, aclrules.enroller(self.keys, zone, key_id, self.extra), sha256)
        self._still_backed(zone, self.keys.joinkeys(zone), key_id, user)

    def revoke_join_key(self, zone: str, key_id: str) -> None:
        """Delete the key's user; its connections (an enrollment under way) are cut."""
        self._deluser(self.keys.join_user(zone, key_id))

    # -- nodes -----------------------------------------------------------------------------

    def apply_node(self, zone: str, node: Node) -> None:
        rules = (aclrules.tombstone(self.keys, zone, node.id, self.extra) if node.removed
                 else aclrules.node(self.keys, zone, node.id, self.extra))
        self._setuser(node.user, rules, node.cred)
        self._still_backed(zone, self.keys.nodes(zone), node.id, node.user)

    def revoke_node(self, zone: str, node: Node) -> None:
        """The node's user becomes its tombstone and every connection of it is cut, at once."""
        for server in self.servers():
            with server.pipeline(transaction=True) as pipe:
                pipe.execute_command("ACL", "SETUSER", node.user,
                                     *aclrules.tombstone(self.keys, zone, node.id, self.extra),
                                     f"#{node.cred}")
                pipe.execute_command("CLIENT", "KILL", "USER", node.user)
                try:
                    pipe.execute()
                except redis.exceptions.ResponseError as exc:
                    raise Unavailable(f"cannot revoke the Redis user of node {node.name} "
                                      f"({exc})") from None

    def suspend_node(self, zone: str, node_id: str, user: str) -> None:
        """A node that floods the tower loses its publish right; its connections are cut."""
        for server in self.servers():
            with server.pipeline(transaction=True) as pipe:
                pipe.execute_command("ACL", "SETUSER", user, "clearselectors")
                pipe.execute_command("CLIENT", "KILL", "USER", user)
                pipe.execute(raise_on_error=False)

    def forget_node(self, node: Node) -> None:
        self._deluser(node.user)

    # -- all of them -----------------------------------------------------------------------

    def sync(self, zones: list[str], servers: list[redis.Redis] | None = None) -> int:
        """Re-apply every user of these zones from the stored digests (after a restart or
        failover, and at start); one pipeline per zone and server (``servers``: those
        the users are missing on, by default all). Users of zones that do not exist
        (left by an old race) are deleted there. Returns the users applied."""
        now = time.time()
        servers = self.servers() if servers is None else servers
        applied = 0
        self._delusers(self._orphans(zones, servers), servers)
        for zone in zones:
            self._migrate(zone)
            auth = self.redis.hget(self.keys.auth(zone), ZONE_SECRET_FIELD)
            allowed = self.zone_secret_allowed(zone)
            commands: list[tuple[str, list[str], str]] = []
            if auth and allowed:
                commands.append((self.keys.agent_user(zone), aclrules.enroller(
                    self.keys, zone, identity.ZONE_SECRET_ID, self.extra), auth))
            for record in self.registry.join_keys(zone):
                if not record.revoked and record.expires + JOIN_KEY_GRACE > now:
                    commands.append((self.keys.join_user(zone, record.id), aclrules.enroller(
                        self.keys, zone, record.id, self.extra), record.sha256))
            for node in self.registry.nodes(zone).values():
                rules = (aclrules.tombstone(self.keys, zone, node.id, self.extra) if node.removed
                         else aclrules.node(self.keys, zone, node.id, self.extra))
                commands.append((node.user, rules, node.cred))
            for server in servers:
                for start in range(0, len(commands), 500):
                    with server.pipeline(transaction=False) as pipe:
                        for user, rules, sha in commands[start:start + 500]:
                            pipe.execute_command("ACL", "SETUSER", user, *rules, f"#{sha}")
                        self._check(pipe.execute(raise_on_error=False))
            applied += len(commands)
        return applied

    def _orphans(self, zones: list[str], servers: list[redis.Redis]) -> list[str]:
        """Agent users (zone secret, node, join key) of zones not in ``zones`` on ``servers``."""
        known = set(zones)
        return [user for user in self._all_users(servers)
                if self.keys.user_zone(user) not in (None, *known)]

    def _migrate(self, zone: str) -> None:
        """A zone made by a tower before per-node identities kept its secret's digest in
        the zone hash, which agents can read: move it to the auth hash."""
        old = self.redis.hget(self.keys.zone(zone), LEGACY_SECRET_FIELD)
        if old:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(self.keys.auth(zone), ZONE_SECRET_FIELD, old)
                pipe.hdel(self.keys.zone(zone), LEGACY_SECRET_FIELD)
                pipe.execute()

    def zone_secret_digest(self, zone: str) -> str | None:
        return self.redis.hget(self.keys.auth(zone), ZONE_SECRET_FIELD)

    # -- the default zone's secret file ------------------------------------------------------

    def remember_default_secret(self, path: str | Path | None, secret: str) -> None:
        """After the default zone's secret changed: write it to the tower's
        ``default-zone-secret`` file (``path``; 0600) and note its digest among the secrets
        that file held (``FILE_FIELD``), so a restart keeps it instead of applying an older
        file's."""
        self.note_file_secret(DEFAULT_ZONE, digest(secret))
        if path:
            write_secret(path, secret + "\n")
            log.info("wrote the default zone's new zone secret to %s", path)

    def file_secrets(self, zone: str) -> list[str]:
        """Digests of the secrets the tower applied from or wrote to default-zone-secret."""
        noted = self.redis.hget(self.keys.auth(zone), FILE_FIELD) or ""
        return [d for d in (noted if isinstance(noted, str) else noted.decode()).split(",") if d]

    def note_file_secret(self, zone: str, secret_sha256: str) -> None:
        known = [d for d in self.file_secrets(zone) if d != secret_sha256]
        self.registry.zone_hset(zone, self.keys.auth(zone),
                                {FILE_FIELD: ",".join([*known, secret_sha256][-FILE_HISTORY:])})

    # -- plumbing --------------------------------------------------------------------------

    @contextmanager
    def _locked(self, zone: str) -> Iterator[None]:
        """A short per-zone lock (SET NX PX with a token, released by a script)."""
        lock, token = self.keys.credential_lock(zone), secrets.token_hex(8)
        deadline = time.monotonic() + LOCK_WAIT
        while not self.redis.set(lock, token, nx=True, px=LOCK_TTL_MS):
            if time.monotonic() > deadline:
                raise Unavailable(f"the agent credentials of zone {zone} are being changed; "
                                  "try again")
            time.sleep(0.005)
        try:
            yield
        finally:
            self._unlock(keys=[lock], args=[token])

    def _setuser(self, user: str, rules: list[str], sha256: str) -> None:
        try:
            for server in self.servers():
                server.execute_command("ACL", "SETUSER", user, *rules, f"#{sha256}")
        except redis.exceptions.ResponseError as exc:
            raise Unavailable(f"cannot manage Redis ACL users ({exc}); give the tower an "
                              "admin Redis user or turn off --agent-acl") from None

    def _deluser(self, user: str) -> None:
        try:
            for server in self.servers():
                server.execute_command("ACL", "DELUSER", user)
        except redis.exceptions.ResponseError as exc:
            raise Unavailable(f"cannot manage Redis ACL users ({exc})") from None

    @staticmethod
    def _check(replies: list) -> None:
        for reply in replies:
            if isinstance(reply, redis.exceptions.ResponseError):
                raise Unavailable(f"cannot manage Redis ACL users ({reply}); give the tower "
                                  "an admin Redis user or turn off --agent-acl")

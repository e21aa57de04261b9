"""The Redis ACL users of agents: one per node, one per join key, one per zone secret.

Every user is derived from what the tower stores (ipam/registry.py and the zone's auth
hash): only SHA-256 digests, never a secret. ``sync`` re-applies them all after a Redis
restart or failover (ACLs are neither replicated nor in the AOF), and on every node of
a cluster. ``ACL SAVE`` is never called for them: with 10,000 users its first run
blocked Redis for 1.6-1.8 s (docs/security.md).

Revocation sets the node's user to its tombstone rules (it may log in and read why it
was removed, nothing else) and cuts its connections in one MULTI: ``ACL SETUSER off``
would leave open connections working.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
import time

import redis

from ipam.registry import Node, Registry
from wire import identity
from wire.errors import NotFound, Unavailable
from wire.keys import Keys

from . import aclrules

log = logging.getLogger(__name__)

ZONE_SECRET_FIELD = "zone_secret_sha256"
LEGACY_SECRET_FIELD = "agent_secret_sha256"   # in the zone hash, before issue 14
ZONE_SECRET_AT = "zone_secret_at"
ZONE_SECRET_SETTING = "zone_secret"      # in the zone hash: 'off' refuses the zone secret
JOIN_KEY_GRACE = 7 * 86400               # an expired key's user stays this long (clear refusals)


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

    @property
    def extra(self) -> tuple[str, ...]:
        """Connect-time commands only newer servers know (Redis 7.2's CLIENT SETINFO):
        naming an unknown command in ACL SETUSER fails."""
        if self._extra is None:
            try:
                version = str(self.redis.info("server").get("redis_version", "0"))
                major, minor = (int(x) for x in (version.split(".") + ["0"])[:2])
                self._extra = ("client|setinfo",) if (major, minor) >= (7, 2) else ()
            except (redis.exceptions.RedisError, ValueError):
                self._extra = ()
        return self._extra

    # -- the zone secret -------------------------------------------------------------------

    def set(self, zone: str, secret: str, now: float | None = None) -> None:
        """Create or replace the zone secret (an enrollment credential)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.auth(zone), mapping={
                ZONE_SECRET_FIELD: digest(secret),
                ZONE_SECRET_AT: repr(time.time() if now is None else now)})
            pipe.execute()
        self.apply_zone(zone)

    def rotate(self, zone: str) -> str:
        if not self.redis.exists(self.keys.zone(zone)):
            raise NotFound(f"zone {zone} does not exist")
        secret = new_secret()
        self.set(zone, secret)
        log.info("rotated the agent secret of zone %s", zone)
        return secret

    def allow_zone_secret(self, zone: str, allowed: bool) -> None:
        self.redis.hset(self.keys.zone(zone), ZONE_SECRET_SETTING, "on" if allowed else "off")
        self.apply_zone(zone)

    def zone_secret_allowed(self, zone: str) -> bool:
        return self.redis.hget(self.keys.zone(zone), ZONE_SECRET_SETTING) != "off"

    def apply_zone(self, zone: str) -> None:
        """The zone secret's user as stored (deleted when the zone does not accept it)."""
        stored = self.redis.hget(self.keys.auth(zone), ZONE_SECRET_FIELD)
        user = self.keys.agent_user(zone)
        if stored and self.zone_secret_allowed(zone):
            self._setuser(user, aclrules.enroller(self.keys, zone, identity.ZONE_SECRET_ID,
                                                  self.extra), stored)
        else:
            self._deluser(user)

    def delete(self, zone: str, nodes: dict[str, Node] | None = None) -> None:
        """Delete every user of a zone (it is being deleted): ``nodes`` read before."""
        users = [self.keys.agent_user(zone)]
        users += [node.user for node in (nodes or {}).values()]
        users += [self.keys.join_user(zone, r.id) for r in self.registry.join_keys(zone)]
        with self.redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.execute_command("ACL", "DELUSER", user)
            pipe.execute(raise_on_error=False)

    # -- join keys -------------------------------------------------------------------------

    def apply_join_key(self, zone: str, key_id: str, sha256: str) -> None:
        self._setuser(self.keys.join_user(zone, key_id),
                      aclrules.enroller(self.keys, zone, key_id, self.extra), sha256)

    def revoke_join_key(self, zone: str, key_id: str) -> None:
        """Delete the key's user; its connections (an enrollment under way) are cut."""
        self._deluser(self.keys.join_user(zone, key_id))

    # -- nodes -----------------------------------------------------------------------------

    def apply_node(self, zone: str, node: Node) -> None:
        rules = (aclrules.tombstone(self.keys, zone, node.id, self.extra) if node.removed
                 else aclrules.node(self.keys, zone, node.id, self.extra))
        self._setuser(node.user, rules, node.cred)

    def revoke_node(self, zone: str, node: Node) -> None:
        """The node's user becomes its tombstone and every connection of it is cut, at once."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.execute_command("ACL", "SETUSER", node.user,
                                 *aclrules.tombstone(self.keys, zone, node.id, self.extra),
                                 f"#{node.cred}")
            pipe.execute_command("CLIENT", "KILL", "USER", node.user)
            try:
                pipe.execute()
            except redis.exceptions.ResponseError as exc:
                raise Unavailable(f"cannot revoke the Redis user of node {node.name} ({exc})") from None

    def suspend_node(self, zone: str, node_id: str, user: str) -> None:
        """A node that floods the tower loses its publish right; its connections are cut."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.execute_command("ACL", "SETUSER", user, "clearselectors")
            pipe.execute_command("CLIENT", "KILL", "USER", user)
            pipe.execute(raise_on_error=False)

    def forget_node(self, node: Node) -> None:
        self._deluser(node.user)

    # -- all of them -----------------------------------------------------------------------

    def sync(self, zones: list[str]) -> int:
        """Re-apply every user of these zones from the stored digests (after a restart or
        failover, and at start); one pipeline per zone. Returns the users applied."""
        now = time.time()
        applied = 0
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
            for start in range(0, len(commands), 500):
                with self.redis.pipeline(transaction=False) as pipe:
                    for user, rules, sha in commands[start:start + 500]:
                        pipe.execute_command("ACL", "SETUSER", user, *rules, f"#{sha}")
                    self._check(pipe.execute(raise_on_error=False))
            applied += len(commands)
        return applied

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

    # -- plumbing --------------------------------------------------------------------------

    def _setuser(self, user: str, rules: list[str], sha256: str) -> None:
        try:
            self.redis.execute_command("ACL", "SETUSER", user, *rules, f"#{sha256}")
        except redis.exceptions.ResponseError as exc:
            raise Unavailable(f"cannot manage Redis ACL users ({exc}); give the tower an "
                              "admin Redis user or turn off --agent-acl") from None

    def _deluser(self, user: str) -> None:
        try:
            self.redis.execute_command("ACL", "DELUSER", user)
        except redis.exceptions.ResponseError as exc:
            raise Unavailable(f"cannot manage Redis ACL users ({exc})") from None

    @staticmethod
    def _check(replies: list) -> None:
        for reply in replies:
            if isinstance(reply, redis.exceptions.ResponseError):
                raise Unavailable(f"cannot manage Redis ACL users ({reply}); give the tower "
                                  "an admin Redis user or turn off --agent-acl")

"""Zone-scoped Redis ACL users for agents (least privilege).

Each zone has a user ``ct:agent:<zone>`` whose secret is shown once when the zone is
created. It may only add to its zone's request stream, subscribe to its zone's update
and reply channels, and read its zone's snapshot keys, the highest revision published
(for the periodic revision check) and the tower's public key.
Only the secret's SHA-256 is kept (in the zone hash), so the tower can re-apply every
user after a Redis restart or failover (ACLs are not replicated) without storing secrets.
"""
from __future__ import annotations

import hashlib
import logging
import secrets

import redis

from wire.errors import NotFound, Unavailable
from wire.keys import Keys

log = logging.getLogger(__name__)

SECRET_FIELD = "agent_secret_sha256"
COMMANDS = ("ping", "auth", "hello", "client|setname", "client|id", "select",
            "subscribe", "unsubscribe", "xadd", "get", "hget", "hgetall", "multi", "exec",
            "discard")


def agent_rules(keys: Keys, zone: str) -> list[str]:
    return [
        "reset", "on", "resetchannels", "-@all", *(f"+{c}" for c in COMMANDS),
        f"%W~{keys.requests(zone)}",
        f"%R~{keys.zone(zone)}", f"%R~{keys.rev(zone)}", f"%R~{keys.published(zone)}",
        f"%R~{keys.peers(zone)}",
        f"%R~{keys.tower_public}",
        f"&{keys.updates(zone)}", f"&{keys.reply_pattern(zone)}",
    ]


def new_secret() -> str:
    return secrets.token_urlsafe(24)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AgentCredentials:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def set(self, zone: str, secret: str) -> None:
        """Create or replace the zone's agent user with this secret."""
        self._apply(zone, digest(secret))
        self.redis.hset(self.keys.zone(zone), SECRET_FIELD, digest(secret))
        self.save()

    def rotate(self, zone: str) -> str:
        if not self.redis.exists(self.keys.zone(zone)):
            raise NotFound(f"zone {zone} does not exist")
        secret = new_secret()
        self.set(zone, secret)
        log.info("rotated the agent secret of zone %s", zone)
        return secret

    def delete(self, zone: str) -> None:
        self.redis.execute_command("ACL", "DELUSER", self.keys.agent_user(zone))
        self.save()

    def sync(self, zones: list[str]) -> None:
        """Re-apply every zone's user from its stored digest (after a restart or failover)."""
        for zone in zones:
            stored = self.redis.hget(self.keys.zone(zone), SECRET_FIELD)
            if stored:
                self._apply(zone, stored)
        self.save()

    def _apply(self, zone: str, secret_sha256: str) -> None:
        try:
            self.redis.execute_command("ACL", "SETUSER", self.keys.agent_user(zone),
                                       *agent_rules(self.keys, zone), f"#{secret_sha256}")
        except redis.exceptions.ResponseError as exc:
            raise Unavailable(f"cannot manage Redis ACL users ({exc}); give the tower an "
                              "admin Redis user or turn off --agent-acl") from None

    def save(self) -> None:
        try:
            self.redis.execute_command("ACL", "SAVE")
        except redis.exceptions.ResponseError as exc:
            log.debug("ACL SAVE not possible (%s); users are re-applied at start", exc)

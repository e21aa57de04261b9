"""Enrollment: trade a join key (or the zone secret) for this node's own credential.

The agent logs in as the join key's (or the zone secret's) Redis user, which may only
ask for enrollment. It picks a random password, sends only its SHA-256 in an ``enroll``
request signed like every request (proof that it holds its WireGuard key), and the tower
makes a Redis user for this node with that digest. The password never leaves the node.
"""
from __future__ import annotations

import logging
import secrets

import redis.asyncio as aioredis

from wire import identity
from wire.errors import MeshError
from wire.keys import Keys

from .credential import NodeCredential
from .session import Route, TowerRefused, TowerSession

log = logging.getLogger(__name__)


class EnrollRefused(MeshError):
    """The tower refused to enroll this node: the message says why, ``code`` which kind
    (``removed``: this node was removed for good)."""

    def __init__(self, message: str, code: str = "error") -> None:
        super().__init__(message)
        self.code = code


async def enroll(client: aioredis.Redis, keys: Keys, zone: str, cred_id: str,
                 private_key: str, name: str | None, hostname: str,
                 timeout: float = 5.0, sharded: bool = False) -> NodeCredential:
    """Enroll over ``client`` (logged in as the enrollment user of ``cred_id``)."""
    password = secrets.token_urlsafe(32)
    session = TowerSession(client, zone, private_key, keys=keys)
    session.route = Route.enroll(keys, zone, cred_id, session.public_key, sharded)
    try:
        await session.open()
        reply = await session.request(
            "enroll", {"credential_sha256": identity.digest(password), "name": name,
                       "hostname": hostname[:253] or None},
            timeout=timeout, attempts=3)
    except TowerRefused as exc:
        raise EnrollRefused(str(exc), exc.code) from None
    finally:
        await session.close()
    log.info("enrolled in zone %s as %s", zone, reply.get("name"))
    expires = reply.get("expires")
    return NodeCredential(zone=zone, user=str(reply["user"]), password=password,
                          name=str(reply.get("name") or ""),
                          expires=float(expires) if expires else None)

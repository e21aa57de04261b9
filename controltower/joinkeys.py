"""Join keys as the operator makes and revokes them (REST API and dashboard alike): the
registry record and the key's Redis user, together or not at all."""
from __future__ import annotations

from typing import Any

from ipam.registry import DEFAULT_EPHEMERAL_AFTER, DEFAULT_JOIN_KEY_SECONDS, JoinKeyRecord
from ipam.store import Zone
from wire.errors import Conflict, InvalidInput

from .acl import AgentCredentials


def managed(creds: AgentCredentials | None) -> AgentCredentials:
    if creds is None:
        raise Conflict("this tower does not manage agent credentials (--no-agent-acl)")
    return creds


def create(creds: AgentCredentials | None, zone: Zone, options: dict[str, Any]
           ) -> tuple[str, JoinKeyRecord]:
    """A new join key of ``zone``: (the key, shown once; its record). ``options`` are the
    REST API's body fields (ExpiresIn, Uses, Reusable, Ephemeral, ...)."""
    creds = managed(creds)
    if options.get("Reusable") and "Uses" in options:
        raise InvalidInput("a reusable key has no use limit: give Reusable or Uses")
    key, record = creds.registry.create_join_key(
        zone.name, zone.network, expires_in=options.get("ExpiresIn", DEFAULT_JOIN_KEY_SECONDS),
        uses=options.get("Uses", 1), reusable=options.get("Reusable", False),
        ephemeral=options.get("Ephemeral", False),
        ephemeral_after=options.get("EphemeralAfter", DEFAULT_EPHEMERAL_AFTER),
        tags=options.get("Tags", []), routes=options.get("Routes", []),
        description=options.get("Description", ""))
    try:
        creds.apply_join_key(zone.name, record.id, record.sha256)
    except Exception:
        creds.registry.forget_join_key(zone.name, record.id)
        raise
    return str(key), record


def revoke(creds: AgentCredentials | None, zone: str, key_id: str) -> JoinKeyRecord:
    creds = managed(creds)
    record = creds.registry.revoke_join_key(zone, key_id)
    creds.revoke_join_key(zone, key_id)
    return record


def listed(creds: AgentCredentials | None, zone: str) -> list[JoinKeyRecord]:
    return managed(creds).registry.join_keys(zone)


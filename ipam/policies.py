"""Zone access policies in Redis: one string per zone (``Keys.policy``), set or deleted
together with its change in the zone's change log (``set_policy.lua``), so a policy
change reaches every agent as one change on the zone channel, in revision order with
the peer changes, and a snapshot carries the policy in force at its revision."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from wire import policy as policies
from wire.errors import NotFound
from wire.policy import Member, Policy

from .store import ZoneStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stored:
    rev: int                   # the zone revision that set it
    policy: Policy


class Policies:
    def __init__(self, store: ZoneStore) -> None:
        self.store = store

    def get(self, zone: str) -> Stored | None:
        """The zone's policy, None when it has none (NotFound: no such zone)."""
        keys = self.store.keys
        with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.exists(keys.zone(zone))
            pipe.get(keys.policy(zone))
            exists, text = pipe.execute()
        if not exists:
            raise NotFound(f"zone {zone} does not exist")
        found = policies.stored(text)
        return None if found is None else Stored(*found)

    def set(self, zone: str, document: Any) -> tuple[Stored, list[str]]:
        """Validate and store a policy (PolicyError: refused whole, the old one stays),
        publish it; returns it and its warnings (tags and names no node has)."""
        policy = policies.parse(document)
        rev = self._write(zone, policy.to_json())
        log.info("zone %s: policy set (%d rules) at revision %d", zone, len(policy.rules), rev)
        return Stored(rev, policy), policies.warnings(policy, self.members(zone))

    def delete(self, zone: str) -> int:
        """Delete the zone's policy (everything allowed again); returns the revision."""
        rev = self._write(zone, "")
        log.info("zone %s: policy deleted at revision %d", zone, rev)
        return rev

    def members(self, zone: str) -> list[Member]:
        return [Member.of(peer) for peer in self.store.peers(zone)]

    def _write(self, zone: str, text: str) -> int:
        keys = self.store.keys
        reply = self.store.scripts.set_policy(
            keys=[keys.zone(zone), keys.policy(zone), keys.rev(zone), keys.changes(zone)],
            args=[text, self.store.change_log_length])
        if reply[0] == "nozone":
            raise NotFound(f"zone {zone} does not exist")
        self.store.flush(zone)
        return int(reply[1])

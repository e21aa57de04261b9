"""Zone access policies in Redis: one string per zone (``Keys.policy``), set or deleted
together with its change in the zone's change log (``set_policy.lua``), so a policy
change reaches every agent as one change on the zone channel, in revision order with
the peer changes, and a snapshot carries the policy in force at its revision."""
from __future__ import annotations

import json
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

    def node_states(self, zone: str) -> dict[str, dict[str, Any]]:
        """The state of each registered node's rules as its heartbeat last said (public
        key -> {"rev", "state", "error", "ts"}); nodes that never said are left out."""
        keys = self.store.keys
        with self.store.redis.pipeline(transaction=False) as pipe:
            pipe.hkeys(keys.peers(zone))
            pipe.hgetall(keys.fwstate(zone))
            peers, states = pipe.execute()
        out = {}
        for key in peers:
            raw = states.get(key)
            if raw is not None:
                try:
                    out[key] = json.loads(raw)
                except ValueError:
                    continue
        return out

    def node_state(self, zone: str, key: str) -> dict[str, Any] | None:
        raw = self.store.redis.hget(self.store.keys.fwstate(zone), key)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def summary(self, zone: str, rev: int | None) -> dict[str, Any]:
        """How the zone's nodes stand with the policy of revision ``rev`` (None: none):
        counts by state, and the nodes not applying it (failed, closed, behind)."""
        counts = {"applied": 0, "behind": 0, "failed": 0, "closed": 0, "none": 0}
        problems = []
        for key, state in self.node_states(zone).items():
            name = state.get("state")
            if name == "applied" and rev is not None and (state.get("rev") or 0) < rev:
                name = "behind"
            if name not in counts:
                continue
            counts[name] += 1
            if name in ("failed", "closed", "behind"):
                problems.append({"PublicKey": key, "State": name,
                                 "Revision": state.get("rev"), "Error": state.get("error", "")})
        return {"Counts": counts, "NotApplying": problems[:100]}

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

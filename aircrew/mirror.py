"""The agent's copy of its zone: a snapshot plus the updates applied on top (pure).

Updates carry the revision they apply on (``since``) and the one they lead to (``rev``).
An update that does not start at our revision means we missed one: resync.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from wire.messages import Peer, ZoneUpdate
from wire.policy import Policy


class Outcome(enum.Enum):
    APPLIED = "applied"
    STALE = "stale"            # already covered by our revision
    GAP = "gap"                # we missed something: take a new snapshot
    ZONE_DELETED = "zone-deleted"


@dataclass
class ZoneMirror:
    rev: int = -1                                  # -1: no snapshot yet
    peers: dict[str, Peer] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)   # key -> reason, last update only
    touched: set[str] = field(default_factory=set)          # keys the last update changed
    policy: Policy | None = None                   # the zone's access policy; None: none
    policy_rev: int | None = None                  # the revision that set it

    @property
    def loaded(self) -> bool:
        return self.rev >= 0

    def load(self, rev: int, peers: dict[str, Peer], policy: Policy | None = None,
             policy_rev: int | None = None) -> None:
        self.rev = rev
        self.peers = dict(peers)
        self.removed = {}
        self.touched = set()
        self.policy, self.policy_rev = policy, policy_rev if policy is not None else None

    def apply(self, update: ZoneUpdate) -> Outcome:
        self.removed = {}
        self.touched = set()
        if not self.loaded:
            return Outcome.GAP
        if update.rev <= self.rev:
            return Outcome.STALE
        if update.since > self.rev:
            return Outcome.GAP
        for change in update.changes:
            if change.rev <= self.rev:
                continue  # overlap with what the snapshot already held
            if change.op == "zone-deleted":
                return Outcome.ZONE_DELETED
            if change.op == "upsert" and change.peer is not None:
                self.peers[change.peer.key] = change.peer
                self.touched.add(change.peer.key)
            elif change.op == "remove" and change.key is not None:
                self.peers.pop(change.key, None)
                self.removed[change.key] = change.reason or ""
                self.touched.add(change.key)
            elif change.op == "policy":
                self.policy = change.policy
                self.policy_rev = change.rev if change.policy is not None else None
            self.rev = change.rev
        self.rev = update.rev
        return Outcome.APPLIED

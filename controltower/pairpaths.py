"""How each pair of a zone's nodes reaches the other: the one place the dashboard reads
pair paths from (no HTTP in between).

Paths: ``direct``, ``relayed``, ``down``, ``mixed`` (the two ends disagree), ``unknown``.
Until the agents' path reports are stored (the relay work, issue 13), the tower knows
only who heartbeats: a pair is ``direct`` when both ends are online and ``down`` when
either is not. Callers ask per pair (:meth:`PairPaths.of`) or per group of nodes
(:meth:`PairPaths.between`, for the aggregated picture of a large zone), so a zone of
1,000 nodes never materialises its 499,500 pairs.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ipam.store import ZoneStore
from wire.messages import Peer

PATHS = ("direct", "relayed", "down", "mixed", "unknown")


@dataclass(frozen=True)
class PairPaths:
    online: frozenset[str]           # public keys heartbeating within offline_after

    def of(self, a: str, b: str) -> str:
        return "direct" if a in self.online and b in self.online else "down"

    def between(self, groups: Mapping[str, str]) -> dict[tuple[str, str], Counter]:
        """(group, group) -> paths counted over every pair of nodes across (or within) the
        two groups; ``groups`` maps each node's key to its group (keys sorted in a pair)."""
        up: Counter = Counter()
        total: Counter = Counter()
        for key, group in groups.items():
            total[group] += 1
            up[group] += key in self.online
        names = sorted(total)
        out: dict[tuple[str, str], Counter] = {}
        for i, g in enumerate(names):
            for h in names[i:]:
                if g == h:
                    pairs = total[g] * (total[g] - 1) // 2
                    direct = up[g] * (up[g] - 1) // 2
                else:
                    pairs = total[g] * total[h]
                    direct = up[g] * up[h]
                if pairs:
                    out[(g, h)] = Counter({"direct": direct, "down": pairs - direct})
        return out

    def counts(self, keys: Iterable[str]) -> Counter:
        """Paths over every pair of ``keys``."""
        found: Counter = Counter()
        for counter in self.between(dict.fromkeys(keys, "")).values():
            found.update(counter)
        return found

    def digest(self) -> str:
        """Changes when any pair's path does (an ETag part)."""
        return hashlib.sha256("\n".join(sorted(self.online)).encode()).hexdigest()[:16]


def read(store: ZoneStore, zone: str, peers: Iterable[Peer], seen: Mapping[str, float],
         now: float, offline_after: float) -> PairPaths:
    """The pair paths of ``zone`` now; ``seen``: last heartbeat per key (already read)."""
    keys = {p.key for p in peers}
    return PairPaths(frozenset(k for k in keys if seen.get(k, 0.0) >= now - offline_after))


def version(store: ZoneStore, zone: str, now: float, offline_after: float) -> str:
    """A short text that changes whenever a pair's path may have (cheap: no peer records)."""
    online = store.redis.zrangebyscore(store.keys.seen(zone), now - offline_after, "+inf")
    return hashlib.sha256("\n".join(sorted(online)).encode()).hexdigest()[:16]

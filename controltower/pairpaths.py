"""How each pair of a zone's nodes reaches the other: the one place the dashboard reads
pair paths from (the tower's store, no HTTP in between).

Paths: ``direct``, ``relayed`` (through which relay), ``down``, ``mixed`` (the two ends
disagree, usually for a moment while a pair moves), ``unknown``. Each node reports its
view of every peer on its heartbeats (``ct:{zone}:paths``); a pair is read from both
ends' reports as ``GET /zones/<zone>/paths`` reads it (``controltower.pathmatrix``:
both ends' word, ``mixed`` when they differ, one end's when only one reported, a report
older than ``stale`` seconds counting as none), with two differences for the picture:
a pair with an end that stopped heartbeating (offline) is ``down`` (that end's report
cannot be fresh, and the other end's WireGuard takes up to 3 minutes to call it down),
and a pair between online nodes that neither reported on is ``unknown``.

Callers ask per pair (:meth:`PairPaths.of`) or per group of nodes
(:meth:`PairPaths.between`, for the aggregated picture of a large zone).
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ipam.store import ZoneStore
from wire.messages import Peer

from . import pathmatrix
from .relay.directory import read_relays

PATHS = ("direct", "relayed", "down", "mixed", "unknown")
DETAILED_VERSION = 64      # up to this many reports the version follows every path
COARSE_SECONDS = 10        # above: the reports are read again this often
CACHED_ZONES = 16          # large zones' last readings kept per process
LISTED = 50                # pairs not direct listed by name
_CACHE: dict[tuple[str, str], tuple[str, "PairPaths"]] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class PairPaths:
    online: frozenset[str]                                  # keys heartbeating lately
    address: Mapping[str, str] = field(default_factory=dict)    # key -> mesh address
    views: Mapping[str, Mapping[str, tuple[str, str | None]]] = field(default_factory=dict)
    relays: tuple[str, ...] = ()                            # the zone's relays (ids)
    _counted: dict = field(default_factory=dict, compare=False, repr=False)

    def pair(self, a: str, b: str) -> tuple[str, str | None]:
        """(path, relay) of the pair ``a``-``b``."""
        if a not in self.online or b not in self.online:
            return "down", None
        av = self.views.get(a, {}).get(self.address.get(b, ""))
        bv = self.views.get(b, {}).get(self.address.get(a, ""))
        if av is None and bv is None:
            return "unknown", None
        if av is not None and bv is not None and av != bv:
            return "mixed", None
        return av or bv                                         # type: ignore[return-value]

    def of(self, a: str, b: str) -> str:
        return self.pair(a, b)[0]

    def between(self, groups: Mapping[str, str]) -> dict[tuple[str, str], Counter]:
        """(group, group) -> paths counted over every pair of nodes across (or within) the
        two groups; ``groups`` maps each node's key to its group (names sorted in a pair).

        Walks the reports, not the pairs: a pair no report names is ``unknown`` (both
        online) or ``down``, counted from group sizes, so a zone of 1,000 nodes costs its
        reports' entries, not 499,500 look-ups. Remembered per grouping (a large zone's
        reading is reused until its version changes)."""
        memo = frozenset(groups.items())
        found = self._counted.get(memo)
        if found is None:
            found = self._counted[memo] = self._between(groups)
            while len(self._counted) > 5:
                oldest = next(k for k in self._counted if k != "exceptions")
                self._counted.pop(oldest)
        return {slot: Counter(counter) for slot, counter in found.items()}

    def _between(self, groups: Mapping[str, str], listed: int = 0
                 ) -> dict[tuple[str, str], Counter]:
        listed = max(listed, LISTED)
        odd: list[tuple[str, str, str, str | None]] = []
        odd_total = 0
        size: Counter = Counter(groups.values())
        up: Counter = Counter(g for k, g in groups.items() if k in self.online)
        names = sorted(size)
        width = len(names)
        group_of = {k: names.index(g) for k, g in groups.items()}
        by_address = {self.address[k]: k for k in groups if k in self.online and k in self.address}
        tally: list[dict[str, int]] = [{} for _ in range(width * width)]
        views, empty = self.views, {}
        for a, seen in views.items():
            ga = group_of.get(a)
            if ga is None or a not in self.online:
                continue
            own = self.address[a]
            for peer_address, view in seen.items():
                b = by_address.get(peer_address)
                if b is None or b == a:
                    continue
                other = views.get(b, empty).get(own)
                if other is None:
                    path = view[0]
                elif b < a:
                    continue                   # counted from b's side
                else:
                    path = view[0] if other == view else "mixed"
                if path != "direct":
                    odd_total += 1
                    if len(odd) < listed:
                        odd.append((a, b, path, view[1] if path != "mixed" else None))
                gb = group_of.get(b)
                if gb is None:
                    continue
                counts = tally[ga * width + gb if ga <= gb else gb * width + ga]
                counts[path] = counts.get(path, 0) + 1
        out: dict[tuple[str, str], Counter] = {}
        named: Counter = Counter()
        for i, g in enumerate(names):
            for j in range(i, width):
                found = tally[i * width + j]
                if found:
                    out[(g, names[j])] = Counter(found)
                    named[(g, names[j])] = sum(found.values())
        for i, g in enumerate(names):
            for h in names[i:]:
                if g == h:
                    pairs, online = size[g] * (size[g] - 1) // 2, up[g] * (up[g] - 1) // 2
                else:
                    pairs, online = size[g] * size[h], up[g] * up[h]
                if not pairs:
                    continue
                counter = out.setdefault((g, h), Counter())
                counter["down"] += pairs - online
                counter["unknown"] += online - named[(g, h)]
                for path in [p for p, n in counter.items() if not n]:
                    del counter[path]
        odd.sort()
        self._counted["exceptions"] = (odd, odd_total)
        return out

    def exceptions(self, limit: int = LISTED) -> tuple[list[tuple[str, str, str, str | None]], int]:
        """Pairs of online nodes that some report names and that are not direct:
        (up to ``limit`` of them as (a, b, path, relay), how many in all). Read from the
        reports in the same walk as :meth:`between` (a zone of 1,000 nodes costs its
        reports' entries once)."""
        found = self._counted.get("exceptions")
        if found is None or limit > LISTED:
            self._between(dict.fromkeys(self.online, ""), limit)
            found = self._counted["exceptions"]
        return found[0][:limit], found[1]

    def counts(self, keys: Iterable[str]) -> Counter:
        found: Counter = Counter()
        for counter in self.between(dict.fromkeys(keys, "")).values():
            found.update(counter)
        return found


def stale_after(offline_after: float) -> float:
    """A report older than this counts as none (as GET /zones/<zone>/paths reads them)."""
    return max(60.0, 2 * offline_after)


def read(store: ZoneStore, zone: str, peers: Iterable[Peer], seen: Mapping[str, float],
         now: float, offline_after: float) -> PairPaths:
    """The pair paths of ``zone`` now; ``seen``: last heartbeat per key (already read).

    A zone of more than DETAILED_VERSION reports (a 1,000-node zone's are ~12 MB of JSON)
    is read again only when its version changes: when a node goes on- or offline, and
    every 10 s; between those this process answers from the last reading."""
    tag, coarse = _version(store, zone, now, offline_after)
    slot = (store.keys.prefix, zone)
    if coarse:
        with _LOCK:
            hit = _CACHE.get(slot)
        if hit is not None and hit[0] == tag:
            return hit[1]
    found = _read(store, zone, peers, seen, now, offline_after)
    with _LOCK:
        if coarse:
            _CACHE[slot] = (tag, found)
            while len(_CACHE) > CACHED_ZONES:
                _CACHE.pop(next(iter(_CACHE)))
        else:
            _CACHE.pop(slot, None)
    return found


def _read(store: ZoneStore, zone: str, peers: Iterable[Peer], seen: Mapping[str, float],
          now: float, offline_after: float) -> PairPaths:
    peers = list(peers)
    online = frozenset(p.key for p in peers if seen.get(p.key, 0.0) >= now - offline_after)
    stale = stale_after(offline_after)
    views = {}
    for key, text in store.redis.hgetall(store.keys.paths(zone)).items():
        if key in online:                       # an offline node's pairs are down anyway
            views[key] = _views(pathmatrix.parse_report(text), now, stale)
    relays = tuple(str(r.get("id")) for r in read_relays(store.redis, store.keys)
                   if "*" in (r.get("zones") or ["*"]) or zone in (r.get("zones") or []))
    return PairPaths(online, {p.key: p.address for p in peers}, views, relays)


def _views(report: Mapping[str, Any], now: float, stale: float
           ) -> dict[str, tuple[str, str | None]]:
    """peer address -> (path, relay) of one report: ``pathmatrix.views`` without the
    fields the picture does not show (a 1,000-node zone has ~400,000 entries)."""
    try:
        if now - float(report.get("ts", 0)) > stale:
            return {}
    except (TypeError, ValueError):
        return {}
    relays = report.get("relays") or []
    codes = pathmatrix.CODES
    entries = report.get("paths") or []
    try:                      # well-formed, as the gate stores them: one pass
        return {str(e[0]): (codes.get(e[1], "unknown"),
                            relays[e[2]] if e[2] is not None and e[2] >= 0 else None)
                for e in entries if len(e) == 4}
    except (TypeError, IndexError, KeyError):
        pass
    out = {}
    for entry in entries:
        if type(entry) is not list or len(entry) != 4:
            continue
        index = entry[2]
        relay = relays[index] if type(index) is int and 0 <= index < len(relays) else None
        out[str(entry[0])] = (codes.get(entry[1], "unknown"), relay)
    return out


def version(store: ZoneStore, zone: str, now: float, offline_after: float) -> str:
    """A short text that changes whenever a pair's path may have: who is online and, in
    zones of up to DETAILED_VERSION reports, every reported path (not their ages); in
    larger ones the reports count every 10 s (reading them all each poll would cost
    more than the picture is worth)."""
    return _version(store, zone, now, offline_after)[0]


def _version(store: ZoneStore, zone: str, now: float, offline_after: float) -> tuple[str, bool]:
    """(version, whether it is the coarse one of a large zone)."""
    with store.redis.pipeline(transaction=False) as pipe:
        pipe.zrangebyscore(store.keys.seen(zone), now - offline_after, "+inf")
        pipe.hlen(store.keys.paths(zone))
        online, reports = pipe.execute()
    parts: list[Any] = sorted(online)
    coarse = reports > DETAILED_VERSION
    if reports and not coarse:
        stale = stale_after(offline_after)
        for key, text in sorted(store.redis.hgetall(store.keys.paths(zone)).items()):
            got = _views(pathmatrix.parse_report(text), now, stale)
            parts.append((key, sorted((a, *v) for a, v in got.items())))
    elif coarse:
        parts.append(int(now // COARSE_SECONDS))
    digest = hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()
    return digest[:16], coarse

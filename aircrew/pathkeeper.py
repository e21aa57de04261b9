"""The agent's side of relays and paths, as a task beside its connection loop.

It reads the zone's relays (``ct:relays``), binds to them from the WireGuard port, and
every ``TICK`` decides each peer's path (``aircrew.paths``) and carries out the changes
on the device: a move onto a relay re-creates the peer there (new handshake at once),
a move to direct only sets the endpoint (WireGuard follows on the other side). It keeps
running while the tower is unreachable: paths do not need the tower.

Without CAP_NET_RAW (binds and probes leave from the WireGuard port through a raw
socket) the agent runs without relays and probes, as before.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from wire.messages import MAX_PATH_REPORT, Peer

from .paths import DOWN, Decision, NodeView
from .pathservice import PathService, PeerLink
from .relaybook import RelayInfo

log = logging.getLogger(__name__)

TICK = 0.25
LINK_READ = 1.0          # seconds between reads of the device's handshake times
LINK_READ_WATCHING = 0.25   # ... while a moved peer waits for its handshake (a 0.5 s kick)
MAX_RELAYS = 8
START_WAIT = 1.0         # at start, wait this long at most for every relay to answer
PATH_CODE = {"direct": "d", "relayed": "r", "down": "x"}
# The paths of one report, encoded: with the request around it, well under the 16 KiB a
# message may have (a larger one gets its sender suspended by the tower's gate).
REPORT_BYTES = 12_000


def parse_relays(records: Mapping[str, str], zone: str, controller_host: str) -> list[RelayInfo]:
    """The announced relays that serve ``zone`` (at most MAX_RELAYS, by id); a record
    without a host is reached at the controller's host."""
    found = []
    for rid, text in sorted(records.items()):
        try:
            record = json.loads(text)
            zones = record.get("zones") or ["*"]
            if "*" not in zones and zone not in zones:
                continue
            port = int(record["port"])
            if not 0 < port < 65536:
                continue
            found.append(RelayInfo(str(record["id"]), str(record.get("host") or controller_host),
                                   port, str(record["public_key"]), str(record.get("region", ""))))
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring a malformed relay record %r", rid)
    return found[:MAX_RELAYS]


class PathKeeper:
    def __init__(self, private_key: str, zone: str, listen_port: int,
                 controller_host: str) -> None:
        self.zone = zone
        self.controller_host = controller_host
        self.service: PathService | None = None
        self.private_key = private_key
        self.listen_port = listen_port
        self._links: dict[str, PeerLink] = {}
        self._links_at = float("-inf")
        self.relay_ids: list[str] = []

    def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Open the WireGuard port's raw socket; False (logged) when the agent cannot."""
        try:
            self.service = PathService(self.private_key, self.zone, self.listen_port)
        except OSError as exc:
            log.warning("relays and path probes are off: cannot open a raw socket on the "
                        "WireGuard port (%s); run as root or give the agent CAP_NET_RAW", exc)
            return False
        loop.add_reader(self.service.sock.fileno(),
                        lambda: self.service.receive_all(time.monotonic()))
        return True

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.service is not None:
            loop.remove_reader(self.service.sock.fileno())
            self.service.sock.close()

    # -- relays -------------------------------------------------------------------------

    def set_relays(self, records: Mapping[str, str]) -> None:
        relays = parse_relays(records, self.zone, self.controller_host)
        ids = [r.id for r in relays]
        if ids != self.relay_ids:
            log.info("relays of zone %s: %s", self.zone, ", ".join(ids) or "none")
        self.relay_ids = ids
        self.service.set_relays(relays)

    async def bind_all(self, timeout: float = START_WAIT) -> None:
        """Bind to every relay and wait until each answered (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.service.bind_due(time.monotonic())
            book = self.service.book
            if all(s.answered or s.refused for s in book.relays.values()):
                return
            await asyncio.sleep(0.02)

    @property
    def home(self) -> str | None:
        return self.service.book.home if self.service else None

    # -- decisions ----------------------------------------------------------------------

    def links_due(self, now: float) -> bool:
        watching = self.service is not None and self.service.watching()
        return now - self._links_at >= (LINK_READ_WATCHING if watching else LINK_READ)

    def set_links(self, now: float, links: dict[str, PeerLink]) -> None:
        self._links, self._links_at = links, now

    def _decide(self, now: float, own: NodeView, peers: Mapping[str, Peer], keep: bool):
        self.service.bind_due(now)
        views = {key: NodeView(p.key, p.endpoint, p.nat_type, p.relay)
                 for key, p in peers.items() if key != own.key}
        return self.service.tick(now, own, views, self._links, keep=keep,
                                 links_at=self._links_at)

    def decide(self, now: float, own: NodeView, peers: Mapping[str, Peer],
               keys: Iterable[str] | None = None) -> None:
        """Decide every peer's path now (given ``keys``, those peers' only: the ones a zone
        update touched), for a reconcile (it adds new peers and sets the endpoints): the
        other changes (a move onto another relay, a peer to re-create) stay owed to the
        next ``tick``."""
        if keys is None:
            self._decide(now, own, peers, keep=True)
            return
        self.service.bind_due(now)
        views, gone = {}, []
        for key in keys:
            peer = peers.get(key) if key != own.key else None
            if peer is None:
                gone.append(key)
            else:
                views[key] = NodeView(peer.key, peer.endpoint, peer.nat_type, peer.relay)
        self.service.tick_some(now, own, views, gone, self._links, links_at=self._links_at)

    def tick(self, now: float, own: NodeView, peers: Mapping[str, Peer]) -> dict[str, Decision]:
        """Decide every peer's path now; returns {key: Decision} of the changes to carry
        out: this tick's and those ``decide`` left owed."""
        return self.service.take_changes(self._decide(now, own, peers, keep=False))

    def give_back(self, changes: Mapping[str, Decision]) -> None:
        """Changes ``tick`` handed over that could not be carried out: owed again."""
        self.service.give_back(changes)

    def endpoints(self, keys: Iterable[str] | None = None) -> dict[str, str | None]:
        return self.service.endpoints(keys) if self.service else {}

    def shown(self) -> dict[str, tuple[str, str | None]]:
        """What the status file shows per peer (to write it when that changes)."""
        if self.service is None:
            return {}
        return {k: (d.report, d.relay) for k, d in self.service.decisions.items()}

    def any_relayed(self) -> bool:
        return self.service is not None and bool(self.service.relayed)

    # -- reports ------------------------------------------------------------------------

    def report(self, peers: Mapping[str, Peer]) -> dict[str, Any]:
        """The heartbeat's path report: non-direct and oldest handshakes first, bounded."""
        if self.service is None:
            return {}
        relays = list(self.relay_ids)
        entries = []
        for key, decision in self.service.decisions.items():
            peer = peers.get(key)
            if peer is None:
                continue
            link = self._links.get(key, PeerLink())
            age = None if link.stats_age is None else max(0, int(link.stats_age))
            index = relays.index(decision.relay) if decision.relay in relays else None
            entries.append([peer.address, PATH_CODE[decision.report], index, age])
        entries.sort(key=lambda e: (e[1] == "d", -(e[3] if e[3] is not None else 1 << 30)))
        return {"relay": self.home, "relays": relays, "paths": bounded(entries)}

    def status(self, peers: Mapping[str, Peer]) -> dict[str, Any]:
        """What ``aircrew status`` shows: per peer its path, relay and the relay's RTT."""
        if self.service is None:
            return {"ts": time.time(), "relays": {}, "peers": {}}
        book = self.service.book
        relays = {rid: {"region": s.info.region, "alive": s.alive,
                        "rtt_ms": None if s.rtt is None else round(s.rtt * 1000, 2),
                        "home": rid == book.home}
                  for rid, s in book.relays.items()}
        out = {}
        for key, decision in self.service.decisions.items():
            out[key] = {"path": decision.report, "mode": decision.mode, "relay": decision.relay,
                        "endpoint": decision.endpoint}
        return {"ts": time.time(), "relays": relays, "peers": out}


def bounded(entries: list[list]) -> list[list]:
    """The first entries, at most MAX_PATH_REPORT of them and REPORT_BYTES encoded."""
    size = 0
    for count, entry in enumerate(entries[:MAX_PATH_REPORT]):
        size += len(json.dumps(entry, separators=(",", ":"))) + 1
        if size > REPORT_BYTES:
            return entries[:count]
    return entries[:MAX_PATH_REPORT]


def summary(status: Mapping[str, Any]) -> str:
    counts: dict[str, int] = {}
    for peer in status.get("peers", {}).values():
        counts[peer["path"]] = counts.get(peer["path"], 0) + 1
    return ", ".join(f"{n} {p}" for p, n in sorted(counts.items())) or "no peers"


__all__ = ["PathKeeper", "parse_relays", "summary", "DOWN"]

"""The relays a node can use: their liveness, round-trip time and the nearest (pure).

The agent binds to every relay of its zone: each bind is also a round-trip probe. A relay
is alive once it answered and until 3 binds in a row go unanswered (1 s each); the home
relay is the nearest alive one and changes only when another is 30 % nearer or home
dies. A changed boot id means the relay restarted and forgot its routes: the pairs on it
need a new handshake.
"""
from __future__ import annotations

from dataclasses import dataclass, field

EWMA = 0.3


@dataclass(frozen=True)
class RelayInfo:
    id: str
    host: str
    port: int
    public_key: str
    region: str = ""

    @property
    def endpoint(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class BookTiming:
    busy_interval: float = 1.0      # binds to relays in use (home, pairs' relays)
    idle_interval: float = 5.0      # ... to the others
    answer_timeout: float = 1.0
    dead_after: int = 3             # unanswered binds in a row
    better: float = 0.7             # another relay must be this fraction of home's RTT


@dataclass
class RelayState:
    info: RelayInfo
    rtt: float | None = None
    misses: int = 0
    answered: bool = False
    refused: str | None = None
    boot: bytes | None = None
    last_sent: float = float("-inf")
    outstanding: bytes | None = None
    mapped: tuple[str, int] | None = None

    @property
    def alive(self) -> bool:
        return self.answered and self.refused is None and self.misses < 3


@dataclass
class RelayBook:
    timing: BookTiming = field(default_factory=BookTiming)
    relays: dict[str, RelayState] = field(default_factory=dict)
    home: str | None = None

    def update(self, infos: list[RelayInfo]) -> None:
        """The relays announced for our zone now (others are forgotten)."""
        wanted = {info.id: info for info in infos}
        for gone in set(self.relays) - set(wanted):
            del self.relays[gone]
        for rid, info in wanted.items():
            state = self.relays.get(rid)
            if state is None or state.info != info:
                self.relays[rid] = RelayState(info)
        self._rehome()

    def due(self, now: float, in_use: set[str]) -> list[str]:
        """Relays to bind to now. Call ``sent`` for each bind actually sent."""
        out = []
        for rid, state in self.relays.items():
            if state.outstanding is not None and now - state.last_sent > self.timing.answer_timeout:
                state.outstanding = None
                state.misses += 1
            busy = rid in in_use or rid == self.home or not state.alive
            interval = self.timing.busy_interval if busy else self.timing.idle_interval
            if state.refused is not None:
                interval = max(interval, 30.0)
            if now - state.last_sent >= interval and state.outstanding is None:
                out.append(rid)
        self._rehome()
        return out

    def sent(self, rid: str, txid: bytes, now: float) -> None:
        state = self.relays[rid]
        state.outstanding, state.last_sent = txid, now

    def answered(self, rid: str, txid: bytes, now: float, mapped: tuple[str, int],
                 boot: bytes) -> bool:
        """A bind-ok; True when the relay restarted since its last answer."""
        state = self.relays.get(rid)
        if state is None or state.outstanding != txid:
            return False
        sample = now - state.last_sent
        state.rtt = sample if state.rtt is None else (1 - EWMA) * state.rtt + EWMA * sample
        state.outstanding, state.misses, state.answered, state.refused = None, 0, True, None
        state.mapped = mapped
        restarted = state.boot is not None and state.boot != boot
        state.boot = boot
        self._rehome()
        return restarted

    def refused(self, rid: str, txid: bytes, reason: str) -> None:
        state = self.relays.get(rid)
        if state is not None and state.outstanding == txid:
            state.outstanding, state.refused = None, reason
            self._rehome()

    def alive(self) -> dict[str, str]:
        return {rid: s.info.endpoint for rid, s in self.relays.items() if s.alive}

    def _rehome(self) -> None:
        alive = {rid: s.rtt for rid, s in self.relays.items() if s.alive and s.rtt is not None}
        if not alive:
            self.home = None
            return
        best = min(alive, key=lambda rid: (alive[rid], rid))
        if self.home not in alive or alive[best] < self.timing.better * alive[self.home]:
            self.home = best

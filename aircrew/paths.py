"""Which way each peer is reached: direct, through a relay, or not at all (pure).

One ``PathMachine`` per peer. The agent tells it what happened (probes sent, acks and
probes received) and asks ``step(now, env)`` for the decision: the endpoint wg0 should
hold for the peer, whether to re-create the peer (so WireGuard handshakes at once,
through a relay that must see the handshake), and what to report.

    public side on either end ─────────────► DIRECT, for good (no probes)
    both behind NAT: RELAYED(R) ──2 of the last 3 probes acked──► DIRECT(ack address)
                     RELAYED(R) ◄──3 probes in a row unacked─────── DIRECT
                     (then a hold-down before direct is tried again: 30 s, doubling
                     to 5 min, back to 30 s after 10 min of stable direct)
    R dies / the pair's relay changes ──► RELAYED(R'), re-created

Both sides decide on the same evidence (a probe's ack is a round trip through both
NATs). Where they differ, the side with the smaller key decides: the other moves to
direct only when the decider's latest probe or ack claims direct, and back to the relay
when it claims relayed.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

PUBLIC_NAT_TYPES = frozenset({"open", "static"})
DIRECT, RELAYED, DOWN = "direct", "relayed", "down"


@dataclass(frozen=True)
class Timing:
    probe_relayed: float = 2.0      # seconds between probes while relayed
    probe_direct: float = 2.5       # ... while direct
    window: int = 3                 # probes looked at to go direct
    up_acks: int = 2                # acked probes among them needed
    down_misses: int = 3            # unacked probes in a row that end direct
    ack_timeout: float = 1.0        # a probe not acked this long is a miss
    claim_fresh: float = 6.0        # a peer's claim is believed this long
    holddown: float = 30.0
    holddown_max: float = 300.0
    stable: float = 600.0           # direct this long resets the hold-down
    handshake_dead: float = 180.0   # WireGuard rejects a session older than this
    grace: float = 10.0             # no handshake this long after the start: down
    fresh_handshake: float = 5.0    # a handshake this recent needs no re-creation
    kick_after: float = 2.0         # no handshake this long after a move to a relay: re-create
    kicks: int = 2                  # at most this many times per move
    kick_moved: float = 0.5         # no handshake this long after a direct move: re-create
                                    # (the side that does not decide waits twice this)
    moved_kicks: int = 2            # at most this many times per direct move


@dataclass(frozen=True)
class NodeView:
    """What the zone says about a node (this one or a peer)."""
    key: str
    endpoint: str | None = None
    nat_type: str | None = None
    relay: str | None = None        # its home relay


@dataclass(frozen=True)
class Env:
    own: NodeView
    peer: NodeView
    relays: dict[str, str] = field(default_factory=dict)   # alive relay id -> "host:port"
    handshake_age: float | None = None     # seconds since the last handshake, None: never
    device_endpoint: str | None = None     # what wg0 holds for the peer now
    read_at: float | None = None           # when handshake_age was read (None: now)


@dataclass(frozen=True)
class Decision:
    mode: str                       # DIRECT or RELAYED
    relay: str | None
    endpoint: str | None            # None: leave the device's endpoint as it is
    fresh: bool                     # re-create the peer (new handshake at once)
    report: str                     # DIRECT, RELAYED or DOWN
    probe_to: tuple[str, ...] = ()  # addresses to probe now (empty: no probe due)
    claim: str | None = None        # our path, carried in our probes and acks
    kick: bool = False              # fresh because no handshake came after a move


def pair_relay(own: NodeView, peer: NodeView, alive: dict[str, str]) -> str | None:
    """The relay a pair uses: the deciding side's home relay, else the other's, else
    the lowest id alive. Both sides compute the same from the same facts."""
    decider, other = (own, peer) if own.key < peer.key else (peer, own)
    for candidate in (decider.relay, other.relay):
        if candidate in alive:
            return candidate
    return min(alive) if alive else None


def is_public(node: NodeView) -> bool:
    return node.nat_type in PUBLIC_NAT_TYPES


@dataclass
class PathMachine:
    own_key: str
    peer_key: str
    timing: Timing = field(default_factory=Timing)
    started: float = 0.0
    mode: str | None = None
    relay: str | None = None
    direct_address: str | None = None
    proven: bool = False             # the direct path had acks (not just assumed)
    direct_since: float = 0.0
    holddown: float = 0.0
    holddown_until: float = 0.0
    reflexive: str | None = None     # where the peer's probes come from
    peer_claim: str | None = None
    peer_claim_at: float = float("-inf")
    last_ack_address: str | None = None
    last_probe: float = float("-inf")
    outstanding: bool = False
    history: collections.deque = field(default_factory=lambda: collections.deque(maxlen=8))
    moved_at: float | None = None    # when we last moved onto a relay, until a handshake
    kicks_left: int = 0
    last_fresh: float = float("-inf")
    moved: bool = False              # the zone gave the peer a new endpoint
    watch_since: float | None = None  # a direct move re-created the peer then: no handshake yet
    watch_kicks: int = 0

    def __post_init__(self) -> None:
        self.holddown = self.timing.holddown

    @property
    def decider(self) -> bool:
        return self.own_key < self.peer_key

    # -- what happened ---------------------------------------------------------------

    def probe_sent(self, now: float) -> None:
        if self.outstanding:
            self.history.append(False)
        self.outstanding = True
        self.last_probe = now

    def acked(self, now: float, address: str, claim: str | None) -> None:
        """An ack of our probe came back from ``address`` (a round trip worked)."""
        if self.outstanding:
            self.history.append(True)
            self.outstanding = False
        self.last_ack_address = address
        self._claim(now, claim)

    def probed(self, now: float, source: str, claim: str | None) -> None:
        """The peer's probe reached us from ``source``."""
        self.reflexive = source
        self._claim(now, claim)

    def peer_moved(self) -> None:
        """The zone changed the peer's endpoint: what we learnt of its address is stale,
        and a direct path must be re-created there (new handshake at once)."""
        self.direct_address = self.last_ack_address = self.reflexive = None
        self.history.clear()
        self.outstanding = False
        self.moved = True

    def _claim(self, now: float, claim: str | None) -> None:
        if claim is not None:
            self.peer_claim, self.peer_claim_at = claim, now

    # -- the decision ------------------------------------------------------------------

    def _recent_claim(self, now: float) -> str | None:
        if now - self.peer_claim_at <= self.timing.claim_fresh:
            return self.peer_claim
        return None

    def _acks(self) -> int:
        return sum(list(self.history)[-self.timing.window:])

    def _misses_in_a_row(self) -> int:
        count = 0
        for ok in reversed(self.history):
            if ok:
                break
            count += 1
        return count

    def step(self, now: float, env: Env) -> Decision:
        if self.mode is None:
            self.started = now
        t = self.timing
        if self.outstanding and now - self.last_probe > t.ack_timeout:
            self.history.append(False)
            self.outstanding = False
        if is_public(env.own) or is_public(env.peer):
            self.mode, self.relay = DIRECT, None
            fresh, self.moved = self.moved and env.peer.endpoint is not None, False
            kick = not fresh and self._kick_due(now, env)
            if fresh:
                self._watch(now)
            if fresh or kick:
                self.last_fresh = now
            return Decision(DIRECT, None, env.peer.endpoint, fresh or kick,
                            self._report(now, env, DIRECT), (), DIRECT, kick)
        relay = pair_relay(env.own, env.peer, env.relays)
        fresh = False
        if self.mode == RELAYED:
            if relay is None:
                self._to_direct(now, proven=False)
            elif self._may_go_direct(now):
                self._to_direct(now, proven=True)
            elif relay != self.relay:
                self.relay, fresh = relay, True
        elif self.mode == DIRECT:
            if not self.proven:
                if relay is not None:
                    self.mode, self.relay, fresh = RELAYED, relay, True
            elif relay is not None and self._must_leave_direct(now):
                self.mode, self.relay, fresh = RELAYED, relay, True
                self.holddown_until = now + self.holddown
                self.holddown = min(self.holddown * 2, t.holddown_max)
                self.history.clear()
                self.outstanding = False
            else:
                if now - self.direct_since >= t.stable:
                    self.holddown = t.holddown
                if self.last_ack_address:
                    self.direct_address = self.last_ack_address
        else:   # first decision
            if relay is not None:
                self.mode, self.relay, fresh = RELAYED, relay, True
            else:
                self._to_direct(now, proven=False)
        if self.mode == RELAYED:
            endpoint = env.relays[self.relay]
            first = self.last_fresh == float("-inf")
            if fresh and env.device_endpoint == endpoint and env.handshake_age is not None \
                    and env.handshake_age < t.fresh_handshake:
                fresh = False    # the peer moved us here already (roaming): keep that session
            elif fresh and not first:
                # Both sides move at about the same time; if both re-created the peer, one
                # could drop the session the other's handshake just made. The decider
                # re-creates; the other waits for its handshake and is kicked only if
                # none comes.
                self.moved_at, self.kicks_left = now, t.kicks
                fresh = self.decider
            elif not fresh and self.moved_at is not None:
                shook = env.handshake_age is not None and now - env.handshake_age >= self.moved_at
                if shook or self.kicks_left <= 0:
                    self.moved_at = None
                elif now - self.moved_at >= t.kick_after:
                    fresh, self.moved_at = True, now
                    self.kicks_left -= 1
            if fresh:
                self.last_fresh = now
        else:
            self.moved_at = None
        kick = False
        if self.mode != RELAYED:
            endpoint = self.direct_address or env.peer.endpoint
            if self.moved and endpoint is not None:
                fresh, self.last_fresh = True, now
                self._watch(now)
            elif not fresh and endpoint is not None and self._kick_due(now, env):
                fresh = kick = True
                self.last_fresh = now
        else:
            self.watch_since = None
        self.moved = False
        interval = t.probe_direct if self.mode == DIRECT else t.probe_relayed
        targets: tuple[str, ...] = ()
        if now - self.last_probe >= interval:
            seen = []
            for address in (self.direct_address, self.reflexive, env.peer.endpoint):
                if address and address not in seen:
                    seen.append(address)
            targets = tuple(seen)
        return Decision(self.mode, self.relay if self.mode == RELAYED else None, endpoint, fresh,
                        self._report(now, env, self.mode), targets, self.mode, kick)

    def _watch(self, now: float) -> None:
        """A direct move re-created the peer now: watch for its handshake."""
        self.watch_since, self.watch_kicks = now, self.timing.moved_kicks

    def _kick_due(self, now: float, env: Env) -> bool:
        """True when the peer must be re-created again: no handshake came since a direct
        move re-created it, ``kick_moved`` (the decider; twice that the other side, so that
        two kicks do not cross) by a device read made that long after. Both ends'
        first initiations can cross (each consumes the other's, which drops its own), and
        WireGuard would retry only after its 5 s REKEY_TIMEOUT."""
        if self.watch_since is None:
            return False
        read_at = env.read_at if env.read_at is not None else now
        if env.handshake_age is not None and read_at - env.handshake_age >= self.watch_since:
            self.watch_since = None           # the handshake came
            return False
        wait = self.timing.kick_moved * (1.0 if self.decider else 2.0)
        if read_at - self.watch_since < wait:
            return False
        self.watch_kicks -= 1
        self.watch_since = now if self.watch_kicks > 0 else None
        return True

    def _may_go_direct(self, now: float) -> bool:
        if now < self.holddown_until or self._acks() < self.timing.up_acks \
                or not self.last_ack_address:
            return False
        return self.decider or self._recent_claim(now) == DIRECT

    def _must_leave_direct(self, now: float) -> bool:
        if self._misses_in_a_row() >= self.timing.down_misses:
            return True
        return not self.decider and self._recent_claim(now) == RELAYED \
            and self.peer_claim_at > self.direct_since

    def _to_direct(self, now: float, proven: bool) -> None:
        self.mode, self.relay, self.proven = DIRECT, None, proven
        self.direct_since = now
        if proven:
            self.direct_address = self.last_ack_address

    def _report(self, now: float, env: Env, mode: str) -> str:
        age = env.handshake_age
        if age is None:
            since = max(self.started, self.last_fresh)
            return DOWN if now - since > self.timing.grace else mode
        return DOWN if age > self.timing.handshake_dead else mode

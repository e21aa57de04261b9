"""The agent's relays and paths at work: binds, probes and decisions (I/O around the pure
RelayBook and PathMachine). The caller owns the loop: it calls ``receive_all`` when the
port socket is readable and ``tick`` on a timer and when the zone changed, and carries
out the changes ``take_changes`` hands it on the device.

A tick whose caller carries out only the endpoints (a reconcile: it adds new peers and
sets endpoints, but re-creates no peer) passes ``keep=True``: its changes of peers
already decided onto a relay stay owed, and the next ``take_changes`` hands them over.
Else such a tick swallowed a move onto another relay: the next tick no longer saw it as
a change, and the peer was not re-created there (the relay must see a handshake) until
the 2 s kick. Direct changes are not owed: the reconcile set their endpoint, which is
all WireGuard needs (a moved node handshakes itself; re-creating the peer here after
that handshake would only drop its session). A kick is owed (the reconcile does not
re-create the peer): a direct move that saw no handshake within 0.5 s, whose first
initiations crossed."""
from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from wire import relaymsg as rm, x25519
from wire.errors import InvalidInput

from .paths import RELAYED, Decision, Env, NodeView, PathMachine, Timing
from .portsocket import PortSocket
from .relaybook import RelayBook, RelayInfo

log = logging.getLogger(__name__)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _text(address: tuple[str, int]) -> str:
    return f"[{address[0]}]:{address[1]}" if ":" in address[0] else f"{address[0]}:{address[1]}"


@dataclass
class PeerLink:
    stats_age: float | None = None
    device_endpoint: str | None = None


class PathService:
    def __init__(self, private_key: str, zone: str, listen_port: int,
                 timing: Timing | None = None, port_socket: PortSocket | None = None) -> None:
        self.private = base64.b64decode(private_key)
        self.public = x25519.public_key(self.private)
        self.key = base64.b64encode(self.public).decode()
        self.zone = zone
        self.timing = timing or Timing()
        self.sock = port_socket or PortSocket(listen_port)
        self.book = RelayBook()
        self.machines: dict[str, PathMachine] = {}
        self.decisions: dict[str, Decision] = {}
        # The peers whose decision is RELAYED, kept by ``tick`` (which alone changes the
        # decisions): the agent asks at every turn of its follow loop.
        self.relayed: set[str] = set()
        self._relay_keys: dict[str, bytes] = {}
        self._pair_keys: dict[str, bytes] = {}
        self._by_relay_address: dict[tuple[str, int], str] = {}
        self.restarted: set[str] = set()       # relays that came back with a new boot id
        self._endpoints: dict[str, str | None] = {}   # each peer's advertised endpoint
        self._owed: dict[str, Decision] = {}  # changes decided, not yet taken by the caller

    # -- relays --------------------------------------------------------------------------

    def set_relays(self, relays: list[RelayInfo]) -> None:
        self.book.update(relays)
        self._by_relay_address = {_address(r.endpoint): r.id for r in relays}
        self._relay_keys = {r.id: rm.derived_key(rm.RELAY_CONTEXT, x25519.exchange(
            self.private, base64.b64decode(r.public_key))) for r in relays}

    def bind_due(self, now: float) -> None:
        in_use = {d.relay for d in self.decisions.values() if d.relay}
        for rid in self.book.due(now, in_use):
            txid = os.urandom(8)
            info = self.book.relays[rid].info
            data = rm.encode_bind(self._relay_keys[rid], rm.Bind(
                txid, int(time.time() * 1000), self.public, self.zone))
            try:
                self.sock.send(data, _address(info.endpoint))
            except OSError as exc:
                log.debug("bind to %s: %s", rid, exc)
            self.book.sent(rid, txid, now)

    # -- datagrams -------------------------------------------------------------------------

    def receive_all(self, now: float) -> None:
        while (item := self.sock.receive()) is not None:
            data, source = item
            try:
                message = rm.decode(data)
            except InvalidInput:
                continue
            if isinstance(message, (rm.BindOk, rm.BindRefused)):
                self._relay_answer(message, data, source, now)
            elif isinstance(message, (rm.Probe, rm.ProbeAck)):
                self._probe_message(message, data, source, now)

    def _relay_answer(self, message, data: bytes, source, now: float) -> None:
        rid = self._by_relay_address.get(source)
        if rid is None:
            return
        if isinstance(message, rm.BindRefused):
            log.warning("relay %s refused this node: %s", rid, message.reason)
            self.book.refused(rid, message.txid, message.reason)
        elif rm.mac_valid(self._relay_keys[rid], data):
            if self.book.answered(rid, message.txid, now, message.address, message.boot):
                self.restarted.add(rid)

    def _pair_key(self, peer: str) -> bytes:
        if peer not in self._pair_keys:
            self._pair_keys[peer] = rm.derived_key(rm.PATH_CONTEXT, x25519.exchange(
                self.private, base64.b64decode(peer)))
        return self._pair_keys[peer]

    def _probe_message(self, message, data: bytes, source, now: float) -> None:
        if message.receiver != self.public:
            return
        peer = base64.b64encode(message.sender).decode()
        machine = self.machines.get(peer)
        if machine is None or not rm.mac_valid(self._pair_key(peer), data):
            return
        if isinstance(message, rm.Probe):
            machine.probed(now, _text(source), message.claim)
            decision = self.decisions.get(peer)
            ack = rm.encode_probe_ack(self._pair_key(peer), rm.ProbeAck(
                message.txid, self.public, message.sender, source,
                decision.claim if decision else None))
            try:
                self.sock.send(ack, source)
            except OSError:
                pass
        else:
            machine.acked(now, _text(source), message.claim)

    # -- decisions ---------------------------------------------------------------------------

    def tick(self, now: float, own: NodeView, peers: dict[str, NodeView],
             links: dict[str, PeerLink], keep: bool = False,
             links_at: float | None = None) -> dict[str, Decision]:
        """Decide every peer's path; returns the decisions that changed the device's
        endpoint (or need a fresh peer). ``keep``: the caller will not carry them out;
        those of peers decided before stay owed (``take_changes``). ``links_at``: when
        ``links`` were read from the device (None: now)."""
        for gone in set(self.machines) - set(peers):
            self._forget(gone)
        changes = self._step(now, own, peers, links, keep, links_at)
        self.restarted.clear()
        return changes

    def tick_some(self, now: float, own: NodeView, peers: dict[str, NodeView],
                  gone: Iterable[str], links: dict[str, PeerLink],
                  links_at: float | None = None) -> None:
        """``tick(keep=True)`` for the peers a zone update touched, whose changes the caller
        carries out itself (a reconcile): ``peers`` (those in the zone) are decided now,
        ``gone`` forgotten. The other peers keep their decisions until the next ``tick``,
        which alone hands changes over (and marks the peers of a restarted relay fresh).
        Each peer's decision depends on that peer, this node and the relays only, so the
        touched peers are decided as a tick over every peer would."""
        for key in gone:
            self._forget(key)
        self._step(now, own, peers, links, True, links_at)

    def _forget(self, key: str) -> None:
        self.machines.pop(key, None)
        self.decisions.pop(key, None)
        self.relayed.discard(key)
        self._endpoints.pop(key, None)
        self._owed.pop(key, None)

    def _step(self, now: float, own: NodeView, peers: dict[str, NodeView],
              links: dict[str, PeerLink], keep: bool, links_at: float | None
              ) -> dict[str, Decision]:
        relays = self.book.alive()
        own = NodeView(own.key, own.endpoint, own.nat_type, own.relay or self.book.home)
        changes: dict[str, Decision] = {}
        for key, peer in peers.items():
            machine = self.machines.get(key)
            if machine is None:
                machine = self.machines[key] = PathMachine(self.key, key, self.timing)
            elif self._endpoints.get(key) != peer.endpoint and peer.endpoint is not None:
                machine.peer_moved()
            self._endpoints[key] = peer.endpoint
            link = links.get(key, PeerLink())
            decision = machine.step(now, Env(own, peer, relays, link.stats_age,
                                             link.device_endpoint, links_at))
            if decision.relay in self.restarted:
                decision = replace(decision, fresh=True)
            previous = self.decisions.get(key)
            self.decisions[key] = decision
            if decision.mode == RELAYED:
                self.relayed.add(key)
            else:
                self.relayed.discard(key)
            if decision.fresh or (decision.endpoint is not None and (
                    previous is None or previous.endpoint != decision.endpoint)):
                changes[key] = decision
                if keep and previous is not None and (decision.mode == RELAYED or decision.kick):
                    self._owe(key, decision)
            for target in decision.probe_to:
                self._send_probe(key, target, decision.claim)
            if decision.probe_to:
                machine.probe_sent(now)
        return changes

    def watching(self) -> bool:
        """A peer re-created by a direct move still waits for its handshake (the caller
        reads the device's handshake times more often meanwhile)."""
        return any(m.watch_since is not None for m in self.machines.values())

    def _owe(self, key: str, decision: Decision) -> None:
        """The latest change is owed; a re-creation owed before stays one."""
        owed = self._owed.get(key)
        if owed is not None and owed.fresh and not decision.fresh:
            decision = replace(decision, fresh=True)
        self._owed[key] = decision

    def take_changes(self, changes: dict[str, Decision]) -> dict[str, Decision]:
        """``changes`` (a tick's, to be carried out now) with those owed by ticks with
        ``keep`` since the last call."""
        for key, decision in changes.items():
            self._owe(key, decision)
        owed, self._owed = self._owed, {}
        return owed

    def give_back(self, changes: dict[str, Decision]) -> None:
        """Changes taken but not carried out (the device refused): owed again, unless a
        later tick already owes a newer change for the peer."""
        for key, decision in changes.items():
            if key in self.machines and key not in self._owed:
                self._owed[key] = decision

    def _send_probe(self, peer: str, target: str, claim: str | None) -> None:
        data = rm.encode_probe(self._pair_key(peer), rm.Probe(
            os.urandom(8), self.public, base64.b64decode(peer), claim))
        try:
            self.sock.send(data, _address(target))
        except (OSError, ValueError) as exc:
            log.debug("probe to %s: %s", target, exc)

    def endpoints(self, keys: Iterable[str] | None = None) -> dict[str, str | None]:
        """The endpoint chosen for each peer (None: leave the device's); of ``keys`` only
        (those decided), given them."""
        if keys is None:
            return {k: d.endpoint for k, d in self.decisions.items()}
        decisions = self.decisions
        return {k: decisions[k].endpoint for k in keys if k in decisions}

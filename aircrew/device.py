"""The WireGuard device interface, shared by every backend.

A backend turns each call below into exactly one device operation (one UAPI ``set``
transaction or one netlink message), so the reconcile diff maps 1:1 onto operations.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

DEFAULT_KEEPALIVE = 25


@dataclass(frozen=True)
class PeerConfig:
    """What we want a peer to look like on the device."""
    public_key: str
    endpoint: str | None            # "ip:port" or "[ipv6]:port", None when unknown
    allowed_ips: tuple[str, ...]    # canonical CIDRs, sorted
    keepalive: int = DEFAULT_KEEPALIVE


@dataclass(frozen=True)
class PeerStats:
    """Runtime counters the device reports for a peer."""
    last_handshake: float = 0.0     # unix time, 0 when never
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass
class DeviceState:
    """What the device holds now."""
    public_key: str | None = None
    listen_port: int | None = None
    peers: dict[str, PeerConfig] = field(default_factory=dict)
    stats: dict[str, PeerStats] = field(default_factory=dict)


class Device(ABC):
    """One WireGuard interface. ``operations`` counts device operations issued."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.operations = 0

    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def create(self) -> None:
        """Create the interface (no-op when it exists); never touches existing peers."""

    @abstractmethod
    def destroy(self) -> None:
        """Remove the interface (``aircrew down`` only)."""

    @abstractmethod
    def read(self) -> DeviceState: ...

    @abstractmethod
    def set_identity(self, private_key: str, listen_port: int) -> None:
        """Set private key and listen port in one operation."""

    @abstractmethod
    def upsert_peer(self, peer: PeerConfig) -> None:
        """Add or update one peer: allowed IPs (replaced), keepalive, and the endpoint
        unless ``peer.endpoint`` is None (then the device keeps the one it has)."""

    @abstractmethod
    def remove_peer(self, public_key: str) -> None: ...

    def reset_peer(self, peer: PeerConfig) -> None:
        """Replace a peer with a fresh one: its sessions are dropped, so WireGuard
        handshakes with it at once (a moved peer, a path onto a relay). Backends that can
        do it in one operation override this."""
        self.remove_peer(peer.public_key)
        self.upsert_peer(peer)


class RecordingDevice(Device):
    """An in-memory device that records its operations (unit tests, benchmarks).

    ``keep_log=False`` only counts them: thousands of simulated agents applying millions
    of changes would otherwise keep millions of log entries for Python's GC to walk."""

    def __init__(self, name: str = "wg0", keep_log: bool = True) -> None:
        super().__init__(name)
        self.state = DeviceState()
        self.created = False
        self.log: list[tuple[str, str]] = []
        self._record = self.log.append if keep_log else _ignore

    def exists(self) -> bool:
        return self.created

    def create(self) -> None:
        self.created = True

    def destroy(self) -> None:
        self.created = False
        self.state = DeviceState()

    def read(self) -> DeviceState:
        return DeviceState(self.state.public_key, self.state.listen_port,
                           dict(self.state.peers), dict(self.state.stats))

    def set_identity(self, private_key: str, listen_port: int) -> None:
        from wire.proof import public_key_of
        self.operations += 1
        self._record(("set_identity", str(listen_port)))
        self.state.public_key = public_key_of(private_key)
        self.state.listen_port = listen_port

    def upsert_peer(self, peer: PeerConfig) -> None:
        self.operations += 1
        self._record(("upsert_peer", peer.public_key))
        have = self.state.peers.get(peer.public_key)
        if peer.endpoint is None and have is not None:
            peer = PeerConfig(peer.public_key, have.endpoint, peer.allowed_ips, peer.keepalive)
        self.state.peers[peer.public_key] = peer

    def remove_peer(self, public_key: str) -> None:
        self.operations += 1
        self._record(("remove_peer", public_key))
        self.state.peers.pop(public_key, None)

    def reset_peer(self, peer: PeerConfig) -> None:
        self.operations += 1
        self._record(("reset_peer", peer.public_key))
        self.state.peers[peer.public_key] = peer
        self.state.stats.pop(peer.public_key, None)


def _ignore(_entry: tuple[str, str]) -> None:
    pass

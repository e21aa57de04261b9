"""Pure codecs for the fields every WireGuard backend and config file shares.

Keys travel as base64 (our API, wg-quick files, netlink via pyroute2) or as hex (the
cross-platform UAPI). Endpoints are ``ip:port`` or ``[ipv6]:port`` with a literal
address (the device never resolves names). Allowed IPs are canonical CIDRs (host bits
cleared, IPv6 compressed), sorted as strings, which is the form ``PeerConfig`` holds.
``PeerReading`` collects a peer as a backend reads it back.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from wire.errors import InvalidInput
from wire.messages import format_endpoint
from wire.proof import decode_key, encode_key

from .device import PeerConfig, PeerStats

# Linux accepts up to 15 bytes (IFNAMSIZ - 1); we accept a portable subset.
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")


def validate_ifname(name: str) -> str:
    """Return ``name`` if it is a usable interface name, else raise InvalidInput."""
    if not isinstance(name, str) or not _IFNAME.fullmatch(name):
        raise InvalidInput(
            f"interface name {name!r} is invalid (1-15 characters: letters, digits, '_', '.', '-')")
    return name


def key_to_hex(key: str, what: str = "key") -> str:
    """Base64 WireGuard key -> 64 lowercase hex digits (UAPI form)."""
    return decode_key(key, what).hex()


def key_from_hex(text: str, what: str = "key") -> str:
    """64 hex digits (UAPI form) -> base64 WireGuard key."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise InvalidInput(f"{what} is not hex") from None
    if len(raw) != 32:
        raise InvalidInput(f"{what} does not decode to 32 bytes")
    return encode_key(raw)


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``"192.0.2.1:51820"`` or ``"[2001:db8::1]:51820"`` -> (address, port)."""
    if not isinstance(endpoint, str):
        raise InvalidInput("endpoint must be a string")
    host, sep, port_text = endpoint.rpartition(":")
    if not sep:
        raise InvalidInput(f"endpoint {endpoint!r} has no port (ip:port or [ipv6]:port)")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidInput(f"endpoint {endpoint!r} does not start with an IP address") from None
    if address.version == 6 and not bracketed:
        raise InvalidInput(f"endpoint {endpoint!r}: write an IPv6 endpoint as [address]:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidInput(f"endpoint {endpoint!r} has an invalid port")
    return str(address), int(port_text)


def canonical_endpoint(endpoint: str) -> str:
    return format_endpoint(*parse_endpoint(endpoint))


def canonical_cidr(text: str, strict: bool = False) -> str:
    """One CIDR in canonical form; a bare address becomes a host prefix."""
    try:
        return ipaddress.ip_network(text.strip(), strict=strict).with_prefixlen
    except (ValueError, AttributeError, TypeError):
        raise InvalidInput(f"{text!r} is not a valid CIDR") from None


def canonical_allowed_ips(items: Iterable[str]) -> tuple[str, ...]:
    """Canonical, de-duplicated, sorted allowed IPs (the form PeerConfig holds)."""
    return tuple(sorted({canonical_cidr(item) for item in items}))


def validate_port(port: int, what: str = "listen port") -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidInput(f"{what} must be an integer from 0 to 65535")
    return port


def validate_keepalive(seconds: int) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= 65535:
        raise InvalidInput("persistent keepalive must be an integer from 0 to 65535 seconds")
    return seconds


@dataclass
class PeerReading:
    """A peer as a backend reads it, field by field; yields PeerConfig and PeerStats."""

    public_key: str
    endpoint: str | None = None
    keepalive: int = 0
    allowed_ips: list[str] = field(default_factory=list)
    handshake_sec: int = 0
    handshake_nsec: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0

    def config(self) -> PeerConfig:
        return PeerConfig(self.public_key, self.endpoint,
                          canonical_allowed_ips(self.allowed_ips), self.keepalive)

    def stats(self) -> PeerStats:
        last = self.handshake_sec + self.handshake_nsec / 1e9 if self.handshake_sec else 0.0
        return PeerStats(last, self.rx_bytes, self.tx_bytes)

"""wg-quick compatible configuration files: render, parse, and write them safely.

Pure. The rendered file holds the private key: write it with
``wire.secretfile.write_secret`` (mode 0600 from creation) and never log its text.

Parsing follows wg(8)/wg-quick(8): section and key names are case-insensitive, ``#``
starts a comment, list values are comma separated and may repeat (``AllowedIPs`` lines
accumulate). wg-quick keys we do not model (DNS, MTU, Table, PostUp, ...) are ignored.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from wire.errors import InvalidInput
from wire.proof import decode_key

from .device import PeerConfig
from .wgfields import canonical_allowed_ips, validate_keepalive, validate_port

__all__ = ["WgQuickConfig", "render", "parse"]

log = logging.getLogger(__name__)

_HEADER = "# Written by aircrew; wg-quick compatible. Holds a private key: keep it 0600.\n"


@dataclass(frozen=True)
class WgQuickConfig:
    """The ``[Interface]`` and ``[Peer]`` sections we write."""
    private_key: str
    listen_port: int | None = None
    addresses: tuple[str, ...] = ()          # "10.140.0.5/16"
    peers: tuple[PeerConfig, ...] = field(default_factory=tuple)


def render(config: WgQuickConfig) -> str:
    """The file text (peers in the given order, allowed IPs canonical and sorted)."""
    decode_key(config.private_key, "private key")
    lines = [_HEADER.rstrip("\n"), "[Interface]", f"PrivateKey = {config.private_key}"]
    if config.listen_port is not None:
        lines.append(f"ListenPort = {validate_port(config.listen_port)}")
    if config.addresses:
        lines.append(f"Address = {', '.join(_canonical_interface(a) for a in config.addresses)}")
    for peer in config.peers:
        decode_key(peer.public_key, "peer public key")
        lines += ["", "[Peer]", f"PublicKey = {peer.public_key}"]
        if peer.endpoint:
            lines.append(f"Endpoint = {_single_line(peer.endpoint, 'endpoint')}")
        if peer.allowed_ips:
            lines.append(f"AllowedIPs = {', '.join(canonical_allowed_ips(peer.allowed_ips))}")
        if validate_keepalive(peer.keepalive):
            lines.append(f"PersistentKeepalive = {peer.keepalive}")
    return "\n".join(lines) + "\n"


def parse(text: str) -> WgQuickConfig:
    """Parse a wg-quick file; raises InvalidInput naming the line on any error."""
    interface: dict[str, list[str]] | None = None
    peers: list[dict[str, list[str]]] = []
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1].strip().lower()
            if name == "interface":
                if interface is not None:
                    raise InvalidInput(f"line {number}: a second [Interface] section")
                section = interface = {}
            elif name == "peer":
                section = {}
                peers.append(section)
            else:
                raise InvalidInput(f"line {number}: unknown section [{line[1:-1].strip()}]")
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise InvalidInput(f"line {number}: expected 'Key = value'")
        if section is None:
            raise InvalidInput(f"line {number}: a key outside any section")
        section.setdefault(key.strip().lower(), []).append(value.strip())
    if interface is None:
        raise InvalidInput("no [Interface] section")
    return WgQuickConfig(
        private_key=_key(_one(interface, "privatekey", "[Interface]"), "PrivateKey"),
        listen_port=_port(interface),
        addresses=tuple(_canonical_interface(a) for a in _list(interface, "address")),
        peers=tuple(_peer(p) for p in peers),
    )


def _peer(section: dict[str, list[str]]) -> PeerConfig:
    endpoints = section.get("endpoint")
    endpoint = endpoints[-1] if endpoints and endpoints[-1] else None
    return PeerConfig(
        public_key=_key(_one(section, "publickey", "[Peer]"), "PublicKey"),
        endpoint=endpoint,
        allowed_ips=canonical_allowed_ips(_list(section, "allowedips")),
        keepalive=_keepalive(section.get("persistentkeepalive", ["0"])[-1]),
    )


def _one(section: dict[str, list[str]], key: str, where: str) -> str:
    values = section.get(key)
    if not values:
        raise InvalidInput(f"{where} has no {key}")
    if len(values) > 1:
        raise InvalidInput(f"{where} has more than one {key}")
    return values[0]


def _list(section: dict[str, list[str]], key: str) -> list[str]:
    return [item.strip() for value in section.get(key, []) for item in value.split(",")
            if item.strip()]


def _key(value: str, what: str) -> str:
    decode_key(value, what)
    return value


def _port(section: dict[str, list[str]]) -> int | None:
    values = section.get("listenport")
    if not values:
        return None
    if not values[-1].isdigit():
        raise InvalidInput("ListenPort is not a number")
    return validate_port(int(values[-1]))


def _keepalive(value: str) -> int:
    if value.lower() == "off":
        return 0
    if not value.isdigit():
        raise InvalidInput("PersistentKeepalive is not a number")
    return validate_keepalive(int(value))


def _canonical_interface(text: str) -> str:
    try:
        return str(ipaddress.ip_interface(text.strip()))
    except ValueError:
        raise InvalidInput(f"{text!r} is not an interface address (ip/prefix)") from None


def _single_line(value: str, what: str) -> str:
    if any(c in value for c in "\n\r#"):
        raise InvalidInput(f"{what} contains a line break or '#'")
    return value.strip()

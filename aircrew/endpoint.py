"""Where peers should send to: the endpoint a node advertises, and its NAT type."""
from __future__ import annotations

import ipaddress
import logging
import socket

from wire.messages import NAT_STATIC, NAT_SYMMETRIC, NAT_UNKNOWN, format_endpoint

log = logging.getLogger(__name__)


class StaticEndpoint:
    """``--local-endpoint-ip``: a fixed address with the listen port."""

    def __init__(self, ip: str, port: int) -> None:
        self.endpoint = format_endpoint(ipaddress.ip_address(ip), port)

    def discover(self, port_in_use: bool) -> tuple[str | None, str | None]:
        return self.endpoint, NAT_STATIC


class HostAddressEndpoint:
    """``--internal-network``: the host's own primary address (the source of its route
    towards the controller) with the listen port."""

    def __init__(self, toward: str, port: int) -> None:
        self.toward = toward
        self.port = port

    def discover(self, port_in_use: bool) -> tuple[str | None, str | None]:
        try:
            info = socket.getaddrinfo(self.toward, 9, type=socket.SOCK_DGRAM)[0]
            with socket.socket(info[0], socket.SOCK_DGRAM) as s:
                s.connect(info[4])  # no packet is sent: this only picks a route
                ip = ipaddress.ip_address(s.getsockname()[0])
        except OSError as exc:
            log.warning("cannot find the host's primary address: %s", exc)
            return None, None
        return format_endpoint(ip, self.port), NAT_STATIC


class StunEndpoint:
    """Default: STUN from the WireGuard listen port itself, so the advertised endpoint is
    the NAT mapping of that very port. Before wireguard-go holds the port a normal socket
    is used; afterwards the request goes out through a raw socket with that source port."""

    def __init__(self, servers: list[tuple[str, int]], port: int) -> None:
        self.servers = servers
        self.port = port

    def discover(self, port_in_use: bool) -> tuple[str | None, str | None]:
        from . import stun_client
        try:
            found = stun_client.discover(self.servers, self.port, raw=port_in_use)
        except Exception as exc:  # noqa: BLE001 - discovery failing must not stop the agent
            log.warning("STUN discovery failed: %s; peers will learn this node's endpoint "
                        "when it contacts them", exc)
            return None, NAT_UNKNOWN
        if found.endpoint is None:
            log.warning("no STUN server answered (%s); peers will learn this node's endpoint "
                        "when it contacts them", "; ".join(f"{k}: {v}" for k, v in found.errors.items()))
            return None, NAT_UNKNOWN
        if found.nat_type == NAT_SYMMETRIC:
            log.warning("symmetric NAT: every destination sees a different port, so peers "
                        "cannot reach this node first; it reaches them (keepalive keeps the "
                        "path open), but two nodes both behind symmetric NATs cannot connect")
        return found.endpoint, found.nat_type

"""Pure CIDR arithmetic for zones: host offsets, ranges, overlap checks."""
from __future__ import annotations

import ipaddress
from typing import Iterable

from wire import addresses
from wire.messages import brief
from wire.errors import InvalidInput

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A zone hands out at most this many host addresses (IPv6 /64s are effectively unbounded).
MAX_POOL = 2**31
MIN_PREFIX_HOSTS = 4


def zone_network(cidr: Network) -> Network:
    """Check that a network can be a zone: unicast space a mesh can use
    (``wire.addresses``), at least 2 usable addresses."""
    addresses.usable_cidr(cidr, "zone CIDR")
    if cidr.num_addresses < MIN_PREFIX_HOSTS:
        raise InvalidInput(f"zone CIDR {cidr} is too small: it needs at least 2 usable addresses")
    return cidr


def pool_size(cidr: Network) -> int:
    """Usable host offsets are 1..pool_size (network and broadcast excluded)."""
    return min(cidr.num_addresses - 2, MAX_POOL)


def address_at(cidr: Network, offset: int) -> str:
    if not 1 <= offset <= pool_size(cidr):
        raise ValueError(f"offset {offset} outside the pool of {cidr}")
    return str(cidr.network_address + offset)


def host_address(cidr: Network, address: str) -> str:
    """Validate an address requested inside a zone; returns its canonical text."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise InvalidInput(f"{brief(address)} is not an IP address") from None
    if ip.version != cidr.version or ip not in cidr:
        raise InvalidInput(f"{ip} is not inside the zone's CIDR {cidr}")
    offset = int(ip) - int(cidr.network_address)
    if offset == 0:
        raise InvalidInput(f"{ip} is the network address of {cidr}")
    if offset == cidr.num_addresses - 1:
        raise InvalidInput(f"{ip} is the broadcast address of {cidr}")
    if offset > MAX_POOL:
        raise InvalidInput(f"{ip} is beyond the first {MAX_POOL} addresses of {cidr}")
    return str(ip)


def span(net: Network) -> tuple[str, str]:
    """First and last address as fixed-width hex, comparable as strings (IPv4 and IPv6)."""
    width = 32
    first = int(net.network_address) + (0 if net.version == 6 else 2**128)
    last = int(net.broadcast_address) + (0 if net.version == 6 else 2**128)
    # IPv4 lives above the IPv6 range (an extra leading bit) so families never overlap.
    return f"{first:0{width + 1}x}", f"{last:0{width + 1}x}"


def unicast_prefix(net: Network) -> Network:
    """Refuse a prefix that is, or holds, space that is not routable unicast
    (``wire.addresses``): default routes (and their halves and quarters: 64.0.0.0/2
    holds loopback, 192.0.0.0/2 multicast, 128.0.0.0/2 link-local), loopback,
    link-local, multicast, reserved."""
    if net.prefixlen == 0:
        raise InvalidInput(f"{net} is a default route, not a child prefix")
    return addresses.usable_cidr(net, "child prefix")


def within(net: Network, ranges: Iterable[Network]) -> bool:
    """Whether ``net`` lies inside one of ``ranges``."""
    return any(net.version == r.version and net.subnet_of(r) for r in ranges)


def child_prefixes(zone: Network, prefixes: Iterable[str]) -> list[Network]:
    """Validate a node's child prefixes against its zone and each other."""
    nets: list[Network] = []
    for text in prefixes:
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError:
            raise InvalidInput(f"child prefix {brief(text)} is not a network address in CIDR form") from None
        if net.version == zone.version and net.overlaps(zone):
            raise InvalidInput(f"child prefix {net} overlaps the zone's own CIDR {zone}")
        unicast_prefix(net)
        for other in nets:
            if net.overlaps(other):
                raise InvalidInput(f"child prefixes {other} and {net} overlap each other")
        nets.append(net)
    return sorted(nets, key=lambda n: (n.version, n))

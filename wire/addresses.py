"""Which IP addresses and ranges a mesh can use (pure; no I/O).

Zone CIDRs, advertised endpoints and child prefixes must be unicast space that a
WireGuard mesh can route: never the unspecified, loopback, link-local, multicast,
reserved or IPv4-mapped ranges. Private, shared (CGNAT), unique-local, global and
documentation ranges are usable.
"""
from __future__ import annotations

import ipaddress

from .errors import InvalidInput

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# (range, what it is); a CIDR overlapping one of them is refused.
SPECIAL: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(net), what) for net, what in (
        ("0.0.0.0/8", "'this network' addresses"),
        ("127.0.0.0/8", "loopback addresses"),
        ("169.254.0.0/16", "link-local addresses"),
        ("224.0.0.0/4", "multicast addresses"),
        ("240.0.0.0/4", "reserved and broadcast addresses"),
        ("::/128", "the unspecified address"),
        ("::1/128", "the loopback address"),
        ("::ffff:0:0/96", "IPv4-mapped addresses"),
        ("fe80::/10", "link-local addresses"),
        ("ff00::/8", "multicast addresses"),
    ))
SUGGESTION = ("use a private range such as 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, "
              "100.64.0.0/10 or fd00::/8")
# Endpoints may be loopback (every node on one host, in tests); nothing else special.
_ENDPOINT_OK = {ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")}


def special_range(net: Network) -> tuple[Network, str] | None:
    """The first special range ``net`` overlaps, or None."""
    for special, what in SPECIAL:
        if special.version == net.version and special.overlaps(net):
            return special, what
    return None


def usable_cidr(net: Network, what: str = "CIDR") -> Network:
    """``net`` if a mesh can use it, else InvalidInput naming the range it touches."""
    found = special_range(net)
    if found is not None:
        special, kind = found
        if net.subnet_of(special):
            raise InvalidInput(f"{what} {net} is made of {kind} ({special}): {SUGGESTION}")
        raise InvalidInput(f"{what} {net} contains {kind} ({special}): {SUGGESTION}")
    return net


def usable_endpoint_ip(ip: Address, what: str = "endpoint") -> Address:
    """An address other nodes can send WireGuard packets to (loopback allowed: every
    node on one host, as in tests); a scoped IPv6 address (``%eth0``) is refused."""
    if getattr(ip, "scope_id", None):
        raise InvalidInput(f"{what} {ip} carries a scope (%...): other nodes cannot use it")
    found = special_range(ipaddress.ip_network(ip))
    if found is not None and found[0] not in _ENDPOINT_OK:
        raise InvalidInput(f"{what} {ip} is one of the {found[1]} ({found[0]}); "
                           "other nodes cannot reach it there")
    return ip

"""NAT classification: what the answers of several STUN servers to one local port reveal
about the NAT in front of this node (the types are ``wire.messages.NAT_TYPES``)."""
from __future__ import annotations

import socket
from collections.abc import Callable, Sequence

from wire.errors import InvalidInput
from wire.messages import NAT_CONE, NAT_OPEN, NAT_SYMMETRIC, NAT_UNKNOWN

from .stun_transport import Address, family_of


def classify_nat(
    mappings: Sequence[Address],
    local_port: int | None,
    is_local: Callable[[str], bool],
) -> str:
    """The NAT type the answers of several servers reveal (pure).

    * ``open``: every server saw one mapping, whose IP is an address of this host and
      whose port is the local port (no NAT; decidable from a single answer);
    * ``symmetric``: servers saw different mappings (the NAT maps per destination, so
      peers cannot reuse what a STUN server saw);
    * ``cone``: at least two servers saw the same mapping;
    * ``unknown``: no answer, or a single answer that is not ``open``.
    """
    distinct = set(mappings)
    if not distinct:
        return NAT_UNKNOWN
    if len(distinct) > 1:
        return NAT_SYMMETRIC
    ((ip, port),) = distinct
    if local_port and port == local_port and is_local(ip):
        return NAT_OPEN
    return NAT_CONE if len(mappings) >= 2 else NAT_UNKNOWN


def is_local_address(ip: str) -> bool:
    """True when ``ip`` is an address of this host (a socket can bind to it).

    Hosts with ``net.ipv4.ip_nonlocal_bind=1`` make this answer True for any IPv4.
    """
    try:
        family = family_of(ip)
    except InvalidInput:
        return False
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((ip, 0))
        except OSError:
            return False
    return True

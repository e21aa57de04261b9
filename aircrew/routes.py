"""Address, MTU, state and routes of the mesh interface, through rtnetlink (aircrew.rtnl).

Ownership: every route we add carries the routing protocol number ``RTPROT_AIRCREW``
(0x59 = 89, unused by iproute2's ``rt_protos`` list: ``ip route show proto 0x59``
lists them). ``routes()`` reports, and ``remove_route()`` deletes, only routes with that
number on our interface in the main table; a route someone else added is never touched.
The address we set carries the same number as its address protocol (``IFA_PROTO``,
Linux >= 5.18), so ``set_address`` replaces our previous address and leaves others.
On older kernels the number is dropped silently; then only an address set by this
same ``LinkConfig`` object is recognised as ours.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from types import TracebackType
from typing import Any

from wire.errors import InvalidInput

from .device_errors import LinkError
from .rtnl import Netlink
from .wgfields import validate_ifname

__all__ = ["LinkConfig", "LinkError", "RTPROT_AIRCREW", "DEFAULT_MTU"]

log = logging.getLogger(__name__)

RTPROT_AIRCREW = 0x59
DEFAULT_MTU = 1420
MAIN_TABLE = 254

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class LinkConfig:
    """Configure one interface. Not thread-safe; ``close()`` (or ``with``) when done."""

    def __init__(self, ifname: str, mtu: int = DEFAULT_MTU) -> None:
        self.ifname = validate_ifname(ifname)
        self.mtu = _mtu(mtu)
        self._nl: Netlink | None = None
        self._ours: Interface | None = None

    def __enter__(self) -> "LinkConfig":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._nl is not None:
            self._nl.close()
            self._nl = None

    @property
    def nl(self) -> Netlink:
        if self._nl is None:
            self._nl = Netlink()
        return self._nl

    def index(self) -> int:
        """The interface index; LinkError when the interface does not exist."""
        try:
            return socket.if_nametoindex(self.ifname)
        except OSError:
            raise LinkError(f"interface {self.ifname} does not exist") from None

    # -- link --------------------------------------------------------------------------

    def up(self) -> None:
        """Set the MTU and bring the interface up (idempotent)."""
        self._netlink("bring the interface up", self.nl.link_up, self.index(), self.mtu)

    def set_mtu(self, mtu: int) -> None:
        mtu = _mtu(mtu)
        self._netlink(f"set MTU {mtu}", self.nl.set_mtu, self.index(), mtu)
        self.mtu = mtu

    # -- address -----------------------------------------------------------------------

    def addresses(self) -> set[str]:
        """Addresses on the interface that we set (``"10.140.0.5/16"``)."""
        return {str(iface) for iface, ours in self._addresses(self.index()) if ours}

    def set_address(self, address: str, prefix_len: int) -> None:
        """Make ``address/prefix_len`` our address: idempotent; replaces the address we
        set before, leaves addresses we did not set."""
        wanted = _interface(address, prefix_len)
        index = self.index()
        present = self._addresses(index)
        for iface, ours in present:
            if ours and iface != wanted:
                log.info("%s: replacing address %s", self.ifname, iface)
                self._netlink(f"remove address {iface}", self.nl.remove_address, index, iface)
        if any(iface == wanted for iface, _ in present):
            self._ours = wanted
            return
        self._netlink(f"add address {wanted}", self.nl.add_address, index, wanted,
                      RTPROT_AIRCREW)
        self._ours = wanted
        log.info("%s: address %s", self.ifname, wanted)

    def _addresses(self, index: int) -> list[tuple[Interface, bool]]:
        return [(a.interface, a.proto == RTPROT_AIRCREW or a.interface == self._ours)
                for a in self._netlink("list addresses", self.nl.addresses, index)]

    # -- routes ------------------------------------------------------------------------

    def routes(self) -> set[str]:
        """Prefixes routed via this interface by us (proto 0x59, main table)."""
        return {str(net) for net in self._our_routes(self.index())}

    def add_route(self, prefix: str) -> None:
        """Route ``prefix`` via the interface (idempotent). A route for the same prefix
        that we did not add is left alone and reported as a LinkError."""
        net = _network(prefix)
        index = self.index()
        try:
            self.nl.add_route(net, index, MAIN_TABLE, RTPROT_AIRCREW)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                if net in self._our_routes(index):
                    return
                raise LinkError(f"{self.ifname}: a route for {net} exists that aircrew did "
                                "not add; leaving it alone") from None
            raise _link_error(self.ifname, f"add route {net}", exc) from None
        log.info("%s: route %s added", self.ifname, net)

    def remove_route(self, prefix: str) -> None:
        """Remove our route for ``prefix`` (idempotent); other routes are never touched."""
        net = _network(prefix)
        index = self.index()
        if net not in self._our_routes(index):
            return
        try:
            self.nl.remove_route(net, index, MAIN_TABLE, RTPROT_AIRCREW)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                return
            raise _link_error(self.ifname, f"remove route {net}", exc) from None
        log.info("%s: route %s removed", self.ifname, net)

    def _our_routes(self, index: int) -> set[Network]:
        return {route.network for family in (socket.AF_INET, socket.AF_INET6)
                for route in self._netlink("list routes", self.nl.routes, family)
                if route.proto == RTPROT_AIRCREW and route.oif == index
                and route.table == MAIN_TABLE}

    def _netlink(self, what: str, func: Callable[..., Any], *args: Any) -> Any:
        """Run one netlink call; a refusal (OSError) becomes a LinkError."""
        try:
            return func(*args)
        except OSError as exc:
            raise _link_error(self.ifname, what, exc) from None


def _link_error(ifname: str, what: str, exc: OSError) -> LinkError:
    return LinkError(f"{ifname}: cannot {what}: {os.strerror(exc.errno or 0)}")


def _mtu(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 576 <= value <= 65535:
        raise InvalidInput("MTU must be an integer from 576 to 65535")
    return value


def _interface(address: str, prefix_len: int) -> Interface:
    if isinstance(prefix_len, bool) or not isinstance(prefix_len, int):
        raise InvalidInput("prefix length must be an integer")
    if not isinstance(address, str) or "/" in address:
        raise InvalidInput("give the address as a string without a prefix length")
    try:
        return ipaddress.ip_interface(f"{address}/{prefix_len}")
    except ValueError:
        raise InvalidInput(f"{address}/{prefix_len} is not a valid interface address") from None


def _network(prefix: str) -> Network:
    try:
        return ipaddress.ip_network(prefix, strict=True)
    except (ValueError, TypeError):
        raise InvalidInput(f"{prefix!r} is not a network prefix (host bits must be zero)") from None

"""Address, MTU, state and routes of the mesh interface, through rtnetlink (pyroute2).

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

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from wire.errors import InvalidInput

from .device_errors import LinkError
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
        self._ipr: IPRoute | None = None
        self._ours: Interface | None = None

    def __enter__(self) -> "LinkConfig":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = IPRoute()
        return self._ipr

    def index(self) -> int:
        """The interface index; LinkError when the interface does not exist."""
        found = self._netlink("look up the interface", self.ipr.link_lookup, ifname=self.ifname)
        if not found:
            raise LinkError(f"interface {self.ifname} does not exist")
        return int(found[0])

    # -- link --------------------------------------------------------------------------

    def up(self) -> None:
        """Set the MTU and bring the interface up (idempotent)."""
        self._netlink("bring the interface up", self.ipr.link, "set", index=self.index(),
                      mtu=self.mtu, state="up")

    def set_mtu(self, mtu: int) -> None:
        mtu = _mtu(mtu)
        self._netlink(f"set MTU {mtu}", self.ipr.link, "set", index=self.index(), mtu=mtu)
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
                self._netlink(f"remove address {iface}", self.ipr.addr, "del", index=index,
                              address=str(iface.ip), prefixlen=iface.network.prefixlen)
        if any(iface == wanted for iface, _ in present):
            self._ours = wanted
            return
        self._netlink(f"add address {wanted}", self.ipr.addr, "add", index=index,
                      address=str(wanted.ip), prefixlen=wanted.network.prefixlen,
                      proto=RTPROT_AIRCREW)
        self._ours = wanted
        log.info("%s: address %s", self.ifname, wanted)

    def _addresses(self, index: int) -> list[tuple[Interface, bool]]:
        found = []
        for msg in self._netlink("list addresses", lambda: list(self.ipr.get_addr(index=index))):
            text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if text is None:
                continue
            iface = ipaddress.ip_interface(f"{text}/{msg['prefixlen']}")
            ours = msg.get_attr("IFA_PROTO") == RTPROT_AIRCREW or iface == self._ours
            found.append((iface, ours))
        return found

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
            self.ipr.route("add", dst=str(net), oif=index, proto=RTPROT_AIRCREW,
                           table=MAIN_TABLE, family=_family(net))
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
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
            self.ipr.route("del", dst=str(net), oif=index, proto=RTPROT_AIRCREW,
                           table=MAIN_TABLE, family=_family(net))
        except NetlinkError as exc:
            if exc.code == errno.ESRCH:
                return
            raise _link_error(self.ifname, f"remove route {net}", exc) from None
        log.info("%s: route %s removed", self.ifname, net)

    def _our_routes(self, index: int) -> set[Network]:
        found: set[Network] = set()
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in self._netlink("list routes", self._dump_routes, family):
                if (msg["proto"] != RTPROT_AIRCREW or msg.get_attr("RTA_OIF") != index
                        or (msg.get_attr("RTA_TABLE") or msg["table"]) != MAIN_TABLE):
                    continue
                dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET
                                                  else "::")
                found.add(ipaddress.ip_network(f"{dst}/{msg['dst_len']}"))
        return found

    def _dump_routes(self, family: int) -> list[Any]:
        return list(self.ipr.get_routes(family=family, table=MAIN_TABLE))

    def _netlink(self, what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one pyroute2 call (materialise dumps inside it); NetlinkError -> LinkError."""
        try:
            return func(*args, **kwargs)
        except NetlinkError as exc:
            raise _link_error(self.ifname, what, exc) from None


def _link_error(ifname: str, what: str, exc: NetlinkError) -> LinkError:
    return LinkError(f"{ifname}: cannot {what}: {os.strerror(exc.code)}")


def _mtu(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 576 <= value <= 65535:
        raise InvalidInput("MTU must be an integer from 576 to 65535")
    return value


def _family(net: Network) -> int:
    return socket.AF_INET if net.version == 4 else socket.AF_INET6


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

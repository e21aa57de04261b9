"""A small rtnetlink client on the standard library (the agent's link, address and routes).

Only what the agent needs: set a link's MTU, bring it up or delete it; dump, add and
delete addresses and routes; ask whether a generic-netlink family exists. Requests are acknowledged (NLM_F_ACK); a refusal raises OSError
with the kernel's errno. No pyroute2: it costs the agent about 10 MB resident.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_ROUTE = 0
NETLINK_GENERIC = 16

NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3

RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26

IFF_UP = 0x1
IFLA_MTU = 4
IFA_ADDRESS, IFA_LOCAL, IFA_PROTO = 1, 2, 11
RTA_DST, RTA_OIF, RTA_TABLE = 1, 4, 15
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0

GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_NAME = 0x10, 3, 2

_HEADER = struct.Struct("=IHHII")          # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")         # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")          # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")       # rtmsg: family, dst_len, src_len, tos, table,
                                           #        protocol, scope, type, flags
_ATTR = struct.Struct("=HH")               # rtattr: len, type


@dataclass(frozen=True)
class Address:
    index: int
    interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    proto: int | None


@dataclass(frozen=True)
class Route:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    oif: int | None
    table: int
    proto: int


def attr(kind: int, value: bytes) -> bytes:
    body = _ATTR.pack(_ATTR.size + len(value), kind) + value
    return body + b"\0" * (-len(body) % 4)


def attrs(data: bytes) -> dict[int, bytes]:
    """The attributes of a message body ({type: value}; nested flags masked off)."""
    out = {}
    offset = 0
    while offset + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            break
        out[kind & 0x3FFF] = data[offset + _ATTR.size:offset + length]
        offset += (length + 3) & ~3
    return out


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, sequence number, body) of each message in one datagram."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _flags, seq, _pid = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            break
        yield kind, seq, data[offset + _HEADER.size:offset + length]
        offset += (length + 3) & ~3


class Netlink:
    """One netlink socket; requests are answered in order. ``close()`` when done."""

    def __init__(self, protocol: int = NETLINK_ROUTE) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self.seq += 1
        self.sock.send(_HEADER.pack(_HEADER.size + len(body), kind, flags, self.seq, 0) + body)
        return self.seq

    def request(self, kind: int, body: bytes, flags: int = 0) -> list[bytes]:
        """Send one request and wait for its answer; the bodies of its replies
        (OSError with the kernel's errno when it refused)."""
        seq = self._send(kind, NLM_F_REQUEST | NLM_F_ACK | flags, body)
        replies = []
        while True:            # a dump ends with DONE, anything else with its ACK
            for reply_kind, reply_seq, reply in messages(self.sock.recv(1 << 16)):
                if reply_seq != seq:
                    continue          # the rest of an earlier request that failed midway
                if reply_kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", reply)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return replies
                if reply_kind == NLMSG_DONE:
                    return replies
                replies.append(reply)

    def dump(self, kind: int, body: bytes) -> list[bytes]:
        return self.request(kind, body, NLM_F_DUMP)

    # -- link ------------------------------------------------------------------------

    def link_up(self, index: int, mtu: int) -> None:
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
        self.request(RTM_NEWLINK, body + attr(IFLA_MTU, struct.pack("=I", mtu)))

    def set_mtu(self, index: int, mtu: int) -> None:
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0)
        self.request(RTM_NEWLINK, body + attr(IFLA_MTU, struct.pack("=I", mtu)))

    def delete_link(self, index: int) -> None:
        self.request(RTM_DELLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0))

    # -- addresses ---------------------------------------------------------------------

    def addresses(self, index: int) -> list[Address]:
        found = []
        for body in self.dump(RTM_GETADDR, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            _family, prefix_len, _flags, _scope, owner = _IFADDR.unpack_from(body)
            if owner != index:
                continue
            fields = attrs(body[_IFADDR.size:])
            raw = fields.get(IFA_LOCAL) or fields.get(IFA_ADDRESS)
            if raw is None:
                continue
            proto = fields.get(IFA_PROTO)
            found.append(Address(owner, ipaddress.ip_interface(
                (ipaddress.ip_address(raw), prefix_len)), proto[0] if proto else None))
        return found

    def add_address(self, index: int, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                    proto: int) -> None:
        self.request(RTM_NEWADDR, _address_body(index, iface) + attr(IFA_PROTO, bytes([proto])),
                     NLM_F_CREATE | NLM_F_EXCL)

    def remove_address(self, index: int,
                       iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
        self.request(RTM_DELADDR, _address_body(index, iface))

    # -- routes ------------------------------------------------------------------------

    def routes(self, family: int) -> list[Route]:
        found = []
        for body in self.dump(RTM_GETROUTE, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)):
            fam, dst_len, _src, _tos, table, proto, _scope, _type, _flags = _RTMSG.unpack_from(body)
            fields = attrs(body[_RTMSG.size:])
            if RTA_TABLE in fields:
                table = struct.unpack("=I", fields[RTA_TABLE])[0]
            oif = struct.unpack("=I", fields[RTA_OIF])[0] if RTA_OIF in fields else None
            dst = fields.get(RTA_DST) or bytes(4 if fam == socket.AF_INET else 16)
            found.append(Route(ipaddress.ip_network((ipaddress.ip_address(dst), dst_len)),
                               oif, table, proto))
        return found

    def add_route(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network, oif: int,
                  table: int, proto: int) -> None:
        self.request(RTM_NEWROUTE, _route_body(network, oif, table, proto),
                     NLM_F_CREATE | NLM_F_EXCL)

    def remove_route(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network, oif: int,
                     table: int, proto: int) -> None:
        self.request(RTM_DELROUTE, _route_body(network, oif, table, proto))


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _address_body(index: int, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> bytes:
    packed = iface.ip.packed
    body = _IFADDR.pack(_family(iface.version), iface.network.prefixlen, 0, 0, index)
    if iface.version == 4:
        body += attr(IFA_LOCAL, packed)
    return body + attr(IFA_ADDRESS, packed)


def _route_body(network: ipaddress.IPv4Network | ipaddress.IPv6Network, oif: int, table: int,
                proto: int) -> bytes:
    body = _RTMSG.pack(_family(network.version), network.prefixlen, 0, 0,
                       table if table < 256 else 0, proto, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    return (body + attr(RTA_DST, network.network_address.packed)
            + attr(RTA_OIF, struct.pack("=I", oif)) + attr(RTA_TABLE, struct.pack("=I", table)))


def genl_family_exists(name: str) -> bool:
    """True when the kernel knows the generic-netlink family ``name`` (asking for it
    makes the kernel autoload its module when one is installed)."""
    try:
        sock = Netlink(NETLINK_GENERIC)
    except OSError:
        return False
    try:
        body = struct.pack("=BBH", CTRL_CMD_GETFAMILY, 1, 0)
        sock.request(GENL_ID_CTRL, body + attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"))
        return True
    except OSError:
        return False
    finally:
        sock.close()

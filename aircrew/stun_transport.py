"""The STUN client's transports: a UDP socket bound to the listen port, or a raw socket
that sends from that port while the WireGuard device holds it (IPv4, CAP_NET_RAW).

Both send a datagram to a server and receive the next answer within a timeout
(``Transport``); the raw one builds the UDP header itself (``build_udp_segment``) and
picks answers out of the copies of incoming UDP datagrams (``parse_ipv4_udp``).
"""
from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import time
from typing import Protocol

from wire.errors import InvalidInput, MeshError
from wire.messages import format_endpoint

MAX_DATAGRAM = 65535

Address = tuple[str, int]


class StunError(MeshError):
    """Endpoint discovery failed: unresolvable server, socket error, timeout, garbage."""


class Transport(Protocol):
    def send(self, data: bytes, server: Address) -> None: ...

    def receive(self, timeout: float) -> tuple[bytes, Address] | None: ...


class UdpTransport:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def send(self, data: bytes, server: Address) -> None:
        self._sock.sendto(data, server)

    def receive(self, timeout: float) -> tuple[bytes, Address] | None:
        self._sock.settimeout(timeout)
        try:
            data, source = self._sock.recvfrom(MAX_DATAGRAM)
        except (TimeoutError, ConnectionRefusedError):
            return None
        return data, (source[0], source[1])


class RawTransport:
    """IPv4 UDP through one raw IPPROTO_UDP socket, used both to send and to receive.

    Sending: we write the UDP header, the kernel the IP header. Receiving: the socket
    gets a copy (with IP header) of every incoming IPv4 UDP datagram for its bound
    address; only those from one of ``servers`` to ``local_port`` are returned.
    """

    def __init__(self, local_ip: str, local_port: int, servers: set[Address]) -> None:
        self._local_ip = local_ip
        self._local_port = local_port
        self._servers = servers
        self._sources: dict[Address, str] = {}
        try:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        except PermissionError as exc:
            raise StunError("raw STUN re-check needs CAP_NET_RAW (run as root)") from exc
        except OSError as exc:
            raise StunError(f"cannot open a raw UDP socket: {exc.strerror or exc}") from exc
        if local_ip != "0.0.0.0":
            try:
                self._sock.bind((local_ip, 0))
            except OSError as exc:
                self._sock.close()
                raise StunError(f"cannot bind raw socket to {local_ip}: {exc.strerror}") from exc

    def __enter__(self) -> RawTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._sock.close()

    def send(self, data: bytes, server: Address) -> None:
        source_ip = self._source_ip(server)
        segment = build_udp_segment((source_ip, self._local_port), server, data)
        self._sock.sendto(segment, (server[0], 0))

    def receive(self, timeout: float) -> tuple[bytes, Address] | None:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self._sock.settimeout(remaining)
            try:
                packet = self._sock.recv(MAX_DATAGRAM)
            except TimeoutError:
                return None
            parsed = parse_ipv4_udp(packet)
            if parsed is None:
                continue
            source, destination, payload = parsed
            if source in self._servers and destination[1] == self._local_port:
                return payload, source
        return None

    def _source_ip(self, server: Address) -> str:
        """The source address the kernel will pick (needed for the UDP checksum)."""
        if self._local_ip != "0.0.0.0":
            return self._local_ip
        if server not in self._sources:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect(server)  # a route lookup; sends nothing
                self._sources[server] = probe.getsockname()[0]
        return self._sources[server]


def udp_checksum(src_ip: str, dst_ip: str, segment: bytes) -> int:
    """The IPv4 UDP checksum of ``segment`` (header with checksum 0, then payload)."""
    pseudo = (
        socket.inet_aton(src_ip)
        + socket.inet_aton(dst_ip)
        + struct.pack("!BBH", 0, socket.IPPROTO_UDP, len(segment))
    )
    data = pseudo + segment
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    checksum = ~total & 0xFFFF
    return checksum or 0xFFFF  # 0 means "no checksum" in IPv4 UDP


def build_udp_segment(src: Address, dst: Address, payload: bytes) -> bytes:
    """A UDP header plus payload, checksummed, ready for an IPv4 raw socket."""
    length = 8 + len(payload)
    if length > 0xFFFF:
        raise InvalidInput(f"UDP payload too large: {len(payload)} bytes")
    unsummed = struct.pack("!HHHH", src[1], dst[1], length, 0) + payload
    checksum = udp_checksum(src[0], dst[0], unsummed)
    return struct.pack("!HHHH", src[1], dst[1], length, checksum) + payload


def parse_ipv4_udp(packet: bytes) -> tuple[Address, Address, bytes] | None:
    """``(source, destination, payload)`` of an IPv4 UDP packet, or None if it is not one.

    Fragments are refused (a STUN answer is far below any MTU).
    """
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    header_length = (packet[0] & 0x0F) * 4
    if header_length < 20 or len(packet) < header_length + 8 or packet[9] != socket.IPPROTO_UDP:
        return None
    (flags_fragment,) = struct.unpack_from("!H", packet, 6)
    if flags_fragment & 0x3FFF:  # MF set or non-zero offset
        return None
    src_ip = socket.inet_ntoa(packet[12:16])
    dst_ip = socket.inet_ntoa(packet[16:20])
    src_port, dst_port, length, _checksum = struct.unpack_from("!HHHH", packet, header_length)
    if length < 8 or header_length + length > len(packet):
        return None
    payload = packet[header_length + 8 : header_length + length]
    return (src_ip, src_port), (dst_ip, dst_port), payload


def bind_udp(family: int, local_ip: str, local_port: int | None) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((local_ip, local_port or 0))
    except OSError as exc:
        sock.close()
        where = format_endpoint(local_ip, local_port or 0)
        if exc.errno == errno.EADDRINUSE:
            raise StunError(
                f"UDP {where} is held by another socket (the WireGuard device?); "
                "use the raw-socket re-check instead"
            ) from exc
        raise StunError(f"cannot bind UDP {where}: {exc.strerror or exc}") from exc
    return sock


def family_of(ip: str) -> int:
    try:
        version = ipaddress.ip_address(ip).version
    except (ValueError, TypeError):
        raise InvalidInput(f"invalid local IP address {ip!r}") from None
    return socket.AF_INET if version == 4 else socket.AF_INET6

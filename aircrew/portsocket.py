"""Our datagrams on the WireGuard port while WireGuard holds it (IPv4).

Sending: a raw IPPROTO_UDP socket with a UDP header we build (source port = the
WireGuard port), so NATs treat it as WireGuard's own flow. Receiving: the same raw
socket, with a classic BPF filter that lets through only UDP datagrams to the WireGuard
port whose payload starts with our magic: WireGuard's own traffic never reaches Python.
"""
from __future__ import annotations

import ctypes
import socket
import struct

from wire import relaymsg as rm

SO_ATTACH_FILTER = 26

# classic BPF opcodes
_LDX_B_MSH = 0xB1     # X <- 4 * (pkt[k] & 0xf)
_LD_H_IND = 0x48      # A <- u16 at X + k
_LD_W_IND = 0x40      # A <- u32 at X + k
_JEQ_K = 0x15
_RET_K = 0x06


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


def filter_program(port: int) -> list[tuple[int, int, int, int]]:
    """UDP to ``port`` with our magic as the first payload word: accept; else drop."""
    magic = struct.unpack("!I", rm.MAGIC)[0]
    return [
        (_LDX_B_MSH, 0, 0, 0),          # X = IP header length
        (_LD_H_IND, 0, 0, 2),           # A = UDP destination port
        (_JEQ_K, 0, 3, port),
        (_LD_W_IND, 0, 0, 8),           # A = first 4 payload bytes
        (_JEQ_K, 0, 1, magic),
        (_RET_K, 0, 0, 0xFFFF),
        (_RET_K, 0, 0, 0),
    ]


def attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    array = (_SockFilter * len(program))(*[_SockFilter(*ins) for ins in program])
    fprog = struct.pack("HL", len(program), ctypes.addressof(array))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def udp_checksum(src_ip: str, dst_ip: str, segment: bytes) -> int:
    pseudo = socket.inet_aton(src_ip) + socket.inet_aton(dst_ip) + struct.pack(
        "!BBH", 0, socket.IPPROTO_UDP, len(segment))
    data = pseudo + segment + (b"\0" if len(segment) % 2 else b"")
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total & 0xFFFF) or 0xFFFF


class PortSocket:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        attach_filter(self.sock, filter_program(port))
        # datagrams that arrived before the filter was attached are still queued: drain
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(65535)
        except BlockingIOError:
            pass
        self._sources: dict[str, str] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes, destination: tuple[str, int]) -> None:
        source = self._source_for(destination[0])
        header = struct.pack("!HHHH", self.port, destination[1], 8 + len(data), 0)
        checksum = udp_checksum(source, destination[0], header + data)
        segment = struct.pack("!HHHH", self.port, destination[1], 8 + len(data), checksum) + data
        self.sock.sendto(segment, (destination[0], 0))

    def receive(self) -> tuple[bytes, tuple[str, int]] | None:
        """One of our datagrams (payload, source), or None when none is queued."""
        try:
            packet = self.sock.recv(65535)
        except BlockingIOError:
            return None
        ihl = (packet[0] & 0x0F) * 4
        sport, dport, length = struct.unpack_from("!HHH", packet, ihl)
        return packet[ihl + 8:ihl + length], (socket.inet_ntoa(packet[12:16]), sport)

    def _source_for(self, ip: str) -> str:
        if ip not in self._sources:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((ip, 9))
                self._sources[ip] = probe.getsockname()[0]
        return self._sources[ip]

    def close(self) -> None:
        self.sock.close()

"""The relay's kernel data path: WireGuard transport datagrams forwarded by nftables.

One table per relay port. Prerouting (priority raw) looks up (source address, source
port, receiver index) in two maps and rewrites destination address and port, skipping
conntrack; postrouting rewrites the source to the relay's own address and port. Map
elements carry timeouts, so sessions the relay forgets also leave the kernel.
Talks to nftables through libnftables (in process; no ``nft`` process per change).
One context serves the relay's threads (the socket thread adds routes, housekeeping
expires them and reads the counters), one call at a time: a libnftables context is not
thread-safe, and two calls at once mix their netlink replies, which libnftnl takes for a
broken kernel ABI and ends the process with exit(1).
"""
from __future__ import annotations

import ctypes
import ipaddress
import logging
import re
import threading
from pathlib import Path

log = logging.getLogger(__name__)

MARK = 0x52454C59          # "RELY"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")

_TABLE = """\
table ip {table} {{
    map dst_addr {{
        typeof ip saddr . udp sport . @th,96,32 : ip daddr
        flags timeout
    }}
    map dst_port {{
        typeof ip saddr . udp sport . @th,96,32 : udp dport
        flags timeout
    }}
    chain pre {{
        type filter hook prerouting priority raw; policy accept;
        udp dport {port} @th,64,32 0x04000000 ip saddr . udp sport . @th,96,32 @dst_addr notrack meta mark set {mark} ip daddr set ip saddr . udp sport . @th,96,32 map @dst_addr udp dport set ip saddr . udp sport . @th,96,32 map @dst_port counter
    }}
    chain post {{
        type filter hook postrouting priority srcnat; policy accept;
        meta mark {mark} ip saddr set {address} udp sport set {port} counter
    }}
    chain out {{
        type filter hook output priority filter; policy accept;
        icmp type redirect drop
    }}
{forward}}}
"""
_FORWARD_GUARD = """\
    chain forward {{
        type filter hook forward priority filter - 1; policy accept;
        meta mark != {mark} drop
    }}
"""
_COUNTER = re.compile(r"counter packets (\d+) bytes (\d+)")


class NftError(Exception):
    pass


class Nft:
    """A libnftables context, used by one thread at a time (``run`` holds a lock)."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL("libnftables.so.1")
        except OSError as exc:
            raise NftError(f"libnftables is not available: {exc}") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self._lib = lib
        self._lock = threading.Lock()
        self._ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)

    def run(self, commands: str) -> str:
        with self._lock:
            if not self._ctx:
                raise NftError("the libnftables context is closed")
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
            out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        if rc != 0:
            raise NftError(err.strip() or f"nft failed ({rc})")
        return out

    def close(self) -> None:
        with self._lock:
            if self._ctx:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None


def _element(source: tuple[str, int], index: bytes) -> str:
    return f"{ipaddress.IPv4Address(source[0])} . {int(source[1])} . 0x{index.hex()}"


class KernelPath:
    """Install the table, mirror routes into it, read its counters, remove it."""

    def __init__(self, address: str, port: int, nft: Nft | None = None) -> None:
        self.address = str(ipaddress.IPv4Address(address))
        self.port = port
        self.table = f"apexrelay_{port}"
        self.nft = nft or Nft()
        self._forward_was = None

    def start(self) -> None:
        self._delete_table()
        forward = ""
        if IP_FORWARD.read_text().strip() == "0":
            self._forward_was = "0"
            forward = _FORWARD_GUARD.format(mark=MARK)
        self.nft.run(_TABLE.format(table=self.table, port=self.port, mark=MARK,
                                   address=self.address, forward=forward))
        if self._forward_was == "0":
            try:
                IP_FORWARD.write_text("1\n")
            except OSError:              # e.g. a read-only /proc/sys: leave no table behind
                self._delete_table()
                self._forward_was = None
                raise
            log.info("turned IPv4 forwarding on for the relay (only relayed packets are "
                     "forwarded); it is turned off again at exit")

    def stop(self) -> None:
        self._delete_table()
        if self._forward_was == "0":
            IP_FORWARD.write_text("0\n")
        self.nft.close()

    def _delete_table(self) -> None:
        try:
            self.nft.run(f"delete table ip {self.table}")
        except NftError:
            pass

    def add(self, routes: list[tuple[tuple[str, int], bytes, tuple[str, int], float]]) -> None:
        lines = []
        for source, index, dest, ttl in routes:
            key, seconds = _element(source, index), max(1, int(ttl))
            lines.append(f"add element ip {self.table} dst_addr {{ {key} timeout {seconds}s : "
                         f"{dest[0]} }}")
            lines.append(f"add element ip {self.table} dst_port {{ {key} timeout {seconds}s : "
                         f"{dest[1]} }}")
        if lines:
            self.nft.run("\n".join(lines))

    def remove(self, routes: list[tuple[tuple[str, int], bytes]]) -> None:
        lines = []
        for source, index in routes:
            key = _element(source, index)
            lines += [f"delete element ip {self.table} dst_addr {{ {key} }}",
                      f"delete element ip {self.table} dst_port {{ {key} }}"]
        if not lines:
            return
        try:
            self.nft.run("\n".join(lines))
        except NftError:        # some had expired in the kernel already: one by one
            for line in lines:
                try:
                    self.nft.run(line)
                except NftError:
                    pass

    def counters(self) -> tuple[int, int]:
        """(packets, bytes) forwarded by the kernel since start."""
        out = self.nft.run(f"list chain ip {self.table} pre")
        found = _COUNTER.search(out)
        return (int(found.group(1)), int(found.group(2))) if found else (0, 0)

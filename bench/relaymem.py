"""Memory of the relay per relayed pair: ``python -m bench.relaymem N`` (run inside a lab
host: it creates the relay's nftables table in its network namespace).

N pairs of 2N bound nodes in one zone are made with synthetic handshakes (a valid mac1
needs only public keys, so no Noise is run); their routes are installed in the kernel
maps the way the relay does. Prints one JSON object: Python bytes per pair (routes and
pair state, besides the bindings), kernel slab bytes per pair, handshake rates.
"""
from __future__ import annotations

import json
import os
import sys
import time

from controltower.relay.kernel import KernelPath
from controltower.relay.table import AddRoute, Limits, RelayTable
from testbed.wgfake import initiation, response
from wire import relaymsg as rm, x25519


class _AllMembers:
    def serves(self, zone: str) -> bool:
        return True

    def is_member(self, zone: str, key: bytes) -> bool:
        return True


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _slab() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(pairs: int) -> dict:
    private = x25519.generate_private_key()
    public = x25519.public_key(private)
    limits = Limits(max_peers_per_node=1 << 20, handshakes_per_second=1e9, handshake_burst=1e9,
                    max_bindings=1 << 24, max_routes=1 << 26, max_pending=1 << 24)
    table = RelayTable(lambda k: rm.derived_key(rm.RELAY_CONTEXT, x25519.exchange(private, k)),
                       b"benchmrk", _AllMembers(), limits)
    now = time.time()
    nodes = []
    for i in range(2 * pairs):
        node_private = x25519.generate_private_key()
        key = x25519.public_key(node_private)
        mac = rm.derived_key(rm.RELAY_CONTEXT, x25519.exchange(node_private, public))
        address = (f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 51820)
        table.handle(rm.encode_bind(mac, rm.Bind(os.urandom(8), int(now * 1000), key, "z")),
                     address, now)
        nodes.append((key, address))
    before = _rss()
    routes: list[AddRoute] = []
    started = time.perf_counter()
    for i in range(pairs):
        (ka, aa), (kb, ab) = nodes[2 * i], nodes[2 * i + 1]
        ia, ib = os.urandom(4), os.urandom(4)
        table.handle(initiation(ia, kb), aa, now)
        routes += [a for a in table.handle(response(ib, ia, ka), ab, now)
                   if isinstance(a, AddRoute)]
    new_pairs_s = time.perf_counter() - started
    python_per_pair = (_rss() - before) / pairs
    started = time.perf_counter()
    for i in range(pairs):
        (ka, aa), (kb, ab) = nodes[2 * i], nodes[2 * i + 1]
        ia, ib = os.urandom(4), os.urandom(4)
        table.handle(initiation(ia, kb), aa, now)
        table.handle(response(ib, ia, ka), ab, now)
    rekeys_s = time.perf_counter() - started
    kernel = KernelPath("203.0.113.10", 3480)
    kernel.start()
    try:
        slab_before = _slab()
        started = time.perf_counter()
        for at in range(0, len(routes), 500):
            kernel.add([(r.source, r.index, r.destination, r.ttl) for r in routes[at:at + 500]])
        install_s = time.perf_counter() - started
        kernel_per_pair = (_slab() - slab_before) / pairs
    finally:
        kernel.stop()
    return {"pairs": table.pairs(now), "bindings": len(table.bindings),
            "python_bytes_per_pair": round(python_per_pair),
            "python_rss_mb": round(_rss() / 2**20, 1),
            "kernel_bytes_per_pair": round(kernel_per_pair),
            "kernel_route_install_us": round(1e6 * install_s / len(routes), 1),
            "new_pairs_per_s": round(pairs / new_pairs_s),
            "rekeys_per_s": round(pairs / rekeys_s)}


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)))

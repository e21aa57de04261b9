"""iperf3 between two lab nodes: over wg0 (wireguard-go) and directly over the underlay.

    python -m deploy.throughput [--seconds 5]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from .lab import Lab
from .mesh import Mesh


def iperf(client, server_address: str, seconds: int) -> float:
    """Bits per second received, client -> server."""
    out = client.run(["iperf3", "-c", server_address, "-t", str(seconds), "-J"],
                     timeout=seconds + 30).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with Lab() as lab:
        mesh = Mesh(lab, lab.add_public_host("tower"))
        mesh.start_tower()
        a, b = lab.add_public_host("a"), lab.add_public_host("b")
        agents = [mesh.start_agent(h) for h in (a, b)]
        wg_b = [mesh.wait_address(agent) for agent in agents][1]
        mesh.wait_peers(a, {agents[1].public_key})
        mesh.reaches(a, wg_b)
        server = b.spawn(["iperf3", "-s"], "iperf3")
        time.sleep(0.5)
        underlay = iperf(a, b.address, args.seconds)
        overlay = iperf(a, wg_b, args.seconds)
        server.stop()
    result = {"underlay_mbps": round(underlay / 1e6), "wg0_mbps": round(overlay / 1e6),
              "ratio": round(overlay / underlay, 3), "seconds": args.seconds}
    print(f"underlay (veth, no encryption): {result['underlay_mbps']} Mbit/s")
    print(f"wg0 (wireguard-go, userspace):  {result['wg0_mbps']} Mbit/s "
          f"({result['ratio']:.1%} of the underlay)")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``throughput``: iperf3 between two lab nodes, over wg0 (wireguard-go) and over the underlay.

A lab (``testbed.lab``) with a tower and two public hosts running the real ``aircrew``;
one TCP stream of ``--seconds`` each way: directly between the hosts' underlay
addresses, then between their wg0 addresses. Not part of ``bench all``: the data plane
is WireGuard's, not the control plane's (see docs/performance.md).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from typing import Any

from .report import Target
from .requirements import device_scenarios_missing

log = logging.getLogger(__name__)

TARGETS: list[Target] = []
HEADLINE = ["underlay_mbps", "wg0_mbps", "ratio"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=int, default=5, help="length of each iperf3 run")


def iperf(client: Any, server_address: str, seconds: int) -> float:
    """Bits per second received, client -> server."""
    out = client.run(["iperf3", "-c", server_address, "-t", str(seconds), "-J"],
                     timeout=seconds + 30).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    command = f"python -m bench throughput --seconds {args.seconds}"
    missing = device_scenarios_missing()
    if shutil.which("iperf3") is None:
        missing.append("iperf3 is not installed")
    if missing:
        return {"not_run": "; ".join(missing), "command": command}
    from testbed.lab import Lab
    from testbed.mesh import Mesh

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
    return {"underlay_mbps": round(underlay / 1e6), "wg0_mbps": round(overlay / 1e6),
            "ratio": round(overlay / underlay, 3), "seconds": args.seconds,
            "command": command}

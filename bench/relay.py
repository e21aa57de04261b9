"""``relay``: the relay against direct paths in the lab, with the real tower and agents.

A tower (its relay on, kernel data path) and spokes behind NAT routers: two behind
port-restricted cone NATs (their pair punches and ends direct) and two behind routers
without an input firewall (their pair is relayed), all the same kind of hop otherwise.
In one run: iperf3 over wg0 through each pair, ``--rounds`` times interleaved (median,
ratio relayed/direct), RTT over wg0, time from both ends up to the first ping of a pair
of symmetric-NAT spokes (relayed), time to direct of the cone pair (both join times count
from the second node's ``aircrew`` start: discovery, registration, binds and the first
handshake included), CPU per Gbit/s of the relay process and of the whole machine, and
memory per relayed pair at ``--pairs`` pairs (``bench.relaymem`` inside a lab host).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import statistics
import sys
import time
from typing import Any

from .report import Target
from .requirements import device_scenarios_missing

log = logging.getLogger(__name__)

TARGETS = [Target("throughput_ratio", ">=", 0.8), Target("rtt_added_ms", "<=", 1.0),
           Target("hard_nat_first_ping_s", "<=", 2.0), Target("punchable_direct_s", "<=", 30.0)]
HEADLINE = ["throughput_ratio", "direct_mbps", "relayed_mbps", "rtt_added_ms",
            "hard_nat_first_ping_s", "hard_nat_ping_after_address_s", "punchable_direct_s",
            "relay_process_cpu_per_gbps", "machine_cpu_per_gbps_relayed",
            "machine_cpu_per_gbps_direct",
            "python_bytes_per_pair", "kernel_bytes_per_pair"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=int, default=5, help="length of each iperf3 run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved iperf3 rounds")
    parser.add_argument("--pairs", type=int, default=10_000,
                        help="relayed pairs for the memory measurement")


def _busy_jiffies() -> int:
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:8]]
    return sum(fields) - fields[3] - fields[4]      # all but idle and iowait


def _process_jiffies(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _iperf(client: Any, server: Any, address: str, seconds: int) -> float:
    """Mbit/s received, client -> server, one TCP stream."""
    proc = server.spawn(["iperf3", "-s", "-1"], "iperf3")
    try:
        time.sleep(0.4)
        out = client.run(["iperf3", "-c", address, "-t", str(seconds), "-J"],
                         timeout=seconds + 30).stdout
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        proc.stop()


def _rtt(client: Any, address: str) -> float | None:
    out = client.run(["ping", "-n", "-q", "-c", "40", "-i", "0.05", address], check=False).stdout
    found = re.search(r"= ([\d.]+)/([\d.]+)/", out)
    return float(found.group(2)) if found else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    command = (f"python -m bench relay --seconds {args.seconds} --rounds {args.rounds} "
               f"--pairs {args.pairs}")
    missing = device_scenarios_missing()
    for tool in ("iperf3", "nft"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} is not installed")
    if missing:
        return {"not_run": "; ".join(missing), "command": command}
    from testbed.lab import Lab
    from testbed.mesh import Mesh, wait_for

    result: dict[str, Any] = {"command": command}
    hz = os.sysconf("SC_CLK_TCK")
    with Lab() as lab:
        tower = lab.add_public_host("tower")
        mesh = Mesh(lab, tower)
        mesh.start_tower()
        hosts = {}
        for name, kind in (("c1", "cone"), ("c2", "cone"), ("r1", "router"), ("r2", "router"),
                           ("s1", "symmetric"), ("s2", "symmetric")):
            hosts[name] = lab.add_private_host(name, lab.add_nat(f"n{name}", kind))
        agents, addresses = {}, {}
        for name in ("c1", "r1", "r2", "s1"):
            agents[name] = mesh.start_agent(hosts[name])
        for name in list(agents):
            addresses[name] = mesh.wait_address(agents[name])
        # the second node of each pair joins now: join -> first ping (hard NAT, relayed)
        # and join -> direct (punchable)
        joined = time.monotonic()
        for name in ("s2", "c2"):
            agents[name] = mesh.start_agent(hosts[name])
        addresses["s2"] = mesh.wait_address(agents["s2"])
        first = mesh.first_ping(hosts["s1"], addresses["s2"], timeout=30)
        result["hard_nat_first_ping_s"] = (None if first is None else
                                           round(time.monotonic() - joined, 2))
        # of which: from s2's address on its wg0 (agent started, enrolled, registered)
        result["hard_nat_ping_after_address_s"] = None if first is None else round(first, 2)
        addresses["c2"] = mesh.wait_address(agents["c2"])
        key = {n: a.public_key for n, a in agents.items()}

        def on(a: str, b: str, path: str) -> bool:
            return (mesh.path_of(hosts[a], key[b])[0] == path
                    and mesh.path_of(hosts[b], key[a])[0] == path)
        wait_for(lambda: on("c1", "c2", "direct"), 60, "the cone pair on direct", interval=0.1)
        result["punchable_direct_s"] = round(time.monotonic() - joined, 1)
        wait_for(lambda: on("r1", "r2", "relayed"), 30, "the router pair on the relay")
        direct, relayed, cpu = [], [], {"direct": [], "relayed": [], "relay_process": []}
        tower_pid = mesh.tower_proc.pid
        for _ in range(args.rounds):
            for path, (a, b), into in (("direct", ("c1", "c2"), direct),
                                       ("relayed", ("r1", "r2"), relayed)):
                busy, proc, t0 = _busy_jiffies(), _process_jiffies(tower_pid), time.monotonic()
                mbps = _iperf(hosts[a], hosts[b], addresses[b], args.seconds)
                elapsed = time.monotonic() - t0
                into.append(round(mbps, 1))
                gbit = mbps * elapsed / 1000
                cpu[path].append((_busy_jiffies() - busy) / hz / gbit)
                if path == "relayed":
                    cpu["relay_process"].append((_process_jiffies(tower_pid) - proc) / hz / gbit)
        result["direct_mbps_runs"], result["relayed_mbps_runs"] = direct, relayed
        result["direct_mbps"] = statistics.median(direct)
        result["relayed_mbps"] = statistics.median(relayed)
        result["throughput_ratio"] = round(result["relayed_mbps"] / result["direct_mbps"], 3)
        rtt_direct = [_rtt(hosts["c1"], addresses["c2"]) for _ in range(2)]
        rtt_relayed = [_rtt(hosts["r1"], addresses["r2"]) for _ in range(2)]
        result["rtt_direct_ms"] = rtt_direct
        result["rtt_relayed_ms"] = rtt_relayed
        if None not in rtt_direct + rtt_relayed:
            result["rtt_added_ms"] = round(statistics.mean(rtt_relayed) -
                                           statistics.mean(rtt_direct), 3)
        result["machine_cpu_per_gbps_direct"] = round(statistics.median(cpu["direct"]), 2)
        result["machine_cpu_per_gbps_relayed"] = round(statistics.median(cpu["relayed"]), 2)
        result["relay_process_cpu_per_gbps"] = round(statistics.median(cpu["relay_process"]), 3)
        mem_host = lab.add_public_host("mem")
        out = mem_host.run([sys.executable, "-m", "bench.relaymem", str(args.pairs)],
                           timeout=900).stdout
        memory = json.loads(out.strip().splitlines()[-1])
        result.update({k: memory[k] for k in ("python_bytes_per_pair", "kernel_bytes_per_pair",
                                              "kernel_route_install_us", "new_pairs_per_s",
                                              "rekeys_per_s")})
        result["memory_pairs"] = memory["pairs"]
        result["load_average"] = os.getloadavg()[0]
    return result

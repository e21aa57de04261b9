"""``reconcile``: the real agent's reconcile on a real wireguard-go device holding N peers.

A network namespace (tests.nshelp.Host: its own /run/wireguard) runs ``wireguard-go -f
wg0``; the benchmark drives it through its UAPI socket with ``aircrew.uapi
.UserspaceDevice``, via ``aircrew.agent.Agent._reconcile`` itself (desired over the zone,
``device.read()``, diff, ``apply_ops``, then the state files) on a zone of N peers.

initial_apply_ms: the first reconcile, empty device -> N peers (apply_ops batches the new
peers into one ``upsert_peers`` set transaction).
one_change_ms / one_change_ops: one peer changes in the zone (alternately a new endpoint,
a new peer, a removed peer); the median time of one reconcile and the most device
operations any of them issued.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .report import Target, percentile
from .requirements import device_scenarios_missing

log = logging.getLogger(__name__)

TARGETS = [Target("one_change_ms", "<=", 20), Target("one_change_ops", "<=", 1),
           Target("initial_apply_ms", "<=", 2000)]
HEADLINE = ["peers", "one_change_ms", "one_change_ops", "initial_apply_ms"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--peers", type=int, default=1000, help="peers on the device")
    parser.add_argument("--changes", type=int, default=30, help="one-peer changes to time")


def command_of(args: argparse.Namespace) -> str:
    extra = f" --changes {args.changes}" if args.changes != 30 else ""
    return f"python -m bench reconcile --peers {args.peers}{extra}"


def _peer(index: int, key: str) -> Any:
    from wire.messages import Peer
    host = index % 250 + 1
    return Peer(key=key, address=f"10.64.{index // 250}.{host}",
                endpoint=f"198.51.100.{host}:{10000 + index // 250}", listen_port=51820,
                nat_type="cone", session="bench", hostname=f"peer-{index}")


def _start_device(host: Any, name: str) -> Any:
    from aircrew.uapi import UserspaceDevice
    import os
    import subprocess
    env = dict(os.environ, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1")
    proc = host.popen(["wireguard-go", "-f", name], env=env, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    device = UserspaceDevice(name, socket_dir=str(host.run_dir))
    deadline = time.monotonic() + 10
    while not device.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"wireguard-go exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError("wireguard-go did not open its UAPI socket within 10 s")
        time.sleep(0.02)
    return device


def run(args: argparse.Namespace) -> dict[str, Any]:
    missing = device_scenarios_missing()
    if missing:
        reason = "; ".join(missing)
        log.error("bench reconcile cannot run: %s", reason)
        return {"peers": args.peers, "not_run": reason, "command": command_of(args)}
    from aircrew.agent import Agent, AgentSettings
    from aircrew.endpoint import StaticEndpoint
    from aircrew.mirror import ZoneMirror
    from aircrew.state import StateFiles
    from tests.nshelp import Host
    from wire import proof

    from .simagent import RecordingLinks

    own = proof.generate_private_key()
    keys = [proof.public_key_of(proof.generate_private_key()) for _ in range(args.peers + args.changes)]
    peers = {k: _peer(i, k) for i, k in enumerate(keys[:args.peers])}
    spare = keys[args.peers:]
    state_dir = Path(tempfile.mkdtemp(prefix="ct-bench-state-"))
    try:
        with Host("bench") as host:
            device = _start_device(host, "wg0")
            settings = AgentSettings(zone="bench", private_key=own,
                                     controller_urls=["redis://127.0.0.1:1/0"], listen_port=51820)
            agent = Agent(settings, device, RecordingLinks(), StaticEndpoint("192.0.2.1", 51820),
                          StateFiles(state_dir, "wg0"))
            agent.assignment = {"address": "10.64.255.254", "prefix_len": 16,
                                "cidr": "10.64.0.0/16"}
            device.set_identity(own, 51820)
            agent.mirror = ZoneMirror()
            agent.mirror.load(1, peers)
            before = device.operations
            started = time.perf_counter()
            agent._reconcile()
            initial_ms = (time.perf_counter() - started) * 1000
            initial_ops = device.operations - before
            on_device = len(device.read().peers)
            times: list[float] = []
            ops: list[int] = []
            for n in range(args.changes):
                current = agent.mirror.peers
                kind = n % 3
                if kind == 0:      # a known peer moves to a new endpoint
                    key = keys[n]
                    old = current[key]
                    current[key] = type(old)(**{**old.__dict__,
                                                "endpoint": f"203.0.113.{n % 250 + 1}:40000"})
                elif kind == 1:    # a new peer joins
                    current[spare[n]] = _peer(args.peers + n, spare[n])
                else:              # a peer leaves
                    current.pop(keys[n], None)
                agent.mirror.rev += 1
                before = device.operations
                started = time.perf_counter()
                agent._reconcile()
                times.append((time.perf_counter() - started) * 1000)
                ops.append(device.operations - before)
            final = device.read()
            consistent = set(final.peers) == set(agent.mirror.peers)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    return {
        "peers": args.peers,
        "one_change_ms": round(percentile(times, 50), 2),
        "one_change_ops": max(ops),
        "initial_apply_ms": round(initial_ms, 1),
        "one_change_p99_ms": round(percentile(times, 99), 2),
        "initial_apply_ops": initial_ops,
        "peers_on_device": on_device,
        "device_matches_zone": consistent,
        "changes": args.changes,
        "command": command_of(args),
    }

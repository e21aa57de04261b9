"""``reconcile``: the real agent's follow loop on a real wireguard-go device holding N peers.

A network namespace (a testbed host: its own /run/wireguard) runs ``wireguard-go -f
wg0``; the agent (``aircrew.agent.Agent``, unchanged) drives it through its UAPI socket
with ``aircrew.uapi.UserspaceDevice``. The tower's side is replaced by a stand-in session
that hands the agent a snapshot and then zone updates, so what is timed is the agent's
own work: the follow loop takes the update from its queue, applies it to the mirror,
reconciles and issues the device operation; the state files are written by the agent's
own writer task meanwhile (off that path, but competing for the CPU, as on a node).

initial_apply_ms: ``Agent._resync`` from the snapshot of N peers to the device holding
them (empty device: one read, one batched ``set``).
one_change_ms: one peer changes (alternately a new endpoint, a new peer, a removed
peer): the median time from the update being put on the agent's queue to the device
having answered the ``set`` that carries it. one_change_ops: the most UAPI transactions
(reads included) the agent issued for one change. drift_check_ms: the periodic whole-zone
check against the device read back (``Agent._reconcile_all``), once at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import stat
import subprocess
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
ZONE = "bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--peers", type=int, default=1000, help="peers on the device")
    parser.add_argument("--changes", type=int, default=30, help="one-peer changes to time")
    parser.add_argument("--gap-ms", type=float, default=50.0,
                        help="pause between two changes (the agent's state writer runs "
                             "at most once a second meanwhile)")


def command_of(args: argparse.Namespace) -> str:
    extra = f" --changes {args.changes}" if args.changes != 30 else ""
    extra += f" --gap-ms {args.gap_ms:g}" if args.gap_ms != 50.0 else ""
    return f"python -m bench reconcile --peers {args.peers}{extra}"


def _peer(index: int, key: str, session: str = "other") -> Any:
    from wire.messages import Peer
    host = index % 250 + 1
    return Peer(key=key, address=f"10.64.{index // 250}.{host}",
                endpoint=f"198.51.100.{host}:{10000 + index // 250}", listen_port=51820,
                nat_type="cone", session=session, hostname=f"peer-{index}")


def _counting_device(name: str, socket_dir: str) -> Any:
    from aircrew.uapi import UserspaceDevice

    class CountingDevice(UserspaceDevice):
        """Counts every UAPI transaction (reads too) and notes when a ``set`` answered."""
        transactions = 0
        set_done_at = 0.0
        on_set = None

        def _transact(self, request: bytes, what: str, timeout: float | None = None):
            self.transactions += 1
            reply = super()._transact(request, what, timeout)
            if request.startswith(b"set="):
                self.set_done_at = time.perf_counter()
                if self.on_set is not None:
                    self.on_set()
            return reply
    return CountingDevice(name, socket_dir=socket_dir)


def _start_device(host: Any, name: str) -> Any:
    env = dict(os.environ, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1")
    proc = host.popen(["wireguard-go", "-f", name], env=env, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    device = _counting_device(name, str(host.run_dir))
    deadline = time.monotonic() + 10
    while not device.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"wireguard-go exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError("wireguard-go did not open its UAPI socket within 10 s")
        time.sleep(0.02)
    return device


def _changes(args: argparse.Namespace, keys: list[str], spare: list[str]) -> list[Any]:
    """One ``Change`` per step: a peer moves, a peer joins, a peer leaves, in turn."""
    from wire.messages import Change
    changes = []
    for n in range(args.changes):
        rev = 2 + n
        kind = n % 3
        if kind == 0:
            moved = _peer(n, keys[n])
            moved = type(moved)(**{**moved.__dict__, "endpoint": f"203.0.113.{n % 250 + 1}:40000"})
            changes.append(Change(rev, "upsert", peer=moved))
        elif kind == 1:
            changes.append(Change(rev, "upsert", peer=_peer(args.peers + n, spare[n])))
        else:
            changes.append(Change(rev, "remove", key=keys[n], reason="left"))
    return changes


async def _drive(args: argparse.Namespace, agent: Any, device: Any, session: Any,
                 changes: list[Any]) -> dict[str, Any]:
    from wire.messages import ZoneUpdate
    loop = asyncio.get_running_loop()
    before = device.transactions
    started = time.perf_counter()
    await agent._resync()
    initial_ms = (time.perf_counter() - started) * 1000
    initial_ops = device.transactions - before

    answered = asyncio.Event()
    device.on_set = lambda: loop.call_soon_threadsafe(answered.set)
    writer = asyncio.create_task(agent.write_state_files())
    follow = asyncio.create_task(agent._follow())
    times: list[float] = []
    ops: list[int] = []
    try:
        for change in changes:
            answered.clear()
            before = device.transactions
            session.published = change.rev
            started = time.perf_counter()
            session.updates.put_nowait(ZoneUpdate(ZONE, change.rev - 1, change.rev, (change,)))
            await asyncio.wait_for(answered.wait(), 10)
            times.append((device.set_done_at - started) * 1000)
            await asyncio.sleep(args.gap_ms / 1000)     # what else the agent does for it
            ops.append(device.transactions - before)
            if follow.done():
                follow.result()     # the agent failed: raise its error
                raise RuntimeError("the agent's follow loop ended")
    finally:
        device.on_set = None
        agent.stop.set()
        await asyncio.wait([follow], timeout=5)
        writer.cancel()
        await asyncio.gather(follow, writer, return_exceptions=True)
    await agent._save()
    before = device.transactions
    started = time.perf_counter()
    await agent._reconcile_all()
    drift_ms = (time.perf_counter() - started) * 1000
    drift_ops = device.transactions - before
    return {"initial_ms": initial_ms, "initial_ops": initial_ops, "times": times, "ops": ops,
            "drift_ms": drift_ms, "drift_ops": drift_ops}


def run(args: argparse.Namespace) -> dict[str, Any]:
    missing = device_scenarios_missing()
    if missing:
        reason = "; ".join(missing)
        log.error("bench reconcile cannot run: %s", reason)
        return {"peers": args.peers, "not_run": reason, "command": command_of(args)}
    from aircrew.agent import Agent, AgentSettings
    from aircrew.endpoint import StaticEndpoint
    from aircrew.session import ZoneSnapshot
    from aircrew.state import StateFiles
    from testbed.lab import standalone
    from testbed.simagent import RecordingLinks
    from testbed.standin import StandInSession
    from wire import proof

    own = proof.generate_private_key()
    own_key = proof.public_key_of(own)
    keys = [proof.public_key_of(proof.generate_private_key())
            for _ in range(args.peers + args.changes)]
    peers = {k: _peer(i, k) for i, k in enumerate(keys[:args.peers])}
    spare = keys[args.peers:]
    changes = _changes(args, keys, spare)
    state_dir = Path(tempfile.mkdtemp(prefix="ct-bench-state-"))
    files = StateFiles(state_dir, "wg0")
    try:
        with standalone("bench") as host:
            device = _start_device(host, "wg0")
            settings = AgentSettings(zone=ZONE, private_key=own,
                                     controller_urls=["redis://127.0.0.1:1/0"], listen_port=51820)
            agent = Agent(settings, device, RecordingLinks(), StaticEndpoint("192.0.2.1", 51820),
                          files)
            agent.assignment = {"address": "10.64.255.254", "prefix_len": 16,
                                "cidr": "10.64.0.0/16"}
            agent._ensure_device()
            session = StandInSession(ZoneSnapshot("10.64.0.0/16", 1, {
                **peers, own_key: _peer(args.peers * 2, own_key, "bench-session")}),
                "bench-session")
            agent.session = session
            try:
                found = asyncio.run(_drive(args, agent, device, session, changes))
            finally:
                agent._device_thread.shutdown(wait=True)
                agent._state_thread.shutdown(wait=True)
            final = device.read()
            on_device = set(final.peers)
            consistent = on_device == set(agent.mirror.peers) - {own_key}
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files.all()}
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    times = found["times"]
    return {
        "peers": args.peers,
        "one_change_ms": round(percentile(times, 50), 2),
        "one_change_ops": max(found["ops"]),
        "initial_apply_ms": round(found["initial_ms"], 1),
        "one_change_p99_ms": round(percentile(times, 99), 2),
        "one_change_max_ms": round(max(times), 2),
        "initial_apply_ops": found["initial_ops"],
        "drift_check_ms": round(found["drift_ms"], 1),
        "drift_check_ops": found["drift_ops"],
        "peers_on_device": len(on_device),
        "device_matches_zone": consistent,
        "state_files_0600": all(mode == 0o600 for mode in modes.values()),
        "changes": args.changes,
        "command": command_of(args),
    }

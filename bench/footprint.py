"""``agent-footprint``: a real ``aircrew`` process in a zone of N peers, watched while idle.

Set-up: a network namespace with its own mount namespace (a testbed host) runs
``wireguard-go -f wg0`` and the real ``aircrew`` command, exactly as a node would
(private key file in its /etc/wireguard, the zone's agent secret in
AIRCREW_CONTROLLER_PASSWORD, never in argv; ``--local-endpoint-ip``, so no STUN). A veth
pair (198.18.0.0/15, the benchmarking range) links it to the root namespace, where the
stack's redis-server also listens on the veth's address and ``controltower serve`` runs
the request worker. The zone's N other nodes are pre-registered straight into the store.

Measurement: once wg0 holds all N peers and a short settle time has passed, the agent
process alone (not wireguard-go) is sampled every second for ``--duration`` seconds:
``rss_mb`` is the largest VmRSS seen (MiB, from /proc/PID/status; ``rss_decimal_mb`` the
same in 10^6 bytes: the target of 40 MB, 80 MB from 10,000 peers, must hold in both
units), ``idle_cpu_pct`` is
(utime + stime) over the window / wall time * 100 (all threads). wireguard-go's RSS is
reported as information. Everything started (processes, namespace, veth, stack) is
removed again, also on failure.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import random
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import Stack, make_identities, process_cpu
from .report import Target
from .requirements import device_scenarios_missing

log = logging.getLogger(__name__)

# Issue 6: 40 MB at 1,000 peers; issue 18: 80 MB from 10,000 peers (the zone is the size
# a Redis Cluster shard makes possible). Idle CPU: 1 % at any size.
LARGE = 10_000


def _small(result: dict[str, Any]) -> bool:
    return result.get("peers", 0) < LARGE


def _large(result: dict[str, Any]) -> bool:
    return result.get("peers", 0) >= LARGE


TARGETS = [Target("rss_mb", "<=", 40, _small), Target("rss_decimal_mb", "<=", 40, _small),
           Target("rss_mb", "<=", 80, _large), Target("rss_decimal_mb", "<=", 80, _large),
           Target("idle_cpu_pct", "<=", 1)]
HEADLINE = ["peers", "rss_mb", "idle_cpu_pct"]

BENCH_NET = ipaddress.IPv4Network("198.18.0.0/15")   # RFC 2544: network benchmarks
INTERFACE = "wg0"
LISTEN_PORT = 51820
APPLIED = "applied with"          # the agent's log line after each device change


class FootprintError(Exception):
    """The scenario could not get the agent to the measured state; the message says why."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--peers", type=int, default=1000, help="other nodes in the agent's zone")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds to watch the idle agent")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to wait after wg0 holds every peer, before measuring")
    parser.add_argument("--sync-timeout", type=float, default=120.0,
                        help="seconds allowed for the agent to put every peer on wg0")


def command_of(args: argparse.Namespace) -> str:
    out = "python -m bench agent-footprint"
    if args.peers != 1000:
        out += f" --peers {args.peers}"
    if args.duration != 60:
        out += f" --duration {args.duration:g}"
    if args.settle != 3:
        out += f" --settle {args.settle:g}"
    return out


# -- /proc ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProcSample:
    """One look at a process: memory in KiB, CPU seconds, threads, context switches."""
    rss_kb: int
    anon_kb: int
    file_kb: int
    hwm_kb: int
    cpu_s: float
    threads: int
    switches: int


def parse_status(text: str) -> dict[str, int]:
    """The numeric fields of /proc/PID/status (kB values as plain numbers)."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        first = value.split()[:1]
        if first and first[0].isdigit():
            out[key] = int(first[0])
    return out


def _switches(pid: int) -> int:
    """Context switches of every thread: how often the process woke up."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = parse_status((task / "status").read_text())
        except OSError:        # the thread ended meanwhile
            continue
        total += fields.get("voluntary_ctxt_switches", 0)
        total += fields.get("nonvoluntary_ctxt_switches", 0)
    return total


def sample(pid: int) -> ProcSample:
    fields = parse_status(Path(f"/proc/{pid}/status").read_text())
    return ProcSample(rss_kb=fields["VmRSS"], anon_kb=fields.get("RssAnon", 0),
                      file_kb=fields.get("RssFile", 0) + fields.get("RssShmem", 0),
                      hwm_kb=fields.get("VmHWM", 0), cpu_s=process_cpu(pid),
                      threads=fields.get("Threads", 0), switches=_switches(pid))


def rss_by_mapping(pid: int, top: int = 6) -> dict[str, float]:
    """The largest resident parts of a process (MiB): anonymous memory, heap, and each
    mapped file by name (shared libraries count in RSS too)."""
    sizes: dict[str, int] = {}
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:     # a mapping's line
            name = Path(head[5]).name if len(head) > 5 else "[anon]"
        elif line.startswith("Rss:"):
            sizes[name] = sizes.get(name, 0) + int(head[1])
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:top]
    return {key: round(kb / 1024, 1) for key, kb in largest}


def summarize(first: ProcSample, samples: list[ProcSample], wall_s: float) -> dict[str, Any]:
    """The figures of one watch: ``first`` at its start, ``samples`` every second after."""
    last = samples[-1]
    largest = max(samples, key=lambda s: s.rss_kb)
    cpu = last.cpu_s - first.cpu_s
    return {
        "rss_mb": round(largest.rss_kb / 1024, 1),
        "idle_cpu_pct": round(cpu / wall_s * 100, 3),
        "rss_kb": largest.rss_kb,
        "rss_decimal_mb": round(largest.rss_kb * 1024 / 1e6, 1),
        "rss_anon_mb": round(largest.anon_kb / 1024, 1),
        "rss_file_mb": round(largest.file_kb / 1024, 1),
        "rss_peak_mb": round(last.hwm_kb / 1024, 1),
        "rss_first_mb": round(first.rss_kb / 1024, 1),
        "rss_last_mb": round(last.rss_kb / 1024, 1),
        "cpu_s": round(cpu, 3),
        "wakeups_per_s": round((last.switches - first.switches) / wall_s, 2),
        "threads": last.threads,
    }


def watch(pid: int, duration: float, alive: Any) -> dict[str, Any]:
    """Sample ``pid`` once a second for ``duration`` seconds (``alive()`` checked each time)."""
    first = sample(pid)
    started = time.monotonic()
    samples: list[ProcSample] = []
    for tick in range(1, math.ceil(duration) + 1):
        time.sleep(max(0.0, started + min(tick, duration) - time.monotonic()))
        if not alive():
            raise FootprintError("the agent exited while it was watched")
        samples.append(sample(pid))
    return summarize(first, samples, time.monotonic() - started)


# -- the namespace and its link --------------------------------------------------------------

def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 of the benchmarking range that no address of the root namespace is in."""
    used = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True,
                          text=True).stdout
    subnets = list(BENCH_NET.subnets(new_prefix=30))
    for _ in range(100):
        subnet = random.choice(subnets)
        if not any(f" {host}/" in used for host in subnet):
            return subnet
    raise FootprintError(f"no free /30 in {BENCH_NET} in the root namespace")


def link_to_root(host: Any) -> tuple[str, str, str]:
    """A veth from the root namespace into ``host``: (root link, root address, host address).

    The link goes with the namespace when it is deleted; the caller also deletes the
    root end itself in case the namespace outlives a failure here.
    """
    subnet = _free_subnet()
    root_ip, host_ip = (str(a) for a in list(subnet.hosts())[:2])
    root_link = f"fp{secrets.token_hex(4)}"
    inner = host.new_link_name()
    _ip("link", "add", root_link, "type", "veth", "peer", "name", inner, "netns", host.ns)
    _ip("addr", "add", f"{root_ip}/30", "dev", root_link)
    _ip("link", "set", root_link, "up")
    host.run(["ip", "addr", "add", f"{host_ip}/30", "dev", inner])
    host.run(["ip", "link", "set", inner, "up"])
    return root_link, root_ip, host_ip


def _ip(*argv: str) -> None:
    result = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise FootprintError(f"ip {' '.join(argv)} failed: {result.stderr.strip()}")


def _delete_link(name: str) -> None:
    subprocess.run(["ip", "link", "del", name], capture_output=True)


# -- the processes ---------------------------------------------------------------------------

def start_wireguard(host: Any) -> tuple[subprocess.Popen[bytes], Any]:
    """``wireguard-go -f wg0`` in the host (our child); returns it and a UAPI client."""
    from aircrew.uapi import UserspaceDevice
    env = dict(os.environ, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1")
    proc = host.popen(["wireguard-go", "-f", INTERFACE], env=env, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    device = UserspaceDevice(INTERFACE, socket_dir=str(host.run_dir))
    deadline = time.monotonic() + 10
    while not device.exists():
        if proc.poll() is not None:
            raise FootprintError(f"wireguard-go exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise FootprintError("wireguard-go did not open its UAPI socket within 10 s")
        time.sleep(0.02)
    return proc, device


def agent_argv(controller: str, zone: str, endpoint_ip: str) -> list[str]:
    """The agent's command line, as a user types it (the secret is in the environment)."""
    return [str(Path(sys.executable).parent / "aircrew"),
            "--private-key-file=/etc/wireguard/private.key", f"--controller={controller}",
            f"--zone={zone}", f"--local-endpoint-ip={endpoint_ip}",
            f"--listen-port={LISTEN_PORT}", f"--interface={INTERFACE}",
            "--state-dir=/etc/wireguard"]


def start_agent(host: Any, argv: list[str], secret: str, log_path: Path) -> subprocess.Popen[bytes]:
    from testbed.worker import REPO
    from wire.proof import generate_private_key
    from wire.secretfile import write_secret
    write_secret(host.etc_dir / "private.key", generate_private_key() + "\n")
    env = dict(os.environ, AIRCREW_CONTROLLER_PASSWORD=secret)
    with open(log_path, "ab") as out:
        proc = host.popen(argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                          stderr=subprocess.STDOUT)
    _await_exec(proc.pid, "aircrew")
    return proc


def _await_exec(pid: int, name: str, timeout: float = 10) -> None:
    """Wait until the launcher chain (ip netns exec, unshare, sh) has exec'd the program."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name[:15]:
                return
        except OSError:
            raise FootprintError(f"{name} exited at start") from None
        time.sleep(0.01)
    raise FootprintError(f"{name} did not start within {timeout:g} s")


def wait_for_peers(device: Any, peers: int, proc: subprocess.Popen[bytes],
                   timeout: float) -> float:
    """Seconds until the device holds ``peers`` peers (polled five times a second)."""
    started = time.monotonic()
    for _ in range(int(timeout * 5) + 1):
        if proc.poll() is not None:
            raise FootprintError(f"the agent exited with status {proc.returncode}")
        try:
            held = len(device.read().peers)
        except Exception as exc:  # noqa: BLE001 - not configured yet: ask again
            log.debug("reading wg0: %s", exc)
            held = 0
        if held >= peers:
            return time.monotonic() - started
        time.sleep(0.2)
    raise FootprintError(f"wg0 did not hold {peers} peers within {timeout:g} s")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 10 s (closing the host removes anything left)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- the scenario ----------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict[str, Any]:
    missing = device_scenarios_missing()
    if args.peers < 1 or args.duration < 1:
        missing.append("--peers and --duration must be at least 1")
    if missing:
        reason = "; ".join(missing)
        log.error("bench agent-footprint cannot run: %s", reason)
        return {"peers": args.peers, "not_run": reason, "command": command_of(args)}
    from testbed.lab import standalone
    result: dict[str, Any] = {"peers": args.peers}
    with standalone("fp") as host:
        log_path = host.dir / "aircrew.log"
        root_link = None
        try:
            root_link, root_ip, host_ip = link_to_root(host)
            result.update(measure(args, host, root_ip, host_ip, log_path))
        except FootprintError as exc:
            tail = _log_tail(log_path)
            if tail:
                print(f"--- tail of the agent log ---\n{tail}", file=sys.stderr)
            result["not_run"] = str(exc)
        finally:
            if root_link:
                _delete_link(root_link)
    result["command"] = command_of(args)
    return result


def measure(args: argparse.Namespace, host: Any, root_ip: str, host_ip: str,
            log_path: Path) -> dict[str, Any]:
    """Stack, zone, wireguard-go and the agent; the figures of the idle agent."""
    from controltower.acl import AgentCredentials, new_secret
    from wire.keys import Keys

    stack = Stack(redis_args=["--appendfsync", "always", "--bind", "127.0.0.1", root_ip])
    with stack:
        secret = new_secret()
        client = stack.client()
        try:
            AgentCredentials(client, Keys()).set(stack.zone, secret)   # as POST /zone does
        finally:
            client.close()
        prereg_s = stack.preregister(make_identities(args.peers, "fp"))
        wg_proc, device = start_wireguard(host)
        agent = None
        try:
            controller = f"{root_ip}:{stack.redis_proc.port}"
            agent = start_agent(host, agent_argv(controller, stack.zone, host_ip), secret,
                                log_path)
            sync_s = wait_for_peers(device, args.peers, agent, args.sync_timeout)
            time.sleep(args.settle)
            applied_before = _log_text(log_path).count(APPLIED)
            figures = watch(agent.pid, args.duration, lambda: agent.poll() is None)
            figures["rss_by_mapping_mb"] = rss_by_mapping(agent.pid)
            applied = _log_text(log_path).count(APPLIED) - applied_before
            wg = sample(wg_proc.pid)
            held = len(device.read().peers)
        finally:
            _stop(agent)
            _stop(wg_proc)
    return {**figures,
            "peers_on_device": held,
            "device_changes_while_watched": applied,
            "sync_s": round(sync_s, 2),
            "wireguard_go_rss_mb": round(wg.rss_kb / 1024, 1),
            "duration_s": args.duration,
            "preregister_s": round(prereg_s, 2)}


def _log_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""

"""Network namespaces through the ``ip`` command: make, enter, list, empty and delete them.

Every command run in a test bed host goes through :func:`enter`::

    ip netns exec NS unshare --mount --propagation private \\
        sh -c 'mount --bind RUN /run/wireguard; mount --bind ETC /etc/wireguard;
               mount --bind ETC/hosts /etc/hosts; exec CMD'

so the host has its own network stack and, like a container, its own ``/run/wireguard``
(wireguard-go's UAPI sockets), ``/etc/wireguard`` and ``/etc/hosts`` (where aircrew names
the zone's nodes: never the machine's own), backed by files of the test bed. The script
execs the command, so the PID the caller holds is the command itself.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

from .errors import CommandError

log = logging.getLogger(__name__)

_ENTER_SCRIPT = (
    'mkdir -p /run/wireguard /etc/wireguard'
    ' && mount --bind "$1" /run/wireguard'
    ' && mount --bind "$2" /etc/wireguard'
    ' && { [ ! -f "$2/hosts" ] || mount --bind "$2/hosts" /etc/hosts; }'
    ' && shift 2 && exec "$@"'
)
TOOLS = ("ip", "unshare", "mount", "wireguard-go")


def available() -> str | None:
    """None when namespace hosts can be built here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def enter(ns: str, run_dir: Path | str, etc_dir: Path | str, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` inside a host (network + private mount namespace)."""
    return ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
            "sh", "-c", _ENTER_SCRIPT, "testbed", str(run_dir), str(etc_dir), *argv]


def check(argv: Sequence[str], input: str | None = None, timeout: float = 30) -> str:
    """Run a command in the root namespace; its stdout, or CommandError with its stderr."""
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise CommandError(proc.returncode, list(argv), proc.stdout, proc.stderr)
    return proc.stdout


def ip(*args: str, ns: str | None = None) -> None:
    """``ip [-n NS] ARGS``."""
    check(["ip", *(["-n", ns] if ns else []), *args])


def sysctl(ns: str, key: str, value: str) -> None:
    check(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"])


def add(ns: str) -> None:
    """Make a namespace with its loopback up."""
    check(["ip", "netns", "add", ns])
    ip("link", "set", "lo", "up", ns=ns)


def names() -> list[str]:
    """Every network namespace on this machine (``ip netns list``)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def pids(ns: str) -> list[int]:
    """The processes inside a namespace."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def process_start(pid: int) -> int | None:
    """Start time of a process (clock ticks after boot), to tell it from a reused PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def alive(pid: int, start: int | None) -> bool:
    """True while the process that started at ``start`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and int(fields[19]) == start


def empty(ns: str, grace: float = 0.0) -> None:
    """End every process inside a namespace the test bed made, and wait until they are gone.

    ``grace`` > 0: SIGTERM first and that many seconds to exit; then SIGKILL. Only for
    namespaces we created: every process in one was started by us (directly or not).
    """
    seen: dict[int, int | None] = {}

    def signal_all(sig: int) -> list[int]:
        found = pids(ns)
        for pid in found:
            seen.setdefault(pid, process_start(pid))
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return found

    if grace > 0 and signal_all(signal.SIGTERM):
        deadline = time.monotonic() + grace
        while pids(ns) and time.monotonic() < deadline:
            time.sleep(0.02)
    for _ in range(100):
        if not signal_all(signal.SIGKILL):
            break
        time.sleep(0.05)
    else:
        log.warning("processes still alive in %s: %s", ns, pids(ns))
    # A process leaves its namespace before it has finished exiting.
    deadline = time.monotonic() + 2.0
    while any(alive(pid, start) for pid, start in seen.items()):
        if time.monotonic() > deadline:
            log.warning("killed processes of %s still exiting: %s", ns, list(seen))
            break
        time.sleep(0.02)


def delete(ns: str) -> str | None:
    """Delete a namespace (its links go with it); None, or why it failed."""
    proc = subprocess.run(["ip", "netns", "delete", ns], capture_output=True, text=True)
    return None if proc.returncode == 0 else f"ip netns delete {ns}: {proc.stderr.strip()}"

"""A test bed host: a network namespace plus a private mount namespace, as in a container.

Every command of a :class:`Host` runs through :func:`testbed.netns.enter`, so the host
has its own network stack, ``/run/wireguard`` and ``/etc/wireguard``. A host belongs to a
:class:`testbed.lab.Lab`, which makes its namespace, records it in the lab's state file
and removes it again; ``testbed.lab.standalone(tag)`` makes a host that is a lab of its
own (no wan), for tests that need one or two namespaces and nothing else.

Processes in a host:

* ``run``: a command, waited for, output captured;
* ``popen``: a plain ``subprocess.Popen`` (the caller reads its pipes), stopped by
  ``close``;
* ``spawn``: a long-running :class:`HostProcess` that leads its own process group, logs
  to ``<host dir>/log/<name>.log`` and dies with the thread that spawned it;
* ``worker``: a Python process that builds objects and calls their methods on request
  (``testbed.worker``), so the code under test runs inside the host as it would on a node.
"""
from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from . import netns
from .errors import CommandError, LabError

if TYPE_CHECKING:
    from .lab import Lab, Nat
    from .worker import Worker

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the thread that spawned it dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass(frozen=True)
class Underlay:
    """How a lab host is cabled: its address on its one underlay link, its gateway, and
    the bridge port at the far end of the cable (in ``port_ns``)."""
    interface: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address
    port_ns: str
    port: str


class HostProcess:
    """A long-running process inside a host, leader of its own process group."""

    def __init__(self, host: Host, name: str, popen: subprocess.Popen[bytes],
                 log_path: Path) -> None:
        self.host = host
        self.name = name
        self.log_path = log_path
        self._popen = popen

    def __repr__(self) -> str:
        return f"<HostProcess {self.name} pid={self.pid} on {self.host.name}>"

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    @property
    def running(self) -> bool:
        return self._popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        return self._popen.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM to the process group, SIGKILL if it is still there after ``timeout``."""
        if self._popen.returncode is not None:
            return self._popen.returncode
        self.signal_group(signal.SIGTERM)
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%r ignored SIGTERM for %.1fs, killing it", self, timeout)
            return self.kill()

    def kill(self) -> int:
        """SIGKILL to the process group."""
        if self._popen.returncode is None:
            self.signal_group(signal.SIGKILL)
        return self._popen.wait()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal_group(self, sig: int) -> None:
        # Only while the leader is not yet reaped, so the group id is still ours.
        if self._popen.poll() is not None:
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass


class Host:
    """One host of a lab. Use as a context manager or call ``close()``."""

    role = "host"

    def __init__(self, lab: Lab, name: str, ns: str, underlay: Underlay | None = None,
                 nat: Nat | None = None) -> None:
        self.lab = lab
        self.name = name
        self.ns = ns
        self.underlay = underlay
        self.nat = nat  # the NAT a private host sits behind
        if nat is not None:
            self.role = "private"
        elif underlay is not None and self.role == "host":
            self.role = "public"
        self.dir = lab.root / name
        self.run_dir = self.dir / "run-wireguard"
        self.etc_dir = self.dir / "etc-wireguard"
        self.log_dir = self.dir / "log"
        for d in (self.run_dir, self.etc_dir, self.log_dir):
            d.mkdir(parents=True, mode=0o700, exist_ok=True)
        # The host's own /etc/hosts (netns.enter binds it): aircrew writes the zone's
        # names there, which must never reach the machine's file.
        hosts = self.etc_dir / "hosts"
        if not hosts.exists():
            try:
                hosts.write_text(Path("/etc/hosts").read_text())
            except OSError:
                hosts.write_text("127.0.0.1\tlocalhost\n::1\tlocalhost\n")
            hosts.chmod(0o644)
        self.owns_lab = False        # a standalone host: closing it tears its lab down
        self._popens: list[subprocess.Popen[bytes]] = []
        self._workers: list[Worker] = []
        self._links = 0

    def __repr__(self) -> str:
        where = f" {self.address}" if self.underlay else ""
        return f"<{type(self).__name__} {self.name}{where} ns={self.ns}>"

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the underlay (lab hosts) ------------------------------------------------------

    def cable(self) -> Underlay:
        """The host's underlay link; LabError for a host that has none (``add_host``)."""
        if self.underlay is None:
            raise LabError(f"host {self.name} has no underlay link")
        return self.underlay

    @property
    def interface(self) -> ipaddress.IPv4Interface:
        return self.cable().interface

    @property
    def address(self) -> str:
        """The host's primary underlay IPv4 address."""
        return str(self.cable().interface.ip)

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.cable().gateway

    def link_down(self) -> None:
        """Cut the underlay cable: the far (bridge) end goes down, the host keeps its config."""
        cable = self.cable()
        netns.ip("link", "set", cable.port, "down", ns=cable.port_ns)

    def link_up(self) -> None:
        cable = self.cable()
        netns.ip("link", "set", cable.port, "up", ns=cable.port_ns)

    def new_link_name(self) -> str:
        """A free name for one more link of this host: eth1, eth2, ..."""
        self._links += 1
        return f"eth{self._links}"

    # -- commands and processes ------------------------------------------------------

    def command(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` inside this host (for subprocess or by hand)."""
        return netns.enter(self.ns, self.run_dir, self.etc_dir, argv)

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 30.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in the host and wait for it; stdout/stderr are captured as text.
        ``check``: a non-zero status raises CommandError (its message carries stderr)."""
        proc = subprocess.run(self.command(argv), input=input, capture_output=True,
                              text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL if input is None else None)
        if check and proc.returncode != 0:
            raise CommandError(proc.returncode, [f"[{self.name}]", *argv],
                               proc.stdout, proc.stderr)
        return proc

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """``subprocess.Popen`` of a command in the host; ``close`` stops it."""
        proc = subprocess.Popen(self.command(argv), **kwargs)
        self._popens.append(proc)
        return proc

    def spawn(self, argv: Sequence[str], name: str,
              env: dict[str, str] | None = None, detach: bool = False) -> HostProcess:
        """Start a long-running command; output goes to <host dir>/log/<name>.log.

        The process leads its own process group and gets SIGKILL when the *thread* that
        spawned it exits (PR_SET_PDEATHSIG): spawn from a thread that outlives the process.
        ``detach``: it outlives the caller (a kept lab; the lab's teardown still ends it).
        """
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as out:
            popen = subprocess.Popen(
                self.command(argv), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                process_group=0, preexec_fn=None if detach else _die_with_parent)
        proc = HostProcess(self, name, popen, log_path)
        self.lab.register_process(proc)
        log.info("started %r: %s", proc, shlex.join(argv))
        return proc

    def worker(self, env: dict[str, str] | None = None) -> Worker:
        """A Python process in this host that runs calls on request (testbed.worker)."""
        from .worker import Worker
        worker = Worker(self, env)
        self._workers.append(worker)
        return worker

    def ping(self, address: str, count: int = 1, timeout: float = 1) -> bool:
        argv = ["ping", "-n", "-q", "-c", str(count), "-W", str(timeout)]
        if count > 1:
            argv += ["-i", "0.2"]
        proc = self.run([*argv, str(address)], check=False,
                        timeout=count * (timeout + 0.2) + 10)
        return proc.returncode == 0

    def pids(self) -> list[int]:
        """Every process inside the host's network namespace."""
        return netns.pids(self.ns)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "role": self.role, "ns": self.ns,
                               "run_dir": str(self.run_dir), "etc_dir": str(self.etc_dir)}
        if self.underlay is not None:
            out.update(address=self.address, gateway=str(self.gateway),
                       nat=self.nat.name if self.nat else None)
        return out

    def close(self) -> None:
        """Stop the host's workers and ``popen`` processes (spawned ones stop with the
        lab); a standalone host also removes its lab: namespace, processes, directories."""
        for worker in self._workers:
            worker.stop()
        self._workers.clear()
        for proc in self._popens:
            stop_popen(proc)
        self._popens.clear()
        if self.owns_lab:
            self.lab.teardown()


def connect(a: Host, b: Host, a_addr: str, b_addr: str, prefix_len: int = 24) -> tuple[str, str]:
    """Join two hosts with a veth pair and address both ends; returns the link names."""
    a_link, b_link = a.new_link_name(), b.new_link_name()
    a.run(["ip", "link", "add", a_link, "type", "veth", "peer", "name", b_link,
           "netns", b.ns])
    for host, link, addr in ((a, a_link, a_addr), (b, b_link, b_addr)):
        host.run(["ip", "addr", "add", f"{addr}/{prefix_len}", "dev", link])
        host.run(["ip", "link", "set", link, "up"])
    return a_link, b_link


def stop_popen(proc: subprocess.Popen[Any], timeout: float = 3.0) -> None:
    """Wait for a process to end by itself for ``timeout`` s, then kill it; close its pipes."""
    if proc.poll() is None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()

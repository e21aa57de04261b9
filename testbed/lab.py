"""A small internet on one Linux machine, for tests and by hand.

Every lab host is a network namespace plus, for each command run in it, a private mount
namespace where the host's own directories are bind-mounted on `/run/wireguard` and
`/etc/wireguard`, so each host's wireguard-go has its own control socket.

Addressing plan (all inside namespaces the lab creates; nothing touches the root namespace):

    <prefix>-wan   bridge br0, 203.0.113.1/24: the "internet" and everybody's default gateway;
                   it forwards nothing, so off-net destinations are simply unreachable
    public host    eth0 203.0.113.10 ... .99 on the wan bridge
    NAT router     wan0 203.0.113.100 ... .199 on the wan bridge,
                   bridge lan0 192.168.<n>.1/24 (n = 1, 2, ... per NAT, or `lan=` given)
    private host   eth0 192.168.<n>.10 ... on its NAT's lan0, default route via the NAT

NAT rules (nftables table `ip apexlab` in the router namespace): forward only lan0 -> wan0 and
established/related replies; the router itself accepts ping and its LAN, nothing else from
the wan; masquerade out of wan0. kind="cone" keeps the source port when it is free
(endpoint-independent mapping, address-and-port-dependent filtering: a port-restricted cone);
kind="symmetric" uses `masquerade fully-random`, a fresh random port per conntrack flow,
so two destinations see two different ports.

State of a running lab lives in /run/apexlab/<prefix>.json, so that
`python -m deploy.lab teardown <prefix>` cleans up after a killed owner process.
"""
from __future__ import annotations

import argparse
import atexit
import ctypes
import ipaddress
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/apexlab")
WAN_NET = ipaddress.IPv4Network("203.0.113.0/24")
WAN_GATEWAY = ipaddress.IPv4Address("203.0.113.1")
PUBLIC_HOSTS = range(10, 100)  # last octet of public hosts on the wan
NAT_ROUTERS = range(100, 200)  # last octet of NAT routers on the wan
NAT_KINDS = ("cone", "symmetric")
STOP_TIMEOUT = 5.0

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,11}$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,11}$")  # "v-" + name fits IFNAMSIZ
_TMP_PREFIX = "apexlab-"

# Runs inside `unshare --mount`: give the host its own /run/wireguard and /etc/wireguard,
# then exec the command so the PID the lab holds is the command itself.
_ENTER_SCRIPT = (
    'mkdir -p /run/wireguard /etc/wireguard'
    ' && mount --bind "$1" /run/wireguard'
    ' && mount --bind "$2" /etc/wireguard'
    ' && shift 2 && exec "$@"'
)

_NAT_RULES = """\
table ip apexlab {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan0" oifname "wan0" accept
    }
    chain input {
        type filter hook input priority filter; policy drop;
        iifname "lo" accept
        ct state established,related accept
        iifname "lan0" accept
        icmp type echo-request accept
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan0" %s
    }
}
"""
_MASQUERADE = {"cone": "masquerade", "symmetric": "masquerade fully-random"}

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


class LabError(Exception):
    """The lab could not be built or used as asked."""


class CommandError(subprocess.CalledProcessError):
    """A command in a lab host failed; its message carries stderr."""

    def __str__(self) -> str:
        detail = (self.stderr or self.stdout or "").strip()
        return f"{super().__str__()}: {detail}" if detail else super().__str__()


def host_command(ns: str, run_dir: Path | str, etc_dir: Path | str,
                 argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` inside a lab host (network + private mount namespace)."""
    return ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
            "sh", "-c", _ENTER_SCRIPT, "apexlab", str(run_dir), str(etc_dir), *argv]


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the thread that spawned it dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _ip(*args: str, ns: str | None = None) -> None:
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    _check(argv)


def _check(argv: Sequence[str], input: str | None = None) -> str:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise CommandError(proc.returncode, list(argv), proc.stdout, proc.stderr)
    return proc.stdout


def _sysctl(ns: str, key: str, value: str) -> None:
    _check(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"])


def _netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _process_start(pid: int) -> int | None:
    """Start time of a process (clock ticks after boot), to tell it from a reused PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, start: int | None) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and int(fields[19]) == start


def _kill_namespace(ns: str) -> None:
    """SIGKILL every process inside a namespace the lab created, and wait until they are gone."""
    killed: dict[int, int | None] = {}
    for _ in range(100):
        pids = _netns_pids(ns)
        if not pids:
            break
        for pid in pids:
            killed.setdefault(pid, _process_start(pid))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    else:
        log.warning("processes still alive in %s: %s", ns, _netns_pids(ns))
    # A process leaves its namespace before it has finished exiting.
    deadline = time.monotonic() + 2.0
    while any(_alive(pid, start) for pid, start in killed.items()):
        if time.monotonic() > deadline:
            log.warning("killed processes of %s still exiting: %s", ns, list(killed))
            break
        time.sleep(0.02)


def _destroy(namespaces: Sequence[str], root: Path | None, state_path: Path) -> list[str]:
    """Remove a lab's processes, namespaces, temp dir and state file; return the errors."""
    errors: list[str] = []
    for ns in namespaces:
        _kill_namespace(ns)
    existing = set(_netns_list())
    for ns in reversed(namespaces):
        if ns not in existing:
            continue
        proc = subprocess.run(["ip", "netns", "delete", ns], capture_output=True, text=True)
        if proc.returncode != 0:
            errors.append(f"ip netns delete {ns}: {proc.stderr.strip()}")
    if root is not None and root.name.startswith(_TMP_PREFIX):
        shutil.rmtree(root, ignore_errors=True)
    if errors:
        log.error("lab teardown incomplete: %s", "; ".join(errors))
    else:
        state_path.unlink(missing_ok=True)
    return errors


class LabProcess:
    """A long-running process inside a lab host, leader of its own process group."""

    def __init__(self, host: Host, name: str, popen: subprocess.Popen[bytes],
                 log_path: Path) -> None:
        self.host = host
        self.name = name
        self.log_path = log_path
        self._popen = popen

    def __repr__(self) -> str:
        return f"<LabProcess {self.name} pid={self.pid} on {self.host.name}>"

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
        """SIGTERM to the process group, SIGKILL if it is still there after `timeout`."""
        if self._popen.returncode is not None:
            return self._popen.returncode
        self._signal_group(signal.SIGTERM)
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%r ignored SIGTERM for %.1fs, killing it", self, timeout)
            return self.kill()

    def kill(self) -> int:
        """SIGKILL to the process group."""
        if self._popen.returncode is None:
            self._signal_group(signal.SIGKILL)
        return self._popen.wait()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _signal_group(self, sig: int) -> None:
        # Only called while the leader is not yet reaped, so the group id is still ours.
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass


class Host:
    """One lab host: a network namespace with a single underlay link (eth0 or wan0)."""

    role = "public"

    def __init__(self, lab: Lab, name: str, address: ipaddress.IPv4Interface,
                 gateway: ipaddress.IPv4Address, port_ns: str, port: str,
                 nat: Nat | None = None) -> None:
        self.lab = lab
        self.name = name
        self.nat = nat  # the NAT a private host sits behind
        if nat is not None:
            self.role = "private"
        self.ns = f"{lab.prefix}-{name}"
        self.interface = address
        self.gateway = gateway
        self._port_ns = port_ns  # the namespace holding the bridge end of our link
        self._port = port
        self.dir = lab.root / name
        self.run_dir = self.dir / "run-wireguard"
        self.etc_dir = self.dir / "etc-wireguard"
        self.log_dir = self.dir / "log"
        for d in (self.run_dir, self.etc_dir, self.log_dir):
            d.mkdir(parents=True, mode=0o700, exist_ok=True)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.address} ns={self.ns}>"

    @property
    def address(self) -> str:
        """The host's primary underlay IPv4 address."""
        return str(self.interface.ip)

    def command(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs `argv` inside this host (for subprocess or by hand)."""
        return host_command(self.ns, self.run_dir, self.etc_dir, argv)

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 30.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in the host and wait for it; stdout/stderr are captured as text."""
        proc = subprocess.run(self.command(argv), input=input, capture_output=True,
                              text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL if input is None else None)
        if check and proc.returncode != 0:
            raise CommandError(proc.returncode, [f"[{self.name}]", *argv],
                               proc.stdout, proc.stderr)
        return proc

    def spawn(self, argv: Sequence[str], name: str,
              env: dict[str, str] | None = None) -> LabProcess:
        """Start a long-running command in the host; output goes to <host dir>/log/<name>.log.

        The process leads its own process group and gets SIGKILL when the *thread* that
        spawned it exits (PR_SET_PDEATHSIG): spawn from a thread that outlives the process.
        """
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as out:
            popen = subprocess.Popen(
                self.command(argv), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                process_group=0, preexec_fn=_die_with_parent)
        proc = LabProcess(self, name, popen, log_path)
        self.lab._register_process(proc)
        log.info("started %r: %s", proc, shlex.join(argv))
        return proc

    def link_down(self) -> None:
        """Cut the underlay cable: the far (bridge) end goes down, the host keeps its config."""
        _ip("link", "set", self._port, "down", ns=self._port_ns)

    def link_up(self) -> None:
        _ip("link", "set", self._port, "up", ns=self._port_ns)

    def ping(self, address: str, count: int = 1, timeout: float = 1) -> bool:
        argv = ["ping", "-n", "-q", "-c", str(count), "-W", str(timeout)]
        if count > 1:
            argv += ["-i", "0.2"]
        proc = self.run([*argv, str(address)], check=False,
                        timeout=count * (timeout + 0.2) + 10)
        return proc.returncode == 0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "ns": self.ns, "address": self.address,
                "gateway": str(self.gateway), "nat": self.nat.name if self.nat else None,
                "run_dir": str(self.run_dir), "etc_dir": str(self.etc_dir)}


class Nat(Host):
    """A NAT router: wan0 on the wan bridge, bridge lan0 for its private hosts."""

    role = "nat"

    def __init__(self, lab: Lab, name: str, address: ipaddress.IPv4Interface,
                 kind: str, lan: ipaddress.IPv4Network) -> None:
        super().__init__(lab, name, address, WAN_GATEWAY, lab.wan_ns, f"v-{name}")
        self.kind = kind
        self.lan = lan
        self.lan_interface = ipaddress.IPv4Interface(f"{lan.network_address + 1}/{lan.prefixlen}")
        self.hosts: list[Host] = []

    @property
    def lan_address(self) -> str:
        return str(self.lan_interface.ip)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kind": self.kind, "lan": str(self.lan)}


class Lab:
    """A set of namespaces forming a small internet; `teardown()` removes all of it."""

    def __init__(self, prefix: str | None = None, *, handle_signals: bool = True) -> None:
        self.prefix = prefix or "ax" + secrets.token_hex(3)
        if not _PREFIX_RE.match(self.prefix):
            raise LabError(f"bad lab prefix {self.prefix!r} (want {_PREFIX_RE.pattern})")
        self.wan_ns = f"{self.prefix}-wan"
        self.hosts: dict[str, Host] = {}
        self.root = Path()
        self._namespaces: list[str] = []
        self._processes: list[LabProcess] = []
        self._lock = threading.RLock()
        self._closed = False
        self._owner = {"pid": os.getpid(), "start": _process_start(os.getpid())}
        self.state_path = STATE_DIR / f"{self.prefix}.json"
        self._claim_prefix()  # raises before anything exists that teardown would remove
        _track(self, handle_signals)
        try:
            self.root = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{self.prefix}-"))
            self._save()
            self._build_wan()
        except BaseException:
            self.teardown()
            raise
        log.info("lab %s created (state %s)", self.prefix, self.state_path)

    def __repr__(self) -> str:
        return f"<Lab {self.prefix} hosts={list(self.hosts)}>"

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    @property
    def namespaces(self) -> list[str]:
        return list(self._namespaces)

    @property
    def processes(self) -> list[LabProcess]:
        return list(self._processes)

    def nats(self) -> list[Nat]:
        return [h for h in self.hosts.values() if isinstance(h, Nat)]

    # -- building ------------------------------------------------------------------------

    def add_public_host(self, name: str) -> Host:
        """A host on the wan: eth0 203.0.113.x/24, default route via 203.0.113.1."""
        used = {h.interface.ip for h in self.hosts.values()}
        address = self._free_wan_address(PUBLIC_HOSTS, used)
        ns = self._new_namespace(name)
        host = Host(self, name, address, WAN_GATEWAY, self.wan_ns, f"v-{name}")
        self.hosts[name] = host
        self._link(host, "eth0", self.wan_ns, "br0")
        self._save()
        log.info("lab %s: public host %s %s (%s)", self.prefix, name, host.address, ns)
        return host

    def add_nat(self, name: str, kind: str = "cone",
                lan: str | ipaddress.IPv4Network | None = None) -> Nat:
        """A NAT router with a wan address and a private LAN (default 192.168.<n>.0/24)."""
        if kind not in NAT_KINDS:
            raise LabError(f"unknown NAT kind {kind!r} (want one of {NAT_KINDS})")
        nats = self.nats()
        lan_net = ipaddress.IPv4Network(lan or f"192.168.{len(nats) + 1}.0/24")
        if not lan_net.is_private or lan_net.num_addresses < 16:
            raise LabError(f"NAT LAN {lan_net} must be a private range of /28 or larger")
        used = {h.interface.ip for h in self.hosts.values()}
        address = self._free_wan_address(NAT_ROUTERS, used)
        ns = self._new_namespace(name)
        nat = Nat(self, name, address, kind, lan_net)
        self.hosts[name] = nat
        self._link(nat, "wan0", self.wan_ns, "br0")
        _ip("link", "add", "lan0", "type", "bridge", ns=ns)
        _ip("addr", "add", str(nat.lan_interface), "dev", "lan0", ns=ns)
        _ip("link", "set", "lan0", "up", ns=ns)
        _sysctl(ns, "net.ipv4.ip_forward", "1")
        self._apply_nat_rules(nat)
        self._save()
        log.info("lab %s: %s NAT %s %s lan %s", self.prefix, kind, name, nat.address, lan_net)
        return nat

    def add_private_host(self, name: str, nat: Nat) -> Host:
        """A host on `nat`'s LAN (.10, .11, ...) with its default route via the NAT."""
        if self.hosts.get(nat.name) is not nat:
            raise LabError(f"{nat!r} is not a NAT of lab {self.prefix}")
        index = 10 + len(nat.hosts)
        if index >= nat.lan.num_addresses - 1:
            raise LabError(f"NAT {nat.name}: LAN {nat.lan} is full")
        address = ipaddress.IPv4Interface(f"{nat.lan.network_address + index}/{nat.lan.prefixlen}")
        ns = self._new_namespace(name)
        host = Host(self, name, address, nat.lan_interface.ip, nat.ns, f"v-{name}", nat)
        self.hosts[name] = host
        nat.hosts.append(host)
        self._link(host, "eth0", nat.ns, "lan0")
        self._save()
        log.info("lab %s: private host %s %s behind %s", self.prefix, name, host.address, nat.name)
        return host

    def _build_wan(self) -> None:
        ns = self._new_namespace("wan", reserved_ok=True)
        _ip("link", "add", "br0", "type", "bridge", ns=ns)
        _ip("addr", "add", f"{WAN_GATEWAY}/{WAN_NET.prefixlen}", "dev", "br0", ns=ns)
        _ip("link", "set", "br0", "up", ns=ns)

    def _new_namespace(self, name: str, reserved_ok: bool = False) -> str:
        with self._lock:
            if self._closed:
                raise LabError(f"lab {self.prefix} is torn down")
            if not _NAME_RE.match(name) or (name == "wan" and not reserved_ok):
                raise LabError(f"bad host name {name!r} (want {_NAME_RE.pattern}, not 'wan')")
            ns = f"{self.prefix}-{name}"
            if ns in self._namespaces:
                raise LabError(f"lab {self.prefix} already has a host {name!r}")
            self._namespaces.append(ns)  # recorded first: teardown covers a half-made one
            self._save()
        _check(["ip", "netns", "add", ns])
        _ip("link", "set", "lo", "up", ns=ns)
        return ns

    def _link(self, host: Host, ifname: str, bridge_ns: str, bridge: str) -> None:
        """A veth from the host (ifname) to a bridge port in bridge_ns, addressed and routed."""
        _ip("link", "add", ifname, "type", "veth", "peer", "name", host._port,
            "netns", bridge_ns, ns=host.ns)
        _ip("link", "set", host._port, "master", bridge, "up", ns=bridge_ns)
        _ip("addr", "add", str(host.interface), "dev", ifname, ns=host.ns)
        _ip("link", "set", ifname, "up", ns=host.ns)
        _ip("route", "add", "default", "via", str(host.gateway), ns=host.ns)

    def _apply_nat_rules(self, nat: Nat) -> None:
        _check(["ip", "netns", "exec", nat.ns, "nft", "-f", "-"],
               input=_NAT_RULES % _MASQUERADE[nat.kind])

    @staticmethod
    def _free_wan_address(octets: range, used: set[Any]) -> ipaddress.IPv4Interface:
        for octet in octets:
            ip = WAN_NET.network_address + octet
            if ip not in used:
                return ipaddress.IPv4Interface(f"{ip}/{WAN_NET.prefixlen}")
        raise LabError(f"no free wan address in .{octets.start}-.{octets.stop - 1}")

    # -- processes and state ---------------------------------------------------------------

    def _register_process(self, proc: LabProcess) -> None:
        with self._lock:
            self._processes.append(proc)
            self._save()

    def _claim_prefix(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        taken = [ns for ns in _netns_list() if ns.startswith(f"{self.prefix}-")]
        if taken:
            raise LabError(f"lab prefix {self.prefix} in use by namespaces {taken}")
        try:
            with open(self.state_path, "x") as f:
                json.dump({"prefix": self.prefix, "owner": self._owner}, f)
        except FileExistsError:
            raise LabError(f"lab {self.prefix} exists ({self.state_path}); "
                           f"python -m deploy.lab teardown {self.prefix}") from None

    def _state(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "owner": self._owner,
            "root": str(self.root),
            "namespaces": self._namespaces,
            "hosts": {name: h.describe() for name, h in self.hosts.items()},
            "processes": [{"name": p.name, "host": p.host.name, "pid": p.pid}
                          for p in self._processes],
        }

    def _save(self) -> None:
        with self._lock:
            if self._closed:
                return
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._state(), indent=2) + "\n")
            tmp.replace(self.state_path)

    def detach(self) -> None:
        """Leave the lab running after this process exits (for `up --detach`)."""
        with self._lock:
            self._owner = {"pid": None, "start": None}
            self._save()
            self._closed = True
        atexit.unregister(self._atexit)
        _untrack(self)

    # -- teardown --------------------------------------------------------------------------

    def teardown(self) -> None:
        """Remove everything the lab created. Safe to call twice and after a failed set-up."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self._atexit)
        _untrack(self)
        log.info("lab %s: tearing down", self.prefix)
        self._stop_processes()
        _destroy(self._namespaces, self.root if self.root.name else None, self.state_path)

    def _stop_processes(self) -> None:
        running = [p for p in self._processes if p._popen.returncode is None]
        for proc in running:
            proc._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in running:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()

    def _atexit(self) -> None:
        if os.getpid() == self._owner["pid"]:  # not in a forked child
            self.teardown()


# -- labs alive in this process, torn down on SIGTERM / SIGHUP ---------------------------------

_LIVE: set[Lab] = set()
_PREVIOUS: dict[int, Any] = {}


def _track(lab: Lab, handle_signals: bool) -> None:
    _LIVE.add(lab)
    atexit.register(lab._atexit)
    if not handle_signals or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if sig not in _PREVIOUS and signal.getsignal(sig) == signal.SIG_DFL:
            _PREVIOUS[sig] = signal.signal(sig, _on_signal)


def _untrack(lab: Lab) -> None:
    _LIVE.discard(lab)


def _on_signal(signum: int, frame: object) -> None:
    log.warning("signal %d: tearing down %d lab(s)", signum, len(_LIVE))
    for lab in list(_LIVE):
        lab.teardown()
    signal.signal(signum, _PREVIOUS.pop(signum, signal.SIG_DFL))
    os.kill(os.getpid(), signum)


# -- command line ------------------------------------------------------------------------------

def build_demo(lab: Lab) -> dict[str, Host]:
    """The demo topology: tower + 2 public hosts, a cone and a symmetric NAT with one spoke each."""
    lab.add_public_host("tower")
    lab.add_public_host("pub1")
    lab.add_public_host("pub2")
    nat1 = lab.add_nat("nat1", kind="cone")
    nat2 = lab.add_nat("nat2", kind="symmetric")
    lab.add_private_host("priv1", nat1)
    lab.add_private_host("priv2", nat2)
    return dict(lab.hosts)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("unreadable lab state %s: %s", path, e)
        return {"prefix": path.stem}


def _owner_alive(state: dict[str, Any]) -> bool:
    owner = state.get("owner") or {}
    pid = owner.get("pid")
    return bool(pid) and _process_start(pid) == owner.get("start")


def _states() -> list[dict[str, Any]]:
    return [_read_state(p) for p in sorted(STATE_DIR.glob("*.json"))] if STATE_DIR.is_dir() else []


def teardown_prefix(prefix: str) -> list[str]:
    """Tear down a lab by prefix from its state file (or, lacking one, by namespace names)."""
    if not _PREFIX_RE.match(prefix):
        raise LabError(f"bad lab prefix {prefix!r}")
    path = STATE_DIR / f"{prefix}.json"
    state = _read_state(path) if path.exists() else {"prefix": prefix}
    namespaces = [ns for ns in state.get("namespaces", []) if ns.startswith(f"{prefix}-")]
    namespaces += [ns for ns in _netns_list()
                   if ns.startswith(f"{prefix}-") and ns not in namespaces]
    root = Path(state["root"]) if state.get("root") else None
    if root is not None and root.parent != Path(tempfile.gettempdir()):
        root = None
    return _destroy(namespaces, root, path)


def _role(host: dict[str, Any]) -> str:
    if host["role"] == "nat":
        return f"nat {host['kind']} {host['lan']}"
    if host["role"] == "private":
        return f"private ({host['nat']})"
    return host["role"]


def _print_lab(lab: Lab) -> None:
    print(f"lab {lab.prefix} is up (state: {lab.state_path})")
    print(f"  {'host':8} {'role':28} {'namespace':18} {'address':15} gateway")
    for h in lab.hosts.values():
        print(f"  {h.name:8} {_role(h.describe()):28} {h.ns:18} {h.address:15} {h.gateway}")
    first = next(iter(lab.hosts.values()))
    print("enter a host:")
    print(f"  {sys.executable} -m deploy.lab shell {lab.prefix} {first.name} [-- command ...]")
    print(f"  or: {shlex.join(first.command(['bash']))}")
    print(f"tear down:  {sys.executable} -m deploy.lab teardown {lab.prefix}")


def _cmd_up(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    lab = Lab(args.prefix)
    try:
        build_demo(lab)
    except BaseException:
        lab.teardown()
        raise
    _print_lab(lab)
    if args.detach:
        lab.detach()
        return 0
    print("(Ctrl-C tears the lab down)", flush=True)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        print()
    finally:
        lab.teardown()
    return 0


def _cmd_teardown(args: argparse.Namespace) -> int:
    if args.all:
        prefixes = []
        for state in _states():
            if _owner_alive(state) and not args.force:
                print(f"{state['prefix']}: owner pid {state['owner']['pid']} alive, skipped "
                      "(--force to tear it down anyway)")
            else:
                prefixes.append(state["prefix"])
    elif args.prefix:
        prefixes = [args.prefix]
    else:
        raise SystemExit("teardown: give a prefix or --all")
    failed = False
    for prefix in prefixes:
        errors = teardown_prefix(prefix)
        failed |= bool(errors)
        print(f"{prefix}: {'FAILED: ' + '; '.join(errors) if errors else 'torn down'}")
    return 1 if failed else 0


def _cmd_list(args: argparse.Namespace) -> int:
    existing = set(_netns_list())
    for state in _states():
        owner = state.get("owner") or {}
        status = ("detached" if not owner.get("pid") else
                  f"owner {owner['pid']} {'alive' if _owner_alive(state) else 'dead'}")
        namespaces = state.get("namespaces", [])
        present = sum(ns in existing for ns in namespaces)
        print(f"{state['prefix']}: {status}, {present}/{len(namespaces)} namespaces")
        for h in state.get("hosts", {}).values():
            print(f"  {h['name']:8} {_role(h):28} {h['address']}")
    return 0


def _cmd_shell(args: argparse.Namespace) -> int:
    state = _read_state(STATE_DIR / f"{args.prefix}.json")
    host = state.get("hosts", {}).get(args.host)
    if host is None:
        raise SystemExit(f"lab {args.prefix} has no host {args.host!r}")
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        argv = ["bash", "--norc", "-i"]
        os.environ["PS1"] = f"[{args.prefix} {args.host}] \\w\\$ "
    os.execvp("ip", host_command(host["ns"], host["run_dir"], host["etc_dir"], argv))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.lab",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build the demo topology (Ctrl-C tears it down)")
    up.add_argument("--prefix")
    up.add_argument("--detach", action="store_true", help="leave the lab running and exit")
    up.set_defaults(func=_cmd_up)
    down = sub.add_parser("teardown", help="remove a lab left behind")
    down.add_argument("prefix", nargs="?")
    down.add_argument("--all", action="store_true", help="every lab whose owner is gone")
    down.add_argument("--force", action="store_true",
                      help="with --all: also labs whose owner process is alive")
    down.set_defaults(func=_cmd_teardown)
    sub.add_parser("list", help="labs on this machine").set_defaults(func=_cmd_list)
    shell = sub.add_parser("shell", help="a shell (or a command) inside a lab host")
    shell.add_argument("prefix")
    shell.add_argument("host")
    shell.add_argument("argv", nargs=argparse.REMAINDER)
    shell.set_defaults(func=_cmd_shell)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except LabError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    sys.exit(main())

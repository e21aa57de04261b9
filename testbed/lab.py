"""A small internet on one Linux machine, for tests, benchmarks, the demo and by hand.

A lab is a set of hosts (``testbed.host.Host``: a network namespace plus a private
mount namespace each), and by default a wan to cable them to.

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
so two destinations see two different ports. kind="router" is a Linux router that
masquerades (like "cone") with **no input firewall**: a peer's packet that arrives before
its own node sent there leaves a conntrack entry that makes the router pick another port
for its node's flow to that peer (a port clash), so hole punching fails although the NAT
is not symmetric. ``Nat.set_kind`` swaps the rules and flushes conntrack, as a router
restart would.

``standalone(tag)``: a host that is a lab of its own, without a wan (``Lab(wan=False)``),
for tests that cable one or two hosts themselves (``testbed.host.connect``).

State of a running lab lives in /run/apexlab/<prefix>.json, so that
`python -m testbed.lab teardown <prefix>` cleans up after a killed owner process.
"""
from __future__ import annotations

import argparse
import atexit
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

from . import netns
from .errors import LabError
from .host import Host, HostProcess, Underlay

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/apexlab")
WAN_NET = ipaddress.IPv4Network("203.0.113.0/24")
WAN_GATEWAY = ipaddress.IPv4Address("203.0.113.1")
PUBLIC_HOSTS = range(10, 100)  # last octet of public hosts on the wan
NAT_ROUTERS = range(100, 200)  # last octet of NAT routers on the wan
NAT_KINDS = ("cone", "symmetric", "router")
STOP_TIMEOUT = 5.0
COMMAND = "python -m testbed.lab"

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,11}$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,11}$")  # "v-" + name fits IFNAMSIZ
_TMP_PREFIX = "apexlab-"

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
_ROUTER_RULES = """\
table ip apexlab {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan0" oifname "wan0" accept
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan0" masquerade
    }
}
"""
_MASQUERADE = {"cone": "masquerade", "symmetric": "masquerade fully-random"}


def nat_rules(kind: str) -> str:
    """The nftables table of a NAT router of ``kind``."""
    return _ROUTER_RULES if kind == "router" else _NAT_RULES % _MASQUERADE[kind]


def _destroy(namespaces: Sequence[str], root: Path | None, state_path: Path) -> list[str]:
    """Remove a lab's processes, namespaces, temp dir and state file; return the errors."""
    for ns in namespaces:
        netns.empty(ns)
    existing = set(netns.names())
    errors = [e for e in (netns.delete(ns) for ns in reversed(namespaces) if ns in existing)
              if e is not None]
    if root is not None and root.name.startswith(_TMP_PREFIX):
        shutil.rmtree(root, ignore_errors=True)
    if errors:
        log.error("lab teardown incomplete: %s", "; ".join(errors))
    else:
        state_path.unlink(missing_ok=True)
    return errors


class Nat(Host):
    """A NAT router: wan0 on the wan bridge, bridge lan0 for its private hosts."""

    role = "nat"

    def __init__(self, lab: Lab, name: str, ns: str, underlay: Underlay, kind: str,
                 lan: ipaddress.IPv4Network) -> None:
        super().__init__(lab, name, ns, underlay)
        self.kind = kind
        self.lan = lan
        self.lan_interface = ipaddress.IPv4Interface(f"{lan.network_address + 1}/{lan.prefixlen}")
        self.hosts: list[Host] = []

    @property
    def lan_address(self) -> str:
        return str(self.lan_interface.ip)

    def set_kind(self, kind: str) -> None:
        """Become a NAT of another kind, as a router restarted with other rules would:
        the rules are swapped in one transaction and the conntrack table is flushed."""
        if kind not in NAT_KINDS:
            raise LabError(f"unknown NAT kind {kind!r} (want one of {NAT_KINDS})")
        netns.check(["ip", "netns", "exec", self.ns, "nft", "-f", "-"],
                    input="delete table ip apexlab\n" + nat_rules(kind))
        netns.check(["ip", "netns", "exec", self.ns, "conntrack", "-F"])
        self.kind = kind

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kind": self.kind, "lan": str(self.lan)}


class Lab:
    """A set of namespaces forming a small internet; ``teardown()`` removes all of it.

    ``wan=False``: no wan bridge; hosts come only from ``add_host`` (not cabled).
    """

    def __init__(self, prefix: str | None = None, *, wan: bool = True,
                 handle_signals: bool = True) -> None:
        self.prefix = prefix or ("ax" if wan else "tb") + secrets.token_hex(3)
        if not _PREFIX_RE.match(self.prefix):
            raise LabError(f"bad lab prefix {self.prefix!r} (want {_PREFIX_RE.pattern})")
        self.wan_ns = f"{self.prefix}-wan" if wan else None
        self.hosts: dict[str, Host] = {}
        self.root = Path()
        self._namespaces: list[str] = []
        self._processes: list[HostProcess] = []
        self._lock = threading.RLock()
        self._closed = False
        self._owner = {"pid": os.getpid(), "start": netns.process_start(os.getpid())}
        self.state_path = STATE_DIR / f"{self.prefix}.json"
        self._claim_prefix()  # raises before anything exists that teardown would remove
        _track(self, handle_signals)
        try:
            self.root = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{self.prefix}-"))
            self._save()
            if wan:
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
    def processes(self) -> list[HostProcess]:
        return list(self._processes)

    def nats(self) -> list[Nat]:
        return [h for h in self.hosts.values() if isinstance(h, Nat)]

    # -- building ------------------------------------------------------------------------

    def add_host(self, name: str) -> Host:
        """A host with no link but its loopback (cable it with ``testbed.host.connect``)."""
        ns = self._new_namespace(name)
        host = self.hosts[name] = Host(self, name, ns)
        self._save()
        log.info("lab %s: host %s (%s)", self.prefix, name, ns)
        return host

    def add_public_host(self, name: str) -> Host:
        """A host on the wan: eth0 203.0.113.x/24, default route via 203.0.113.1."""
        wan_ns = self._wan()
        address = self._free_wan_address(PUBLIC_HOSTS)
        ns = self._new_namespace(name)
        host = Host(self, name, ns, Underlay(address, WAN_GATEWAY, wan_ns, f"v-{name}"))
        self.hosts[name] = host
        self._link(host, "eth0", "br0")
        self._save()
        log.info("lab %s: public host %s %s (%s)", self.prefix, name, host.address, ns)
        return host

    def add_nat(self, name: str, kind: str = "cone",
                lan: str | ipaddress.IPv4Network | None = None) -> Nat:
        """A NAT router with a wan address and a private LAN (default 192.168.<n>.0/24)."""
        if kind not in NAT_KINDS:
            raise LabError(f"unknown NAT kind {kind!r} (want one of {NAT_KINDS})")
        wan_ns = self._wan()
        lan_net = ipaddress.IPv4Network(lan or f"192.168.{len(self.nats()) + 1}.0/24")
        if not lan_net.is_private or lan_net.num_addresses < 16:
            raise LabError(f"NAT LAN {lan_net} must be a private range of /28 or larger")
        address = self._free_wan_address(NAT_ROUTERS)
        ns = self._new_namespace(name)
        nat = Nat(self, name, ns, Underlay(address, WAN_GATEWAY, wan_ns, f"v-{name}"),
                  kind, lan_net)
        self.hosts[name] = nat
        self._link(nat, "wan0", "br0")
        netns.ip("link", "add", "lan0", "type", "bridge", ns=ns)
        netns.ip("addr", "add", str(nat.lan_interface), "dev", "lan0", ns=ns)
        netns.ip("link", "set", "lan0", "up", ns=ns)
        netns.sysctl(ns, "net.ipv4.ip_forward", "1")
        self._apply_nat_rules(nat)
        self._save()
        log.info("lab %s: %s NAT %s %s lan %s", self.prefix, kind, name, nat.address, lan_net)
        return nat

    def add_private_host(self, name: str, nat: Nat) -> Host:
        """A host on ``nat``'s LAN (.10, .11, ...) with its default route via the NAT."""
        if self.hosts.get(nat.name) is not nat:
            raise LabError(f"{nat!r} is not a NAT of lab {self.prefix}")
        index = 10 + len(nat.hosts)
        if index >= nat.lan.num_addresses - 1:
            raise LabError(f"NAT {nat.name}: LAN {nat.lan} is full")
        address = ipaddress.IPv4Interface(f"{nat.lan.network_address + index}/{nat.lan.prefixlen}")
        ns = self._new_namespace(name)
        host = Host(self, name, ns, Underlay(address, nat.lan_interface.ip, nat.ns, f"v-{name}"),
                    nat=nat)
        self.hosts[name] = host
        nat.hosts.append(host)
        self._link(host, "eth0", "lan0")
        self._save()
        log.info("lab %s: private host %s %s behind %s", self.prefix, name, host.address, nat.name)
        return host

    def _wan(self) -> str:
        if self.wan_ns is None:
            raise LabError(f"lab {self.prefix} has no wan (made with wan=False)")
        return self.wan_ns

    def _build_wan(self) -> None:
        ns = self._new_namespace("wan", reserved_ok=True)
        netns.ip("link", "add", "br0", "type", "bridge", ns=ns)
        netns.ip("addr", "add", f"{WAN_GATEWAY}/{WAN_NET.prefixlen}", "dev", "br0", ns=ns)
        netns.ip("link", "set", "br0", "up", ns=ns)

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
        netns.add(ns)
        return ns

    @staticmethod
    def _link(host: Host, ifname: str, bridge: str) -> None:
        """A veth from the host (ifname) to a bridge port, addressed and routed."""
        cable = host.cable()
        netns.ip("link", "add", ifname, "type", "veth", "peer", "name", cable.port,
                 "netns", cable.port_ns, ns=host.ns)
        netns.ip("link", "set", cable.port, "master", bridge, "up", ns=cable.port_ns)
        netns.ip("addr", "add", str(cable.interface), "dev", ifname, ns=host.ns)
        netns.ip("link", "set", ifname, "up", ns=host.ns)
        netns.ip("route", "add", "default", "via", str(cable.gateway), ns=host.ns)

    def _apply_nat_rules(self, nat: Nat) -> None:
        netns.check(["ip", "netns", "exec", nat.ns, "nft", "-f", "-"],
                    input=nat_rules(nat.kind))

    def _free_wan_address(self, octets: range) -> ipaddress.IPv4Interface:
        used = {h.interface.ip for h in self.hosts.values() if h.underlay is not None}
        for octet in octets:
            ip = WAN_NET.network_address + octet
            if ip not in used:
                return ipaddress.IPv4Interface(f"{ip}/{WAN_NET.prefixlen}")
        raise LabError(f"no free wan address in .{octets.start}-.{octets.stop - 1}")

    # -- processes and state ---------------------------------------------------------------

    def register_process(self, proc: HostProcess) -> None:
        """Note a process spawned in one of our hosts (stopped by ``teardown``)."""
        with self._lock:
            self._processes.append(proc)
            self._save()

    def _claim_prefix(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        taken = [ns for ns in netns.names() if ns.startswith(f"{self.prefix}-")]
        if taken:
            raise LabError(f"lab prefix {self.prefix} in use by namespaces {taken}")
        try:
            with open(self.state_path, "x") as f:
                json.dump({"prefix": self.prefix, "owner": self._owner}, f)
        except FileExistsError:
            raise LabError(f"lab {self.prefix} exists ({self.state_path}); "
                           f"{COMMAND} teardown {self.prefix}") from None

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
        for host in list(self.hosts.values()):
            host.owns_lab = False
            host.close()      # its workers and popen'd processes
        self._stop_processes()
        _destroy(self._namespaces, self.root if self.root.name else None, self.state_path)

    def _stop_processes(self) -> None:
        running = [p for p in self._processes if p.running]
        for proc in running:
            proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in running:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()

    def _atexit(self) -> None:
        if os.getpid() == self._owner["pid"]:  # not in a forked child
            self.teardown()


def standalone(tag: str = "h") -> Host:
    """A host that is a lab of its own (no wan); closing the host removes the lab."""
    lab = Lab(wan=False)
    try:
        host = lab.add_host(tag)
    except BaseException:
        lab.teardown()
        raise
    host.owns_lab = True
    return host


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
    """The `up` topology: tower + 2 public hosts, a cone and a symmetric NAT with one spoke each."""
    lab.add_public_host("tower")
    lab.add_public_host("pub1")
    lab.add_public_host("pub2")
    nat1 = lab.add_nat("nat1", kind="cone")
    nat2 = lab.add_nat("nat2", kind="symmetric")
    lab.add_private_host("priv1", nat1)
    lab.add_private_host("priv2", nat2)
    return dict(lab.hosts)


def read_state(path: Path) -> dict[str, Any]:
    """A lab's state file ({"prefix": ...} alone when it cannot be read)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("unreadable lab state %s: %s", path, e)
        return {"prefix": path.stem}


def _owner_alive(state: dict[str, Any]) -> bool:
    owner = state.get("owner") or {}
    pid = owner.get("pid")
    return bool(pid) and netns.process_start(pid) == owner.get("start")


def _states() -> list[dict[str, Any]]:
    return [read_state(p) for p in sorted(STATE_DIR.glob("*.json"))] if STATE_DIR.is_dir() else []


def teardown_prefix(prefix: str) -> list[str]:
    """Tear down a lab by prefix from its state file (or, lacking one, by namespace names)."""
    if not _PREFIX_RE.match(prefix):
        raise LabError(f"bad lab prefix {prefix!r}")
    path = STATE_DIR / f"{prefix}.json"
    state = read_state(path) if path.exists() else {"prefix": prefix}
    namespaces = [ns for ns in state.get("namespaces", []) if ns.startswith(f"{prefix}-")]
    namespaces += [ns for ns in netns.names()
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
    print(f"  {sys.executable} -m testbed.lab shell {lab.prefix} {first.name} [-- command ...]")
    print(f"  or: {shlex.join(first.command(['bash']))}")
    print(f"tear down:  {sys.executable} -m testbed.lab teardown {lab.prefix}")


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
    existing = set(netns.names())
    for state in _states():
        owner = state.get("owner") or {}
        status = ("detached" if not owner.get("pid") else
                  f"owner {owner['pid']} {'alive' if _owner_alive(state) else 'dead'}")
        namespaces = state.get("namespaces", [])
        present = sum(ns in existing for ns in namespaces)
        print(f"{state['prefix']}: {status}, {present}/{len(namespaces)} namespaces")
        for h in state.get("hosts", {}).values():
            print(f"  {h['name']:8} {_role(h):28} {h.get('address', '-')}")
    return 0


def _cmd_shell(args: argparse.Namespace) -> int:
    state = read_state(STATE_DIR / f"{args.prefix}.json")
    host = state.get("hosts", {}).get(args.host)
    if host is None:
        raise SystemExit(f"lab {args.prefix} has no host {args.host!r}")
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        argv = ["bash", "--norc", "-i"]
        os.environ["PS1"] = f"[{args.prefix} {args.host}] \\w\\$ "
    os.execvp("ip", netns.enter(host["ns"], host["run_dir"], host["etc_dir"], argv))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build a lab: tower, 2 public hosts, 2 NATs with one "
                                   "private host each (Ctrl-C tears it down)")
    up.add_argument("--prefix")
    up.add_argument("--detach", action="store_true", help="leave the lab running and exit")
    up.set_defaults(func=_cmd_up)
    down = sub.add_parser("teardown", help="remove a lab left behind (also a test's hosts)")
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

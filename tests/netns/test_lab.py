"""The network lab: real namespaces, NAT behaviour, wireguard-go isolation, clean teardown."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed import lab as labmod
from testbed import netns
from testbed.errors import LabError
from testbed.lab import Lab

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("ip", "nft", "unshare", "ping", "wireguard-go", "wg")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/net/tun")
                       or not all(shutil.which(t) for t in TOOLS),
                       reason="needs root, /dev/net/tun and " + ", ".join(TOOLS)),
]

# A UDP echo server that answers each datagram with the source "ip:port" it saw.
ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(f"{peer[0]}:{peer[1]}".encode(), peer)
"""

# From one fixed source port (argv 2), ask each echo server (ip:port, argv 3...) what it
# saw, retrying for argv 1 seconds each.
PROBE = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[2])))
s.settimeout(0.2)
for target in sys.argv[3:]:
    ip, port = target.rsplit(":", 1)
    seen, deadline = "timeout", time.monotonic() + float(sys.argv[1])
    while seen == "timeout" and time.monotonic() < deadline:
        s.sendto(b"probe", (ip, int(port)))
        try:
            while True:
                data, peer = s.recvfrom(2048)
                if peer == (ip, int(port)):
                    seen = data.decode()
                    break
        except socket.timeout:
            pass
    print(seen, flush=True)
"""


def probe(host, src_port: int, *targets: str, wait: float = 3.0) -> list[str]:
    out = host.run([sys.executable, "-c", PROBE, str(wait), str(src_port), *targets],
                   timeout=wait * len(targets) + 10).stdout
    return out.split()


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def net():
    with Lab() as lab:
        lab.add_public_host("pub1")
        lab.add_public_host("pub2")
        cone = lab.add_nat("cone", kind="cone")
        sym = lab.add_nat("sym", kind="symmetric")
        lab.add_private_host("privc", cone)
        lab.add_private_host("privs", sym)
        for name in ("pub1", "pub2"):
            lab.hosts[name].spawn([sys.executable, "-c", ECHO, "7000"], "echo")
        yield lab


def h(lab: Lab, name: str):
    return lab.hosts[name]


def test_addressing_plan(net):
    assert h(net, "pub1").address == "203.0.113.10"
    assert h(net, "cone").address == "203.0.113.100"
    assert str(h(net, "cone").lan) == "192.168.1.0/24"
    assert h(net, "privs").address == "192.168.2.10"
    assert h(net, "privc").nat is h(net, "cone")
    assert all(ns.startswith(net.prefix + "-") for ns in net.namespaces)


def test_public_hosts_reach_each_other(net):
    assert h(net, "pub1").ping(h(net, "pub2").address)
    assert h(net, "pub2").ping(h(net, "pub1").address)


def test_private_host_reaches_public_host_through_nat(net):
    pub1, privc = h(net, "pub1"), h(net, "privc")
    assert privc.ping(pub1.address)
    # The public side sees the NAT's address, not the private one.
    (seen,) = probe(privc, 41000, f"{pub1.address}:7000")
    assert seen.split(":")[0] == h(net, "cone").address


def test_no_unsolicited_inbound(net):
    pub1, cone, privc = h(net, "pub1"), h(net, "cone"), h(net, "privc")
    privc.spawn([sys.executable, "-c", ECHO, "5000"], "echo5000")
    # Positive control: the private echo server answers on its LAN.
    assert probe(cone, 42000, f"{privc.address}:5000") == [f"{cone.lan_address}:42000"]
    # From the wan: nothing is forwarded to the NAT's public address ...
    assert probe(pub1, 42001, f"{cone.address}:5000", wait=1) == ["timeout"]
    # ... nor routed in by private address, even with a route pointing at the NAT.
    pub1.run(["ip", "route", "add", str(cone.lan), "via", cone.address])
    try:
        assert not pub1.ping(privc.address)
        assert probe(pub1, 42002, f"{privc.address}:5000", wait=1) == ["timeout"]
    finally:
        pub1.run(["ip", "route", "del", str(cone.lan)])


def test_private_hosts_behind_different_nats_are_isolated(net):
    privc, privs = h(net, "privc"), h(net, "privs")
    assert not privc.ping(privs.address)
    assert not privs.ping(privc.address)


def test_cone_nat_keeps_the_mapping_per_source(net):
    targets = [f"{h(net, n).address}:7000" for n in ("pub1", "pub2")]
    seen = probe(h(net, "privc"), 43000, *targets)
    assert seen[0] == seen[1] == f"{h(net, 'cone').address}:43000"


def test_symmetric_nat_maps_per_destination(net):
    targets = [f"{h(net, n).address}:7000" for n in ("pub1", "pub2")]
    seen = probe(h(net, "privs"), 43000, *targets)
    assert "timeout" not in seen
    assert {s.split(":")[0] for s in seen} == {h(net, "sym").address}
    assert seen[0] != seen[1], seen


def test_link_down_and_up(net):
    pub1, pub2, privc = h(net, "pub1"), h(net, "pub2"), h(net, "privc")
    pub2.link_down()
    try:
        assert not pub1.ping(pub2.address)
    finally:
        pub2.link_up()
    assert pub1.ping(pub2.address, count=3)
    privc.link_down()
    try:
        assert not privc.ping(pub1.address)
    finally:
        privc.link_up()
    assert privc.ping(pub1.address, count=3)


def start_wg(host, address: str) -> str:
    """wireguard-go wg0 in the host, with a fresh key; returns the public key."""
    proc = host.spawn(["wireguard-go", "-f", "wg0"], "wireguard-go")
    wait_for(lambda: (host.run_dir / "wg0.sock").exists() or not proc.running,
             what=f"wg0.sock on {host.name}")
    assert proc.running, proc.log_text()
    key = host.run(["wg", "genkey"]).stdout.strip()
    host.run(["sh", "-c", "umask 077; cat > /etc/wireguard/wg0.key"], input=key + "\n")
    host.run(["wg", "set", "wg0", "private-key", "/etc/wireguard/wg0.key",
              "listen-port", "51820"])
    host.run(["ip", "addr", "add", address, "dev", "wg0"])
    host.run(["ip", "link", "set", "wg0", "up"])
    return host.run(["wg", "pubkey"], input=key + "\n").stdout.strip()


def test_wireguard_go_per_host(net):
    pub1, pub2, privc = h(net, "pub1"), h(net, "pub2"), h(net, "privc")
    keys = {host.name: start_wg(host, f"10.99.0.{i}/24")
            for i, host in enumerate((pub1, pub2, privc), start=1)}
    # Each host's wg0 socket and key file live in its own directories ...
    for host in (pub1, pub2, privc):
        assert (host.etc_dir / "wg0.key").exists()
        shown = host.run(["wg", "show", "wg0", "public-key"]).stdout.strip()
        assert shown == keys[host.name]
    # ... and real tunnels work: public <-> public, and a spoke behind the cone NAT.
    pub1.run(["wg", "set", "wg0", "peer", keys["pub2"], "allowed-ips", "10.99.0.2/32",
              "endpoint", f"{pub2.address}:51820",
              "peer", keys["privc"], "allowed-ips", "10.99.0.3/32"])
    pub2.run(["wg", "set", "wg0", "peer", keys["pub1"], "allowed-ips", "10.99.0.1/32",
              "endpoint", f"{pub1.address}:51820"])
    privc.run(["wg", "set", "wg0", "peer", keys["pub1"], "allowed-ips", "10.99.0.1/32",
               "endpoint", f"{pub1.address}:51820", "persistent-keepalive", "1"])
    assert pub1.ping("10.99.0.2", count=3)
    assert privc.ping("10.99.0.1", count=3)
    assert pub1.ping("10.99.0.3", count=3)  # back through the NAT mapping the spoke opened
    endpoints = pub1.run(["wg", "show", "wg0", "endpoints"]).stdout
    assert f"{h(net, 'cone').address}:51820" in endpoints


# -- teardown ----------------------------------------------------------------------------------

def snapshot(lab: Lab) -> dict:
    """What a lab owns right now, to check later that all of it is gone."""
    pids = {pid: netns.process_start(pid)
            for ns in lab.namespaces for pid in netns.pids(ns)}
    return {"prefix": lab.prefix, "namespaces": lab.namespaces, "pids": pids,
            "paths": [lab.root, lab.state_path]}


def assert_gone(snap: dict) -> None:
    prefix = snap["prefix"]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in listed
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert prefix not in links  # no veth or bridge left in the root namespace
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert prefix not in tables and "apexlab" not in tables
    alive = {pid for pid, start in snap["pids"].items() if netns.alive(pid, start)}
    assert not alive, f"processes still alive: {alive}"
    for path in snap["paths"]:
        assert not Path(path).exists(), path


def test_teardown_removes_everything(monkeypatch):
    monkeypatch.setattr(labmod, "STOP_TIMEOUT", 0.5)
    lab = Lab()
    with lab:
        pub = lab.add_public_host("pub")
        nat = lab.add_nat("nat", kind="symmetric")
        priv = lab.add_private_host("priv", nat)
        sleeper = pub.spawn(["sleep", "1000"], "sleep")
        # A daemon that leaves the process group, as wireguard-go does without -f.
        priv.spawn(["sh", "-c", "setsid sleep 1000 & wait"], "daemon")
        priv.spawn(["wireguard-go", "-f", "wg0"], "wg")
        stubborn = pub.spawn(["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"], "trap")
        wait_for(lambda: len(netns.pids(priv.ns)) >= 3, what="priv processes")
        snap = snapshot(lab)
        assert len(snap["pids"]) >= 5
        assert lab.state_path.exists()
        assert sleeper.running and stubborn.running
    assert_gone(snap)
    lab.teardown()  # a second time is harmless
    assert sleeper.returncode is not None
    with pytest.raises(LabError):
        lab.add_public_host("late")


def test_teardown_after_failing_setup(monkeypatch):
    def broken(self, nat):
        raise RuntimeError("nft exploded")

    monkeypatch.setattr(Lab, "_apply_nat_rules", broken)
    with pytest.raises(RuntimeError, match="nft exploded"):
        with Lab() as lab:
            lab.add_public_host("pub").spawn(["sleep", "1000"], "sleep")
            snap = snapshot(lab)
            lab.add_nat("nat")
    snap["namespaces"] = lab.namespaces
    assert f"{lab.prefix}-nat" in snap["namespaces"]  # it failed half-way through the NAT
    assert_gone(snap)


def test_bad_input_and_prefix_clash_leave_other_labs_alone():
    with Lab() as lab:
        with pytest.raises(LabError):
            lab.add_public_host("Bad_Name")
        with pytest.raises(LabError):
            lab.add_nat("n", kind="full-cone")
        pub = lab.add_public_host("pub")
        with pytest.raises(LabError):
            lab.add_public_host("pub")
        with pytest.raises(LabError):
            Lab(lab.prefix)
        assert pub.ping(labmod.WAN_GATEWAY.compressed)  # the clash did not tear us down
    with pytest.raises(LabError):
        Lab("no/slash")


def run_cli(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed.lab", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, **kw)


def test_cli_cleans_up_after_killed_owner():
    owner = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from testbed.lab import Lab\n"
         "lab = Lab(); lab.add_public_host('pub').spawn(['sleep', '1000'], 'sleep')\n"
         "nat = lab.add_nat('nat'); lab.add_private_host('priv', nat)\n"
         "print(lab.prefix, lab.root, flush=True); time.sleep(1000)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        prefix, root = owner.stdout.readline().split()
    finally:
        owner.kill()
        owner.wait()
    state = labmod.read_state(labmod.STATE_DIR / f"{prefix}.json")
    assert len(state["namespaces"]) == 4
    listing = run_cli("list").stdout
    assert f"{prefix}: owner {owner.pid} dead" in listing
    result = run_cli("teardown", prefix)
    assert result.returncode == 0, result.stderr
    assert_gone({"prefix": prefix, "namespaces": state["namespaces"], "pids": {},
                 "paths": [root, labmod.STATE_DIR / f"{prefix}.json"]})


def test_cli_up_shell_teardown():
    prefix = "axcli" + os.urandom(2).hex()
    up = run_cli("up", "--detach", "--prefix", prefix)
    try:
        assert up.returncode == 0, up.stderr
        assert f"testbed.lab shell {prefix}" in up.stdout
        shell = run_cli("shell", prefix, "priv1", "--", "ping", "-c1", "-W1", "203.0.113.10")
        assert shell.returncode == 0, shell.stdout + shell.stderr
        shell = run_cli("shell", prefix, "tower", "--", "ip", "-4", "-o", "addr", "show", "eth0")
        assert "203.0.113.10/24" in shell.stdout
    finally:
        down = run_cli("teardown", prefix)
    assert down.returncode == 0, down.stderr
    assert_gone({"prefix": prefix, "namespaces": [], "pids": {}, "paths": []})


def test_sigterm_tears_down_a_lab_used_by_hand():
    owner = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from testbed.lab import Lab\n"
         "lab = Lab(); lab.add_public_host('pub').spawn(['sleep', '1000'], 'sleep')\n"
         "print(lab.prefix, lab.root, flush=True); time.sleep(1000)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        prefix, root = owner.stdout.readline().split()
        owner.send_signal(signal.SIGTERM)
        assert owner.wait(timeout=20) == -signal.SIGTERM
    finally:
        if owner.poll() is None:
            owner.kill()
            run_cli("teardown", prefix)
    assert_gone({"prefix": prefix, "namespaces": [], "pids": {},
                 "paths": [root, labmod.STATE_DIR / f"{prefix}.json"]})

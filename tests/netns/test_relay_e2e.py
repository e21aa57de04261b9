"""Every pair connects: relays, paths and mobility end to end on real WireGuard.

One lab for the module: a tower (`controltower serve --relay-port 0`) and two relays
alone on public hosts (`controltower relay`), so that one can be killed. Each test adds
the hosts it needs: spokes behind symmetric NATs, port-restricted cone NATs and Linux
routers without an input firewall (the port-clash case), public nodes, a node of another
zone. Timing targets of issue 13 are asserted with headroom: a relayed pair must ping
within 2 s of both ends being up (asserted: 6 s). A moved node must be reachable within
3 s, also when both ends' first handshakes after the move are lost (the agent re-creates
the peer after 0.5-1 s instead of waiting for WireGuard's 5 s retry); a slow move's
failure shows both hosts' WireGuard datagrams, their wg0s and agents' logs.
"""
from __future__ import annotations

import contextlib
import json
import os
import time

import pytest

from testbed.errors import MeshFailure
from testbed.lab import Lab
from testbed.mesh import BIN, Mesh, wait_for
from testbed import wgfake
from wire import relaymsg as rm

pytestmark = pytest.mark.slow

PATTERN = "a5c3e1f00dfeed42"
RELAY_ARGS = ("--metrics-port", "9480")


@pytest.fixture(scope="module")
def world():
    with Lab() as lab:
        tower = lab.add_public_host("tower")
        mesh = Mesh(lab, tower)
        mesh.start_tower("--relay-port", "0")
        relays = {"ra": lab.add_public_host("relaya"), "rb": lab.add_public_host("relayb")}
        for region, host in relays.items():
            mesh.start_relay(host, region, *RELAY_ARGS)
        mesh.create_zone("zone-blue", "10.140.0.0/20")
        yield lab, mesh, relays


def spokes(lab, mesh, kinds: dict[str, str]) -> dict:
    """Hosts (name -> NAT kind, or "public"), their agents started together; returns
    {name: (host, agent, address, time its address was up)}."""
    hosts = {}
    for name, kind in kinds.items():
        hosts[name] = (lab.add_public_host(name) if kind == "public" else
                       lab.add_private_host(name, lab.add_nat(f"n{name}", kind)))
    agents = {name: mesh.start_agent(host) for name, host in hosts.items()}
    out = {}
    for name, agent in agents.items():
        address = mesh.wait_address(agent)
        out[name] = (hosts[name], agent, address, time.monotonic())
    return out


def capture(host, argv: list[str], name: str):
    """tcpdump on ``host``, returned once it is listening (it is slow to start when the
    machine is busy)."""
    proc = host.spawn(["tcpdump", "-n", "-U", *argv], name)
    wait_for(lambda: "listening on" in proc.log_text(), 15, f"tcpdump on {host.name}")
    return proc


def both_report(mesh, world_nodes, a: str, b: str, path: str, timeout: float) -> float:
    """Seconds until both sides of the pair report ``path`` for each other."""
    (ha, aa, _, _), (hb, ab, _, _) = world_nodes[a], world_nodes[b]
    start = time.monotonic()
    try:
        wait_for(lambda: mesh.path_of(ha, ab.public_key)[0] == path
                 and mesh.path_of(hb, aa.public_key)[0] == path, timeout,
                 f"{a} and {b} to report {path}", interval=0.25)
    except MeshFailure as exc:
        raise MeshFailure(f"{exc}\n{pair_state(mesh, world_nodes, a, b)}") from None
    return time.monotonic() - start


def pair_state(mesh, world_nodes, a: str, b: str, relays: dict | None = None) -> str:
    """What a reader of a failure needs first: each end's path status (its decision per
    peer, its relays' liveness and RTT), ``wg show wg0`` (no private key) and the tail of
    its agent's log; then the tail of each relay's log."""
    out = []
    for name in (a, b):
        host, agent = world_nodes[name][0], world_nodes[name][1]
        other = world_nodes[b if name == a else a][1]
        status = mesh.paths(host)
        out.append(f"--- {name} ({agent.public_key[:8]}, peer {other.public_key[:8]}) "
                   f"path status: relays {json.dumps(status.get('relays'))}; to the peer "
                   f"{json.dumps((status.get('peers') or {}).get(other.public_key))}")
        out.append(host.run(["wg", "show", "wg0"], check=False).stdout.strip())
        log_lines = agent.proc.log_text().splitlines() if agent.proc else []
        out.append("\n".join(log_lines[-40:]))
    for region, proc in sorted(mesh.relays.items()) if relays is not None else ():
        out.append(f"--- relay {region} ({'running' if proc.running else 'exited'})")
        out.append("\n".join(proc.log_text().splitlines()[-30:]))
    return "\n".join(out)


@contextlib.contextmanager
def relay_cut(host):
    """The relay's host cut off the network for the block, plugged in again after it,
    whatever happens inside (the tests after this one need it)."""
    host.link_down()
    try:
        yield
    finally:
        host.link_up()


@contextlib.contextmanager
def nat_kind(nat, kind: str):
    """``nat`` made a NAT of ``kind`` for the block, its old kind back after it."""
    old = nat.kind
    nat.set_kind(kind)
    try:
        yield
    finally:
        nat.set_kind(old)


@pytest.fixture(autouse=True)
def lab_intact(world):
    """After every test: each relay's host plugged in and its process running (a relay
    that exited is started again, and this test fails with its log), so that one test's
    failure never becomes the next one's."""
    yield
    lab, mesh, relays = world
    for host in relays.values():
        host.link_up()                       # idempotent: a no-op when it is up
    dead = {region: mesh.relays[region] for region in relays if not mesh.relays[region].running}
    for region, proc in dead.items():
        mesh.start_relay(relays[region], region, *RELAY_ARGS)
    assert not dead, "relays exited during the test (started again):\n" + "\n".join(
        f"--- relay {region} (exit {proc.returncode}):\n{proc.log_text()[-3000:]}"
        for region, proc in dead.items())


@pytest.fixture(scope="module")
def nodes(world):
    """Spokes behind every kind of NAT and a public node, their agents started together."""
    lab, mesh, _ = world
    return spokes(lab, mesh, {"s1": "symmetric", "s2": "symmetric", "c1": "cone",
                              "c2": "cone", "r1": "router", "r2": "router", "p1": "public"})


def test_hard_nat_pairs_ping_within_2s_and_paths(world, nodes):
    lab, mesh, _ = world
    took = {}
    for a, b in (("s1", "s2"), ("s1", "c1"), ("r1", "r2"), ("c1", "r1"), ("s2", "r2")):
        (ha, _, _, up_a), (_, _, addr_b, up_b) = nodes[a], nodes[b]
        since_up = time.monotonic() - max(up_a, up_b)
        first = mesh.first_ping(ha, addr_b, timeout=20)
        assert first is not None, f"{a} never reached {b}"
        took[(a, b)] = round(since_up + first, 2)
    print("hard-NAT pairs, seconds from both ends up to the first ping:", took)
    assert all(t <= 6.0 for t in took.values()), took          # target 2 s, 3x headroom
    for a, b in (("s1", "s2"), ("s1", "c1"), ("r1", "r2")):
        both_report(mesh, nodes, a, b, "relayed", 10)
    # a pair that can punch ends on direct and stays there
    took_direct = both_report(mesh, nodes, "c1", "c2", "direct", 30)
    print(f"cone-cone pair on direct {took_direct:.1f}s after the check began")
    # anything to a public node is direct, from the start and for good
    for name in ("s1", "c1", "r1"):
        both_report(mesh, nodes, name, "p1", "direct", 5)
    time.sleep(5)
    assert mesh.path_of(nodes["c1"][0], nodes["c2"][1].public_key)[0] == "direct"
    for a, b in (("s1", "s2"), ("r1", "r2"), ("c1", "c2"), ("p1", "s1")):
        assert nodes[a][0].ping(nodes[b][2], count=3), f"{a} -> {b}"
    # the tower's matrix agrees with what the agents say (heartbeats every 2 s)
    key = {n: v[1].public_key for n, v in nodes.items()}
    said = {frozenset((key[a], key[b])): path for a, b, path in
            (("s1", "s2", "relayed"), ("c1", "c2", "direct"), ("s1", "p1", "direct"))}

    def matrix() -> dict:
        data = mesh.curl("GET", "/zones/default/paths")[1] or {}
        return {frozenset((p["A"], p["B"])): p["Path"] for p in data.get("Pairs", [])}
    wait_for(lambda: all(matrix().get(pair) == path for pair, path in said.items()), 30,
             "the tower's matrix to show s1-s2 relayed, c1-c2 and s1-p1 direct")
    status = nodes["s1"][0].run([str(BIN / "aircrew"), "status"]).stdout
    assert "relay " in status and "direct" in status


def test_relay_never_sees_the_payload(world, nodes):
    lab, mesh, relays = world
    both_report(mesh, nodes, "s1", "s2", "relayed", 15)
    (hs1, a1, _, _), (hs2, a2, addr2, _) = nodes["s1"], nodes["s2"]
    path, relay_id = mesh.path_of(hs1, a2.public_key)
    assert path == "relayed" and relay_id
    relay_host = relays[relay_id.rsplit("-", 1)[0]]
    cap = capture(relay_host, ["-i", "any", "-w", "/etc/wireguard/cap.pcap"], "tcpdump")
    control = capture(hs2, ["-i", "wg0", "-w", "/etc/wireguard/cap.pcap"], "tcpdump")
    hs1.run(["ping", "-n", "-c", "10", "-i", "0.2", "-p", PATTERN, "-s", "200", addr2])
    time.sleep(1.0)
    cap.stop()
    control.stop()
    needle = bytes.fromhex(PATTERN)
    on_relay = (relay_host.etc_dir / "cap.pcap").read_bytes()
    relayed = relay_host.run(["tcpdump", "-n", "-r", "/etc/wireguard/cap.pcap",
                              "udp port 3480 and greater 250"], check=False).stdout.splitlines()
    assert len(relayed) >= 20, "the capture on the relay saw the relayed pings"
    assert on_relay.count(needle) == 0
    assert (hs2.etc_dir / "cap.pcap").read_bytes().count(needle) > 0   # the pattern is there
    # the relay counts what its kernel forwarded (refreshed every second)
    def kernel_packets() -> float:
        text = relay_host.run(["curl", "-s", "http://127.0.0.1:9480/metrics"]).stdout
        for line in text.splitlines():
            if line.startswith('controltower_relay_packets_total{datapath="kernel"}'):
                return float(line.split()[-1])
        return 0.0
    wait_for(lambda: kernel_packets() >= 20, 10, "the relay's kernel packet counter")


def test_node_of_another_zone_gets_nothing_relayed(world, nodes):
    lab, mesh, relays = world
    both_report(mesh, nodes, "s1", "s2", "relayed", 15)
    (hs2, a2, _, _) = nodes["s2"]
    path, relay_id = mesh.path_of(nodes["s1"][0], a2.public_key)
    relay_host = relays[relay_id.rsplit("-", 1)[0]]
    x1 = lab.add_public_host("x1")
    mesh.start_agent(x1, "zone-blue")
    mesh.wait_address(mesh.agents["x1"])
    record = [r for r in mesh.curl("GET", "/zones/default/paths")[1]["Relays"]
              if r["Id"] == relay_id][0]
    relay_pub = relay_host.run(["cat", "/etc/wireguard/relay/relay.key"]).stdout.strip()
    forged = wgfake.initiation(os.urandom(4), __import__("base64").b64decode(a2.public_key))
    marker = forged[8:40]                    # 32 random bytes: found only if forwarded
    script = (
        "import base64,os,socket,sys,time\n"
        "from wire import relaymsg as rm, x25519\n"
        "priv=base64.b64decode(open('/etc/wireguard/private.key').read().strip())\n"
        "relay=(sys.argv[1],int(sys.argv[2])); rpub=x25519.public_key(base64.b64decode(sys.argv[3]))\n"
        "mac=rm.derived_key(rm.RELAY_CONTEXT,x25519.exchange(priv,rpub))\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',0)); s.settimeout(2)\n"
        "for zone in ('zone-blue','default'):\n"
        "    s.sendto(rm.encode_bind(mac,rm.Bind(os.urandom(8),int(time.time()*1000),x25519.public_key(priv),zone)),relay)\n"
        "    m=rm.decode(s.recv(2048)); print(zone, type(m).__name__, getattr(m,'reason',''))\n"
        "for _ in range(20):\n"
        "    s.sendto(bytes.fromhex(sys.argv[4]),relay); time.sleep(0.05)\n")
    cap = capture(hs2, ["-i", "eth0", "-w", "/etc/wireguard/x.pcap", "udp"], "tcpdump-x")
    out = x1.run([str(BIN / "python"), "-c", script, record["Host"], str(record["Port"]),
                  relay_pub, forged.hex()]).stdout
    time.sleep(1.0)
    cap.stop()
    assert "zone-blue BindOk" in out                       # a member of its own zone
    assert "default BindRefused foreign" in out            # not of this one
    assert (hs2.etc_dir / "x.pcap").read_bytes().count(marker) == 0


def moved_story(hosts, agents, up_at: float) -> str:
    """What a reader of a slow move needs: each host's WireGuard datagrams (tcpdump, wall
    clock; 148 bytes an initiation, 92 a response, 32 a keepalive), ``wg show wg0`` and
    its agent's log, all against the wall time the moved wg0 came up."""
    out = [f"moved wg0 up at {up_at:.3f} (wall clock)"]
    for host, cap in hosts:
        cap.stop()
        out.append(f"--- udp on {host.name} (eth0)")
        out.append("\n".join(cap.log_text().splitlines()[-40:]))
        out.append(host.run(["wg", "show", "wg0"], check=False).stdout.strip())
    for name, agent in agents:
        out.append(f"--- aircrew on {name}")
        out.append("\n".join(agent.proc.log_text().splitlines()[-25:]))
    return "\n".join(out)


def start_moving(lab, mesh, tag: str):
    """A node on p2 and its peer on p4 (host names prefixed by ``tag``), a ping between
    them, then the node stopped and its wg0 gone (the laptop left that network), its key
    on p3 (where it will come up); tcpdump on p4 and p3. Returns p3, p4, the peer's and
    the moving node's agents, the node's mesh address and the captures."""
    p2, p3, p4 = (lab.add_public_host(f"{tag}{n}") for n in ("p2", "p3", "p4"))
    peer = mesh.start_agent(p4)
    moving = mesh.start_agent(p2)
    address = mesh.wait_address(moving)
    mesh.wait_address(peer)
    # a precondition, not the figure under test: a loaded run took over 10 s here once
    assert mesh.first_ping(p4, address, timeout=30) is not None, \
        "the pair never pinged before the move\n" + "\n".join(
            host.run(["wg", "show", "wg0"], check=False).stdout + agent.proc.log_text()[-3000:]
            for host, agent in ((p4, peer), (p2, moving)))
    dump = ["-l", "--immediate-mode", "-tt", "-i", "eth0", "udp", "port", "51820"]
    caps = [(h, capture(h, dump, "tcpdump-moved")) for h in (p4, p3)]
    moving.proc.stop()
    p2.run(["ip", "link", "del", "wg0"])                  # the laptop left that network
    (p3.etc_dir / "private.key").write_text((p2.etc_dir / "private.key").read_text())
    os.chmod(p3.etc_dir / "private.key", 0o600)
    return p3, p4, peer, moving, address, caps


def test_moved_node_reachable_within_3s(world):
    lab, mesh, _ = world
    p3, p4, peer, _, address, caps = start_moving(lab, mesh, "")
    moved = mesh.start_agent(p3, new_key=False)
    assert mesh.wait_address(moved) == address
    up_at = time.time()
    took = mesh.first_ping(p4, address, timeout=30)
    story = moved_story(caps, [("p4", peer), ("p3", moved)], up_at)
    print(f"moved node reachable {took}s after its wg0 came up on the new host")
    if os.environ.get("MOVED_STORY"):
        print(story)
    assert took is not None and took <= 3.0, story


def test_moved_node_whose_first_handshakes_were_lost_reachable_within_3s(world):
    """Both ends' first initiations after the move fail (as when they cross: each end
    consumes the other's initiation, which drops its own, and WireGuard would retry only
    after its 5 s REKEY_TIMEOUT; here p4 drops what p3 sends until both ends hold the
    peer at its new endpoint). The peer's agent re-creates the peer within about 0.5-1 s
    of the move."""
    lab, mesh, _ = world
    p3, p4, peer, moving, address, caps = start_moving(lab, mesh, "l")
    table = f"lossy{os.getpid()}"
    p4.run(["nft", "add", "table", "inet", table])
    try:
        p4.run(["nft", "add", "chain", "inet", table, "in",
                "{ type filter hook input priority 0 ; }"])
        p4.run(["nft", "add", "rule", "inet", table, "in", "ip", "saddr", p3.address,
                "udp", "dport", "51820", "drop"])
        moved = mesh.start_agent(p3, new_key=False)
        assert mesh.wait_address(moved) == address
        wait_for(lambda: mesh.wg_peers(p4).get(moving.public_key, {}).get("endpoint")
                 == f"{p3.address}:51820" and peer.public_key in mesh.wg_peers(p3), 15,
                 "p4 to hold the moved node's new endpoint and p3 to hold p4", interval=0.05)
        time.sleep(0.1)                    # both first initiations went out and were lost
    finally:
        p4.run(["nft", "delete", "table", "inet", table], check=False)
    lifted = time.time()
    took = mesh.first_ping(p4, address, timeout=30)
    story = moved_story(caps, [("p4", peer), ("p3", moved)], lifted)
    print(f"moved node reachable {took}s after the loss ended")
    if os.environ.get("MOVED_STORY"):
        print(story)
    assert took is not None and took <= 3.0, story
    assert "none came since the move" in peer.proc.log_text(), story


def relay_in_use(mesh, world_nodes, a: str, b: str, timeout: float) -> str:
    """The relay both ends of the pair report and both wg0s hold as the endpoint, the same
    for 2 s in a row (right after the start a pair may still move to the decider's home
    relay: cutting the one it just left measures nothing)."""
    (ha, aa, _, _), (hb, ab, _, _) = world_nodes[a], world_nodes[b]
    seen: list[tuple[float, str]] = []

    def agreed() -> str | None:
        ends = [((mesh.paths(h).get("peers") or {}).get(other.public_key) or {},
                 mesh.wg_peers(h).get(other.public_key, {}).get("endpoint"))
                for h, other in ((ha, ab), (hb, aa))]
        relay = ends[0][0].get("relay")
        same = relay is not None and all(
            status.get("path") == "relayed" and status.get("relay") == relay
            and status.get("endpoint") == device for status, device in ends)
        now = time.monotonic()
        if not same or (seen and seen[-1][1] != relay):
            seen.clear()
        if same:
            seen.append((now, relay))
        return relay if seen and now - seen[0][0] >= 2.0 else None

    try:
        return wait_for(agreed, timeout, f"{a} and {b} to agree on a relay", interval=0.25)
    except MeshFailure as exc:
        raise MeshFailure(f"{exc}\n{pair_state(mesh, world_nodes, a, b)}") from None


def test_killed_relay_pairs_move_within_10s(world):
    lab, mesh, relays = world
    nodes = spokes(lab, mesh, {"s4": "symmetric", "s5": "router"})
    relay_id = relay_in_use(mesh, nodes, "s4", "s5", 20)
    (hs1, a1, _, _), (hs2, a2, addr2, _) = nodes["s4"], nodes["s5"]
    region = relay_id.rsplit("-", 1)[0]
    # the pair works before the cut (a bounded wait, not one 1 s ping: at load 17 one
    # ping was lost right after the pair settled)
    assert mesh.first_ping(hs1, addr2, timeout=30) is not None, \
        f"s4-s5 do not ping on relay {relay_id} before the cut\n" + \
        pair_state(mesh, nodes, "s4", "s5", relays)
    print("before the cut:\n" + pair_state(mesh, nodes, "s4", "s5"))   # shown on failure
    with relay_cut(relays[region]):          # the relay's host is gone (its cable cut)
        start = time.monotonic()
        back = mesh.first_ping(hs1, addr2, timeout=30)
        took = time.monotonic() - start
        print(f"relay {region} gone: s4-s5 pings again after {took:.1f}s")
        assert back is not None and took <= 10.0, \
            f"s4-s5 after relay {region} was cut: ping back {back}, {took:.1f}s\n" + \
            pair_state(mesh, nodes, "s4", "s5", relays)
        wait_for(lambda: (mesh.path_of(hs1, a2.public_key)[1] or region).rsplit("-", 1)[0]
                 != region, 5, "s4 to report the other relay")
        print("after the cut:\n" + pair_state(mesh, nodes, "s4", "s5", relays))


def test_symmetric_nat_turned_cone_goes_direct_within_30s(world):
    lab, mesh, _ = world
    nodes = spokes(lab, mesh, {"s3": "symmetric", "c3": "cone"})
    both_report(mesh, nodes, "s3", "c3", "relayed", 15)
    start = time.monotonic()
    with nat_kind(lab.hosts["ns3"], "cone"):
        both_report(mesh, nodes, "s3", "c3", "direct", 45)
        print(f"symmetric NAT made cone: direct after {time.monotonic() - start:.1f}s")
        assert time.monotonic() - start <= 30.0, pair_state(mesh, nodes, "s3", "c3")
        assert nodes["s3"][0].ping(nodes["c3"][2], count=3)

"""End to end on real WireGuard (wireguard-go) in the lab: every seed scenario.

One lab for the module: a tower host running `controltower serve` (private Redis, STUN),
public hosts, and spokes behind NAT routers, each running the real `aircrew` command.
"""
from __future__ import annotations

import subprocess
import time

import pytest

from testbed.mesh import BIN, in_network, towered_lab, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world():
    with towered_lab() as (lab, mesh):
        hosts = {name: lab.add_public_host(name) for name in ("p1", "p2")}
        for nat_name, spoke in (("n1", "l1"), ("n2", "l2")):
            hosts[spoke] = lab.add_private_host(spoke, lab.add_nat(nat_name))
        agents = {name: mesh.start_agent(host) for name, host in hosts.items()}
        addresses = {name: mesh.wait_address(agent) for name, agent in agents.items()}
        yield lab, mesh, hosts, agents, addresses


def handshakes(mesh, host):
    return {key: peer["handshake"] for key, peer in mesh.wg_peers(host).items()}


def test_full_mesh_across_vpcs_and_nat(world):
    lab, mesh, hosts, agents, addresses = world
    for agent in agents.values():
        mesh.wait_peers(agent.host, {a.public_key for a in agents.values()} - {agent.public_key})
    for src in hosts:
        for dst, address in addresses.items():
            if src != dst:
                assert mesh.reaches(hosts[src], address), f"{src} cannot reach {dst} ({address})"


def test_joining_node_is_added_without_rehandshaking_existing_pairs(world):
    lab, mesh, hosts, agents, addresses = world
    p1, p2 = agents["p1"], agents["p2"]
    assert mesh.reaches(p1.host, addresses["p2"])
    before = handshakes(mesh, p1.host)[p2.public_key]
    assert before != "0"
    newcomer = mesh.start_agent(lab.add_public_host("p3"), "default", "--mtu=1380")
    address = mesh.wait_address(newcomer)
    assert " mtu 1380 " in newcomer.host.run(["ip", "-o", "link", "show", "wg0"]).stdout
    for agent in (p1, p2):
        wait_for(lambda: newcomer.public_key in mesh.wg_peers(agent.host), 20, "the newcomer")
        assert mesh.reaches(agent.host, address)
    assert handshakes(mesh, p1.host)[p2.public_key] == before  # the session was kept
    assert mesh.reaches(p1.host, addresses["p2"])


def test_laptop_spokes_behind_nat(world):
    lab, mesh, hosts, agents, addresses = world
    l1, l2 = agents["l1"], agents["l2"]
    # Public nodes reach the spoke although its NAT forwards no inbound port.
    assert mesh.reaches(hosts["p1"], addresses["l1"])
    # Two spokes behind different (cone) NATs reach each other, first through the relay,
    # then directly, NAT to NAT, once their probes got through (docs/relay.md).
    assert mesh.reaches(l1.host, addresses["l2"])
    wait_for(lambda: mesh.wg_peers(l1.host)[l2.public_key]["endpoint"].split(":")[0]
             == l2.host.nat.address, 30, "l1 to reach l2 directly")
    assert mesh.reaches(l1.host, addresses["l2"])
    _, peers = mesh.curl("GET", "/peers?zone=default")
    nat_types = {p["PublicKey"]: p["NatType"] for p in peers}
    assert nat_types[l1.public_key] == "cone" and nat_types[agents["p1"].public_key] == "open"


def test_multi_tenancy_with_seed_curl_calls(world):
    lab, mesh, hosts, agents, addresses = world
    token = mesh._tower_file("admin-token")
    for name, description, cidr in (("zone-blue", "Tenant - Zone Blue", "10.140.0.0/20"),
                                    ("zone-red", "Tenant - Zone Red", "172.20.0.0/20")):
        seed_call = ["curl", "-L", "-X", "POST", "http://localhost:8080/zone",
                     "-H", "Content-Type: application/json",
                     "-H", f"Authorization: Bearer {token}",
                     "--data-raw", '{\n    "Name": "%s",\n    "Description": "%s",\n'
                                   '    "CIDR": "%s"\n}' % (name, description, cidr)]
        import json
        zone = json.loads(mesh.tower.run(seed_call).stdout)
        assert zone["IpCidr"] == cidr
        mesh.secrets[name] = zone["AgentSecret"]
    mesh.create_zone("zone-green", "10.140.0.0/20", "same CIDR as blue")
    members = {}
    for zone in ("zone-blue", "zone-red", "zone-green"):
        for i in (1, 2):
            agent = mesh.start_agent(lab.add_public_host(f"{zone[5]}{i}"), zone)
            members[(zone, i)] = (agent, mesh.wait_address(agent))
    for zone, cidr in (("zone-blue", "10.140.0.0/20"), ("zone-red", "172.20.0.0/20"),
                       ("zone-green", "10.140.0.0/20")):
        (a, a_addr), (b, b_addr) = members[(zone, 1)], members[(zone, 2)]
        assert in_network(a_addr, cidr) and in_network(b_addr, cidr)
        mesh.wait_peers(a.host, {b.public_key})
        assert mesh.reaches(a.host, b_addr) and mesh.reaches(b.host, a_addr)
        leases = mesh.curl("GET", f"/ipam/leases/{zone}")[1][0]
        assert {a_addr, b_addr} <= set(leases["IPs"]) and leases["Cidr"] == cidr
    # Nothing crosses zones: no foreign peer on any wg0, no route to another zone.
    blue = members[("zone-blue", 1)][0]
    assert set(mesh.wg_peers(blue.host)) == {members[("zone-blue", 2)][0].public_key}
    assert not mesh.reaches(blue.host, members[("zone-red", 1)][1], timeout=3)
    assert not mesh.reaches(blue.host, addresses["p1"], timeout=3)
    assert not mesh.reaches(hosts["p1"], members[("zone-blue", 1)][1], timeout=3)


def test_child_prefixes(world):
    lab, mesh, hosts, agents, addresses = world
    c1, c2 = lab.add_public_host("c1"), lab.add_public_host("c2")
    c1.run(["ip", "addr", "add", "172.24.0.10/32", "dev", "lo"])
    c2.run(["ip", "addr", "add", "172.28.0.10/32", "dev", "lo"])
    a1 = mesh.start_agent(c1, "default", "--child-prefix=172.24.0.0/24")
    a2 = mesh.start_agent(c2, "default", "--child-prefix=172.28.0.0/24")
    mesh.wait_address(a1), mesh.wait_address(a2)
    c3 = mesh.start_agent(lab.add_public_host("c3"))
    mesh.wait_address(c3)
    wait_for(lambda: {a1.public_key, a2.public_key} <= set(mesh.wg_peers(c3.host)), 20, "peers")
    # Announced, not approved: nobody routes them yet (issue 14).
    assert "172.24.0.0/24" not in mesh.wg_peers(c3.host)[a1.public_key]["allowed_ips"]
    for agent, prefix in ((a1, "172.24.0.0/24"), (a2, "172.28.0.0/24")):
        mesh.curl("POST", f"/peers/{agent.public_key}/routes", {"Approve": [prefix]})
    wait_for(lambda: "172.28.0.0/24" in mesh.wg_peers(c3.host)[a2.public_key]["allowed_ips"],
             20, "the approved prefixes")
    assert mesh.reaches(c3.host, "172.24.0.10") and mesh.reaches(c3.host, "172.28.0.10")
    assert mesh.reaches(hosts["l1"], "172.24.0.10")  # from behind a NAT too
    routes = c3.host.run(["ip", "route", "show", "dev", "wg0"]).stdout
    assert "172.24.0.0/24" in routes and "172.28.0.0/24" in routes
    # A prefix already used in the zone cannot be approved for another node: clear error.
    c4 = mesh.start_agent(lab.add_public_host("c4"), "default", "--child-prefix=172.24.0.0/25")
    mesh.wait_address(c4)
    status, body = mesh.curl("POST", f"/peers/{c4.public_key}/routes",
                             {"Approve": ["172.24.0.0/25"]}, check=False)
    assert status == 409 and "child prefix 172.24.0.0/25 overlaps 172.24.0.0/24" in body["error"]


def test_request_ip(world):
    lab, mesh, hosts, agents, addresses = world
    q1 = mesh.start_agent(lab.add_public_host("q1"), "default", "--request-ip=10.200.0.200")
    assert mesh.wait_address(q1) == "10.200.0.200"
    q2 = mesh.start_agent(lab.add_public_host("q2"), "default", "--request-ip=10.200.0.200")
    assert q2.proc.wait(20) != 0
    assert "10.200.0.200 is held by another node" in q2.proc.log_text()
    assert mesh.mesh_address(q2.host) is None


def test_unknown_zone_exits_with_the_towers_message(world):
    lab, mesh, hosts, agents, addresses = world
    host = lab.add_public_host("u1")
    mesh.keygen(host)
    started = time.monotonic()
    proc = host.spawn(mesh.agent_argv("zone-x"), "aircrew", env=mesh.agent_env("default"))
    assert proc.wait(30) != 0 and time.monotonic() - started < 15
    assert "refused the credentials for zone zone-x" in proc.log_text()


def test_ip_mobility(world):
    lab, mesh, hosts, agents, addresses = world
    old = agents["p2"]
    new_host = lab.add_public_host("m1")
    new_host.run(["cp", str(old.host.etc_dir / "private.key"), "/etc/wireguard/private.key"])
    moved = mesh.start_agent(new_host, new_key=False)
    assert moved.public_key == old.public_key
    assert mesh.wait_address(moved) == addresses["p2"]  # same keys keep the address
    for name in ("p1", "l1"):
        wait_for(lambda: mesh.wg_peers(hosts[name])[old.public_key]["endpoint"]
                 == f"{new_host.address}:51820", 20, f"{name} to point at the new endpoint")
    assert old.proc.wait(20) == 3  # the old host's agent was superseded and stopped
    assert "registered from another host" in old.proc.log_text()
    assert mesh.reaches(hosts["p1"], addresses["p2"])
    agents["p2"] = moved
    hosts["p2"] = new_host


def test_removal_by_api(world):
    lab, mesh, hosts, agents, addresses = world
    host = lab.add_public_host("d1")
    doomed = mesh.start_agent(host, "default", "--child-prefix=172.31.0.0/24")
    address = mesh.wait_address(doomed)
    mesh.curl("POST", f"/peers/{doomed.public_key}/routes", {"Approve": ["172.31.0.0/24"]})
    p1 = hosts["p1"]
    wait_for(lambda: doomed.public_key in mesh.wg_peers(p1), 20, "p1 to learn d1")
    assert "172.31.0.0/24" in p1.run(["ip", "route", "show", "dev", "wg0"]).stdout
    status, body = mesh.curl("DELETE", f"/peers/{doomed.public_key}")
    assert status == 200 and body["ReleasedAddress"] == address
    for name in ("p1", "l1"):
        wait_for(lambda: doomed.public_key not in mesh.wg_peers(hosts[name]), 20, "removal")
    assert "172.31.0.0/24" not in p1.run(["ip", "route", "show", "dev", "wg0"]).stdout
    assert address not in mesh.curl("GET", "/ipam/leases/default")[1][0]["IPs"]
    assert doomed.proc.wait(20) == 3
    assert "this node was removed from zone default" in doomed.proc.log_text()


def test_controller_outage(world):
    lab, mesh, hosts, agents, addresses = world
    p1 = hosts["p1"]
    assert mesh.reaches(p1, addresses["l1"])
    mesh.stop_tower()  # and its private Redis with it
    pinger = p1.spawn(["ping", "-n", "-q", "-c", "150", "-i", "0.2", addresses["l1"]], "outage-ping")
    # Meanwhile an agent restarts with its interface gone: it comes back from its cache.
    restarted = agents["l2"]
    restarted.proc.stop()
    restarted.host.run(["ip", "link", "del", "wg0"])
    mesh.restart_agent(restarted)
    assert mesh.wait_address(restarted) == addresses["l2"]
    assert mesh.reaches(restarted.host, addresses["p1"])
    assert pinger.wait(60) == 0
    assert " 0% packet loss" in pinger.log_text(), pinger.log_text()
    # The tower comes back; a node joining now is learned by everyone.
    mesh.start_tower()
    late = mesh.start_agent(lab.add_public_host("late"))
    late_address = mesh.wait_address(late, timeout=60)
    for name in ("p1", "l1", "l2"):
        wait_for(lambda: late.public_key in mesh.wg_peers(hosts[name]), 60, f"{name} to learn late")
        assert mesh.reaches(hosts[name], late_address)


def test_status_and_down(world):
    lab, mesh, hosts, agents, addresses = world
    host = lab.add_public_host("s1")
    agent = mesh.start_agent(host)
    address = mesh.wait_address(agent)
    wait_for(lambda: agents["p1"].public_key in mesh.wg_peers(host), 20, "s1 to learn p1")
    assert mesh.reaches(host, addresses["p1"])
    status = host.run([str(BIN / "aircrew"), "status"]).stdout
    assert f"zone default  revision" in status and f"address {address}/20" in status
    p1_line = next(line for line in status.splitlines() if agents["p1"].public_key in line)
    assert f"{addresses['p1']}/32" in p1_line and "ago" in p1_line
    agent.proc.stop()
    assert mesh.mesh_address(host) == address          # Ctrl-C leaves the tunnels up
    down = host.spawn([str(BIN / "aircrew"), "down", f"--controller={mesh.tower.address}"],
                      "down", env=mesh.agent_env("default"))
    assert down.wait(30) == 0, down.log_text()
    assert "left zone default" in down.log_text()
    assert mesh.mesh_address(host) is None
    # The state files are gone; the node's own credential stays (it is still enrolled).
    assert [p.name for p in host.etc_dir.glob("wg0*")] == ["wg0-credential.json"]
    assert address not in mesh.curl("GET", "/ipam/leases/default")[1][0]["IPs"]


def test_no_secret_in_any_log_or_command_line(world):
    """Runs last: scans the logs of the whole run and every process's command line."""
    lab, mesh, hosts, agents, addresses = world
    secrets = mesh.known_secrets()
    assert len(secrets) >= 7  # zone secrets, token, Redis password, node keys
    texts = {str(p): p.read_text(errors="replace") for p in lab.root.glob("*/log/*.log")}
    assert any("controltower" in name for name in texts) and len(texts) >= 5
    texts["ps"] = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    for what, secret in secrets.items():
        for name, text in texts.items():
            assert secret not in text, f"{what} appears in {name}"

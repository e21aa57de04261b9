"""`make demo`: a small internet in namespaces, a real tower and real agents, checked.

Topology: a tower (with its relay); three public nodes; a "laptop" behind a cone NAT that
opens no inbound port; a "phone" behind a symmetric NAT in the same zone (the laptop and
the phone cannot reach each other directly: their pair goes through the relay); a spoke
behind a symmetric NAT in another zone. Zones: `default` (pub1, pub2, laptop, phone) and
`zone-blue` (pub3, spoke2). Every in-zone pair must reach each other over wg0 and no pair
across zones may; every in-zone pair's path (direct or relayed, from
`GET /zones/<zone>/paths`) is shown; the tower's dashboard must answer on this machine's
loopback (its URL and where the admin token is are printed). Ends with
`demo: N/N checks passed`.

The lab, the tower and agent processes in it and the checks are the test bed's
(``testbed.lab``, ``testbed.mesh``); the commands run in it are the real ones.
"""
from __future__ import annotations

import argparse
import sys
import time
import urllib.request

from testbed import portforward
from testbed.errors import LabError
from testbed.lab import Lab
from testbed.mesh import TOWER_DATA, Mesh

MEMBERS = {"pub1": "default", "pub2": "default", "laptop": "default", "phone": "default",
           "pub3": "zone-blue", "spoke2": "zone-blue"}


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def run(keep: bool) -> int:
    started = time.monotonic()
    lab = Lab()
    try:
        say(f"building lab {lab.prefix}: wan bridge, tower, 3 public hosts, 3 NATs")
        tower = lab.add_public_host("tower")
        hosts = {name: lab.add_public_host(name) for name in ("pub1", "pub2", "pub3")}
        hosts["laptop"] = lab.add_private_host("laptop", lab.add_nat("nat1", "cone"))
        hosts["spoke2"] = lab.add_private_host("spoke2", lab.add_nat("nat2", "symmetric"))
        hosts["phone"] = lab.add_private_host("phone", lab.add_nat("nat3", "symmetric"))
        mesh = Mesh(lab, tower, detach=keep)     # kept: tower and agents outlive the demo
        say(f"starting `controltower serve` on tower ({tower.address}): Redis, API, STUN, relay")
        mesh.start_tower()
        # The dashboard, from this machine's loopback into the lab (the forwarder lives in
        # the tower's namespace: it goes when the lab does).
        _, port = portforward.start(tower.ns, detach=keep)
        dashboard = f"http://127.0.0.1:{port}/ui/"
        token_file = tower.etc_dir / TOWER_DATA.removeprefix("/etc/wireguard/") / "admin-token"
        say(f"dashboard: {dashboard}  (log in with the admin token: cat {token_file})")
        say("creating zone-blue 10.140.0.0/20 with POST /zone")
        mesh.create_zone("zone-blue", "10.140.0.0/20", "Tenant - Zone Blue")
        agents = {}
        for name, zone in MEMBERS.items():
            say(f"starting aircrew on {name} ({hosts[name].address}) in zone {zone}")
            agents[name] = mesh.start_agent(hosts[name], zone)
        addresses = {name: mesh.wait_address(agent) for name, agent in agents.items()}
        for name, agent in agents.items():
            others = {a.public_key for n, a in agents.items()
                      if MEMBERS[n] == MEMBERS[name] and n != name}
            mesh.wait_peers(agent.host, others)

        checks: list[tuple[str, str, bool, bool]] = []  # src, dst, expected, got
        for src in MEMBERS:
            for dst in MEMBERS:
                if src == dst:
                    continue
                same = MEMBERS[src] == MEMBERS[dst]
                got = mesh.reaches(hosts[src], addresses[dst], timeout=20 if same else 2)
                checks.append((src, dst, same, got))

        _, peers = mesh.curl("GET", "/peers")
        by_key = {p["PublicKey"]: p for p in peers}
        rows = [("NODE", "ZONE", "MESH ADDRESS", "ENDPOINT (TOWER)", "NAT", "LAST HANDSHAKE")]
        now = time.time()
        for name, agent in agents.items():
            peer = by_key.get(agent.public_key, {})
            latest = max((int(p["handshake"]) for p in mesh.wg_peers(agent.host).values()), default=0)
            age = f"{now - latest:.0f}s ago" if latest else "never"
            rows.append((name, MEMBERS[name], addresses[name], peer.get("EndpointIP", "?"),
                         peer.get("NatType", "?"), age))
        print("\n" + table(rows) + "\n")
        names = list(MEMBERS)
        matrix = [("FROM \\ TO", *names)]
        for src in names:
            cells = []
            for dst in names:
                found = [c for c in checks if c[0] == src and c[1] == dst]
                cells.append("-" if not found else ("ok" if found[0][3] else "no") +
                             ("" if found[0][2] == found[0][3] else "!"))
            matrix.append((src, *cells))
        print("ping matrix over wg0 (ok = reached, no = unreachable, ! = unexpected):")
        print(table(matrix) + "\n")
        pings = list(checks)
        checks += path_checks(mesh, agents)
        passed = sum(1 for c in checks if c[2] == c[3])
        shown = _dashboard_answers(dashboard)
        say(f"the dashboard answers at {dashboard}" if shown else
            f"FAILED: the dashboard does not answer at {dashboard}")
        passed += shown
        for src, dst, expected, got in checks:
            if expected != got:
                say(f"FAILED: {src} -> {dst} ({addresses[dst]}) "
                    f"{'should reach' if expected else 'must not reach'}")
        say(f"{sum(c[2] for c in pings)} in-zone pings must answer, "
            f"{sum(not c[2] for c in pings)} cross-zone pings must not, "
            f"{len(checks) - len(pings)} in-zone pairs must have a path "
            f"({time.monotonic() - started:.0f}s)")
        if keep:
            lab.detach()
            print(f"\nThe lab is kept. Enter a host:  {sys.executable} -m testbed.lab shell "
                  f"{lab.prefix} pub1\n   e.g. then:  wg show; ping {addresses['laptop']}\n"
                  f"Dashboard:  {dashboard}  (admin token: cat {token_file})\n"
                  f"Tear it down:  {sys.executable} -m testbed.lab teardown {lab.prefix}")
        say(f"{passed}/{len(checks) + 1} checks passed")
        return 0 if passed == len(checks) + 1 else 1
    except LabError as exc:
        say(f"error: {exc}")
        say("0/1 checks passed")
        return 1
    finally:
        if not keep:
            lab.teardown()


def path_checks(mesh: Mesh, agents: dict) -> list[tuple[str, str, bool, bool]]:
    """Every in-zone pair's path as the tower reports it (both sides' heartbeats): one
    check per pair that it is direct or relayed; the table of them is printed."""
    name_of = {a.public_key: n for n, a in agents.items()}
    rows = [("ZONE", "PAIR", "PATH", "RELAY", "HANDSHAKE AGE")]
    found: dict[tuple[str, str], str] = {}
    deadline = time.monotonic() + 15
    for zone in sorted(set(MEMBERS.values())):
        while True:
            _, data = mesh.curl("GET", f"/zones/{zone}/paths")
            pairs = [p for p in data["Pairs"] if p["A"] in name_of and p["B"] in name_of]
            if all(p["Path"] in ("direct", "relayed") for p in pairs) or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for p in pairs:
            a, b = sorted((name_of[p["A"]], name_of[p["B"]]))
            view = p["AView"] or p["BView"] or {}
            age = view.get("HandshakeAge")
            rows.append((zone, f"{a} - {b}", p["Path"], p["Relay"] or "-",
                         "-" if age is None else f"{age}s"))
            found[(a, b)] = p["Path"]
    print("paths (GET /zones/<zone>/paths; relayed pairs go through the tower's relay):")
    print(table(rows) + "\n")
    return [(a, b, True, path in ("direct", "relayed")) for (a, b), path in found.items()]


def _dashboard_answers(url: str) -> bool:
    """The login page answers through the forward (the tower listens off loopback, so
    reads need the token: /ui/ leads to the login)."""
    try:
        with urllib.request.urlopen(url + "login", timeout=10) as response:
            return response.status == 200 and b"Admin token" in response.read()
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true",
                        help="leave the lab running and print how to enter it")
    args = parser.parse_args(argv)
    return run(args.keep)


if __name__ == "__main__":
    sys.exit(main())

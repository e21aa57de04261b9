"""An agent cut off from everything (its namespace's cable unplugged) for 60 s while
nodes join and leave, then plugged back in: it must converge within 5 s.

The lab: a tower host running `controltower serve` (private Redis), and real `aircrew`
agents on real wireguard-go in their own namespaces. While "cut"'s cable is out, a node
joins with a child prefix, another leaves (`aircrew down`), a third joins. After the cable is back,
cut's `wg show wg0 dump` must equal the zone's peer list (minus itself), allowed IPs
included, within 5 s, even when the cable returns just after a failed reconnection
attempt of the agent.

Set FAULT_CUTOFF_MEASURE=<seconds> to keep watching past the 5 s and print how long
convergence really takes (the assertion still uses 5 s).
"""
from __future__ import annotations

import os
import shutil
import time

import pytest

from testbed.mesh import BIN, Mesh, towered_lab, wait_for

TOOLS = ("ip", "nft", "unshare", "ping", "wireguard-go", "wg", "curl", "redis-server")
CUT_FOR = 60.0
CONVERGE_WITHIN = 5.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/net/tun")
                       or not all(shutil.which(t) for t in TOOLS),
                       reason="needs root, /dev/net/tun and " + ", ".join(TOOLS)),
]

def failed_attempts(agent) -> int:
    return agent.proc.log_text().count("controller unreachable")


def zone_view(mesh: Mesh) -> dict[str, tuple[str, ...]]:
    _, peers = mesh.curl("GET", "/peers?zone=default")
    return {p["PublicKey"]: tuple(sorted(p["AllowedIPs"].split(","))) for p in peers}


def device_view(mesh: Mesh, host) -> dict[str, tuple[str, ...]]:
    return {k: tuple(sorted(p["allowed_ips"].split(","))) if p["allowed_ips"] != "(none)" else ()
            for k, p in mesh.wg_peers(host).items()}


def test_agent_cut_off_for_60s_converges_within_5s_of_link_up(monkeypatch):
    measure = float(os.environ.get("FAULT_CUTOFF_MEASURE", "0"))
    with towered_lab() as (lab, mesh):
        cut = lab.add_public_host("cut")
        others = {name: lab.add_public_host(name) for name in ("p1", "p2")}
        agents = {"cut": mesh.start_agent(cut)}
        agents.update({name: mesh.start_agent(host) for name, host in others.items()})
        for agent in agents.values():
            mesh.wait_address(agent)
        mesh.wait_peers(cut, {a.public_key for n, a in agents.items() if n != "cut"})
        own = agents["cut"].public_key

        cut.link_down()
        cut_at = time.monotonic()
        # Meanwhile: one node joins (with a child prefix), one leaves, one more joins.
        j1 = mesh.start_agent(lab.add_public_host("j1"), "default", "--child-prefix=172.24.0.0/24")
        mesh.wait_address(j1)
        agents["p2"].proc.stop()
        monkeypatch.setenv("AIRCREW_CONTROLLER_PASSWORD", mesh.secrets["default"])  # not argv
        out = others["p2"].run([str(BIN / "aircrew"), "down",
                                f"--controller={mesh.tower.address}"]).stdout
        monkeypatch.delenv("AIRCREW_CONTROLLER_PASSWORD")
        assert "left zone default" in out, out
        j2 = mesh.start_agent(lab.add_public_host("j2"))
        mesh.wait_address(j2)
        zone = zone_view(mesh)
        assert own in zone, "the cut-off node was dropped from the zone"
        want = {k: v for k, v in zone.items() if k != own}
        # The rest of the mesh follows (so the updates were published while cut was away).
        wait_for(lambda: device_view(mesh, others["p1"]) ==
                 {k: v for k, v in zone.items() if k != agents["p1"].public_key}, 20,
                 "p1 to follow the zone")
        assert device_view(mesh, cut) != want, "cut learned the changes while cut off?"
        assert time.monotonic() - cut_at < CUT_FOR, "the changes took longer than the cut"
        time.sleep(CUT_FOR - (time.monotonic() - cut_at))
        # Plug the cable back in right after a failed reconnection attempt (the worst
        # moment, and a deterministic one): "within 5 s" must hold whenever it comes back.
        attempts = failed_attempts(agents["cut"])
        wait_for(lambda: failed_attempts(agents["cut"]) > attempts, 60,
                 "cut's agent to try (and fail) to reconnect", interval=0.05)
        print(f"\nthe cable goes back {time.monotonic() - cut_at:.0f}s after it was pulled, "
              f"just after a failed reconnection attempt")

        cut.link_up()
        up_at = time.monotonic()
        converged = None
        while time.monotonic() - up_at < max(CONVERGE_WITHIN, measure):
            want = {k: v for k, v in zone_view(mesh).items() if k != own}
            if device_view(mesh, cut) == want:
                converged = time.monotonic() - up_at
                break
            time.sleep(0.2)
        log_tail = "\n".join(agents["cut"].proc.log_text().splitlines()[-12:])
        assert agents["cut"].proc.running, log_tail
        print(f"converged "
              f"{'never' if converged is None else f'{converged:.1f}s'} after link up; "
              f"cut's agent log ends with:\n{log_tail}")
        if converged is None:
            raise AssertionError(f"cut's wg0 still differs from the zone after "
                                 f"{max(CONVERGE_WITHIN, measure):.0f}s: "
                                 f"{device_view(mesh, cut)} != {want}")
        assert converged <= CONVERGE_WITHIN, \
            f"cut's wg0 differed from the zone until {converged:.1f}s after link up"

"""Real agents on a Redis Cluster in the lab: `controltower serve --redis-url
redis+cluster://...` and six cluster nodes on the tower host (testbed/rediscluster.py run
there), real `aircrew` (wireguard-go) on public hosts, `--controller redis+cluster://...`,
in two zones whose slots are on two different primaries: each agent finds its zone's
shard by the MOVED of its first read, and the nodes of each zone ping each other.
"""
from __future__ import annotations

import sys

import pytest

from testbed.lab import Lab
from testbed.mesh import LabAgent, Mesh, wait_for
from testbed.rediscluster import key_slot
from wire.keys import Keys
from wire.redisconn import parse_cluster_url

pytestmark = pytest.mark.slow

# redis-cli --cluster create gives the first three nodes these slot ranges, in order
SHARDS = [(0, 5460), (5461, 10922), (10923, 16383)]


def zone_on(shard: int, prefix: str) -> str:
    first, last = SHARDS[shard]
    return next(name for name in (f"{prefix}-{i}" for i in range(10_000))
                if first <= key_slot(Keys().zone(name)) <= last)


def test_agents_in_zones_on_two_shards_join_and_ping():
    with Lab() as lab:
        tower = lab.add_public_host("tower")
        cluster = tower.spawn([sys.executable, "-m", "testbed.rediscluster", "--host",
                               tower.address, "--url-file", "/etc/wireguard/cluster-url"],
                              "rediscluster")
        url_file = tower.etc_dir / "cluster-url"
        url = wait_for(lambda: url_file.exists() and url_file.read_text().strip(), 60,
                       f"the cluster to form:\n{cluster.log_text()[-2000:]}")
        seeds = parse_cluster_url(url).nodes
        mesh = Mesh(lab, tower)
        mesh.start_tower("--redis-url", url, timeout=60)
        zones = [zone_on(0, "first"), zone_on(1, "second")]
        for i, zone in enumerate(zones):
            mesh.create_zone(zone, f"10.{150 + i}.0.0/24")
        agents: dict[str, LabAgent] = {}
        for zone in zones:
            for n in (1, 2):
                host = lab.add_public_host(f"{zone[0]}{n}")
                key = mesh.keygen(host)
                argv = [a if not a.startswith("--controller=") else f"--controller={url}"
                        for a in mesh.agent_argv(zone)]
                agent = LabAgent(host, zone, key, argv, mesh.agent_env(zone))
                agent.proc = host.spawn(argv, "aircrew", env=agent.env)
                agents[host.name] = agent
        addresses = {name: mesh.wait_address(agent, timeout=60) for name, agent in agents.items()}
        for zone in zones:
            members = [a for a in agents.values() if a.zone == zone]
            for a in members:
                mesh.wait_peers(a.host, {b.public_key for b in members} - {a.public_key})
            a, b = members
            assert mesh.reaches(a.host, addresses[b.name])
            assert mesh.reaches(b.host, addresses[a.name])
        # each zone's keys live on its own shard's primary, not on the other's
        owners = []
        for zone in zones:
            held = [port for host, port in seeds
                    if tower.run(["redis-cli", "-h", host, "-p", str(port), "--no-raw",
                                  "EXISTS", Keys().peers(zone)]).stdout.strip() == "(integer) 1"]
            assert len(held) == 1, held         # its primary (a replica answers MOVED)
            owners.append(set(held))
        assert not owners[0] & owners[1]
        # agents are not in each other's zone
        f1 = agents[f"{zones[0][0]}1"]
        assert not mesh.reaches(f1.host, addresses[f"{zones[1][0]}1"], timeout=3)

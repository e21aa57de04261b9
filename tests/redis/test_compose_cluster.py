"""docker-compose.cluster.yml (ControlTower on a Redis Cluster), checked without a Docker
engine: its structure, variables and commands, and then its six Redis nodes, the
cluster-forming command and the tower run here as the containers would run them
(deploy/compose-redis.sh with the image's entrypoint stubbed, ports moved to free ones).
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
import redis
import yaml

from tests.clicheck import envvars_of, parse_command
from tests import composecheck
from tests.composecheck import as_env, as_list, env_file, variable_uses
from testbed.rediscluster import free_cluster_ports
from testbed.tower import TowerProcess
from wire.redisconn import parse_cluster_url

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.cluster.yml"
ENV_EXAMPLE = ROOT / "deploy" / "compose.cluster.env.example"
NODES = [f"redis-{i}" for i in range(1, 7)]


def rendered(env: dict[str, str] | None = None) -> dict:
    """The cluster compose file with variables filled from its example env file."""
    return composecheck.rendered(COMPOSE, env if env is not None else env_file(ENV_EXAMPLE))


def test_cluster_compose_structure_and_variables():
    doc = yaml.safe_load(COMPOSE.read_text())
    assert set(doc) <= {"name", "services", "volumes", "x-redis-node"}
    assert set(doc["services"]) == {*NODES, "redis-cluster-init", "controltower"}
    example = env_file(ENV_EXAMPLE)
    used = {m["braced"] or m["plain"] for m in variable_uses(doc)}
    assert used == set(example), "variables and deploy/compose.cluster.env.example differ"
    with pytest.raises(ValueError, match="REDIS_PASSWORD"):
        rendered({k: v for k, v in example.items() if k != "REDIS_PASSWORD"})
    with pytest.raises(ValueError, match="CLUSTER_HOST_IP"):
        rendered({k: v for k, v in example.items() if k != "CLUSTER_HOST_IP"})
    doc = rendered()
    ports = set()
    for name in NODES:
        node = doc["services"][name]
        args = as_list(node["command"])
        assert args[args.index("--cluster-enabled") + 1] == "yes"
        assert args[args.index("--cluster-announce-ip") + 1] == example["CLUSTER_HOST_IP"]
        env = as_env(node["environment"])
        assert env["REDIS_CLUSTER"] == "yes" and env["REDISCLI_AUTH"] == env["REDIS_PASSWORD"]
        ports.add(env["REDIS_PORT"])
        source, volume = node["volumes"][1].split(":")
        assert volume == "/data" and source in doc["volumes"]
        assert node["network_mode"] == "host" and "healthcheck" in node
    assert len(ports) == 6, "two nodes on one port"
    init = " ".join(as_list(doc["services"]["redis-cluster-init"]["command"]))
    assert "--cluster-replicas 1" in init
    assert {f"$CLUSTER_HOST_IP:{p}" for p in ports} <= set(init.replace("$$", "$").split())
    tower = doc["services"]["controltower"]
    assert tower["depends_on"] == {"redis-cluster-init": {
        "condition": "service_completed_successfully"}}
    url = parse_cluster_url(tower["environment"]["CONTROLTOWER_REDIS_URL"])
    assert {str(p) for _, p in url.nodes} <= ports and url.password == example["REDIS_PASSWORD"]


def test_cluster_compose_tower_command_is_a_real_cli_command(monkeypatch):
    spec = rendered()["services"]["controltower"]
    env = as_env(spec["environment"])
    ctx = parse_command(as_list(spec["command"]), env, monkeypatch)
    assert set(env) <= envvars_of(ctx.command, ctx)


def test_cluster_compose_runs_as_in_the_containers(tmp_path):
    """Six nodes through compose-redis.sh, the init command verbatim (twice: a formed
    cluster is left alone), the tower on the compose URL; a zone lands on the cluster."""
    # tests/redis needs redis-server anyway and `make test` installs it: no skip
    assert shutil.which("redis-server") and shutil.which("redis-cli"), \
        "redis-server/redis-cli are not installed (make deps installs them)"
    doc = rendered({**env_file(ENV_EXAMPLE), "CLUSTER_HOST_IP": "127.0.0.1"})
    password = env_file(ENV_EXAMPLE)["REDIS_PASSWORD"]
    ports = free_cluster_ports(6)
    compose_port = {as_env(doc["services"][n]["environment"])["REDIS_PORT"]: str(p)
                    for n, p in zip(NODES, ports)}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "docker-entrypoint.sh"
    stub.write_text('#!/bin/sh\nexec "$@" --bind 127.0.0.1 --save "" --cluster-node-timeout 2000\n')
    stub.chmod(0o755)
    procs: list[subprocess.Popen] = []
    tower = None
    try:
        for name, port in zip(NODES, ports):
            spec = doc["services"][name]
            env = {**os.environ, **as_env(spec["environment"]), "PATH": f"{bin_dir}:{os.environ['PATH']}",
                   "REDIS_PORT": str(port), "REDIS_DATA_DIR": str(tmp_path / name)}
            (tmp_path / name).mkdir()
            procs.append(subprocess.Popen(["sh", str(ROOT / "deploy" / "compose-redis.sh"),
                                           *as_list(spec["command"])], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            client = redis.Redis(port=port, password=password)
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.exceptions.ConnectionError:
                    time.sleep(0.05)
            with pytest.raises(redis.exceptions.AuthenticationError):
                redis.Redis(port=port).ping()
        conf = tmp_path / "redis-1" / "cluster.conf"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        init = doc["services"]["redis-cluster-init"]
        script = as_list(init["command"])[0].replace("$$", "$")
        script = re.sub(r"\b(700[1-6])\b", lambda m: compose_port[m[1]], script)
        env = {**os.environ, **as_env(init["environment"])}
        for _ in range(2):
            done = subprocess.run(["sh", "-c", script], env=env, capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
        spec = doc["services"]["controltower"]
        tower_env = as_env(spec["environment"])
        tower_env["CONTROLTOWER_REDIS_URL"] = re.sub(
            r":(700[1-6])\b", lambda m: ":" + compose_port[m[1]], tower_env["CONTROLTOWER_REDIS_URL"])
        tower = TowerProcess(None, tmp_path / "tower", env=tower_env)
        tower.extra = [*as_list(spec["command"])[2:], "--listen", "127.0.0.1", "--port",
                       str(tower.port), "--stun-port", "0", "--data-dir", str(tower.data_dir)]
        deadline = time.monotonic() + 60
        while True:      # the replicas may still be syncing: the tower then retries
            try:
                tower.start(timeout=40)
                break
            except RuntimeError:
                assert time.monotonic() < deadline
                tower.stop()
        # the replicas logged in to their primaries with the password (masterauth)
        roles = [redis.Redis(port=p, password=password, decode_responses=True)
                 .info("replication") for p in ports]
        replicas = [r for r in roles if r["role"] == "slave"]
        assert len(replicas) == 3
        deadline = time.monotonic() + 30
        while any(redis.Redis(port=p, password=password, decode_responses=True)
                  .info("replication").get("master_link_status", "up") != "up" for p in ports):
            assert time.monotonic() < deadline, "a replica could not log in to its primary"
            time.sleep(0.2)
        assert tower.get("/health")[0] == 200
    finally:
        if tower is not None:
            tower.stop()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

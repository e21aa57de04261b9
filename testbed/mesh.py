"""A mesh in the lab: a tower host running `controltower serve`, hosts running `aircrew`.

Used by `make demo`, the end-to-end and partition tests and ``bench throughput``. Every
command is the real one a user would type; the REST API is driven with curl from the
tower host. Failures (a wait that times out, a process that exits, a refused API call)
raise ``testbed.errors.MeshFailure``.
"""
from __future__ import annotations

import ipaddress
import json
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from .errors import MeshFailure
from .host import Host, HostProcess
from .lab import Lab

BIN = Path(sys.executable).parent
TOWER_DATA = "/etc/wireguard/controltower"   # inside the tower host's private /etc/wireguard
T = TypeVar("T")


@dataclass
class LabAgent:
    """An ``aircrew`` process in a lab host, and how it was started."""
    host: Host
    zone: str
    public_key: str
    argv: list[str]
    env: dict[str, str]
    proc: HostProcess | None = None

    @property
    def name(self) -> str:
        return self.host.name


def wait_for(predicate: Callable[[], T], timeout: float, what: str,
             interval: float = 0.2) -> T:
    """Call ``predicate`` until it returns something true (returned); MeshFailure after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise MeshFailure(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Mesh:
    """``controltower serve`` on one lab host and ``aircrew`` on others."""

    def __init__(self, lab: Lab, tower: Host, detach: bool = False) -> None:
        self.lab = lab
        self.tower = tower
        self.detach = detach          # processes outlive this one (a kept lab)
        self.tower_proc: HostProcess | None = None
        self.secrets: dict[str, str] = {}
        self.agents: dict[str, LabAgent] = {}
        self.relays: dict[str, HostProcess] = {}

    # -- the tower -----------------------------------------------------------------------

    def start_tower(self, *extra: str, timeout: float = 30.0) -> None:
        argv = [str(BIN / "controltower"), "serve", "--data-dir", TOWER_DATA,
                "--listen", "0.0.0.0", *extra]
        self.tower_proc = self.tower.spawn(argv, "controltower", detach=self.detach)
        wait_for(lambda: self._health(), timeout, "the ControlTower to answer /health")
        self.secrets["default"] = self._tower_file("default-zone-secret")

    def stop_tower(self) -> None:
        if self.tower_proc is not None:
            self.tower_proc.stop()
            self.tower_proc = None

    def _tower_file(self, name: str) -> str:
        return (self.tower.etc_dir / "controltower" / name).read_text().strip()

    def _health(self) -> bool:
        if self.tower_proc is not None and not self.tower_proc.running:
            raise MeshFailure(f"controltower exited:\n{self.tower_proc.log_text()[-3000:]}")
        return self.curl("GET", "/health", check=False, token=False)[0] == 200

    def curl(self, method: str, path: str, body: Any = None, check: bool = True,
             token: bool = True) -> tuple[int, Any]:
        argv = ["curl", "-s", "-L", "-X", method, f"http://127.0.0.1:8080{path}",
                "-w", "\n%{http_code}", "-H", "Content-Type: application/json"]
        if token:
            argv += ["-H", f"Authorization: Bearer {self._tower_file('admin-token')}"]
        if body is not None:
            argv += ["--data-raw", json.dumps(body)]
        out = self.tower.run(argv, check=False).stdout
        text, _, code = out.rpartition("\n")
        status = int(code) if code.isdigit() else 0
        data = json.loads(text) if text.strip() else None
        if check and not 200 <= status < 300:
            raise MeshFailure(f"{method} {path} -> {status}: {text}")
        return status, data

    def known_secrets(self) -> dict[str, str]:
        """Every secret of this mesh: zone secrets, admin token, Redis password, node keys."""
        found = {f"zone secret of {z}": s for z, s in self.secrets.items()}
        found["admin token"] = self._tower_file("admin-token")
        found["redis password"] = self._tower_file("redis-password")
        for name, host in self.lab.hosts.items():
            key = host.etc_dir / "private.key"
            if key.exists():
                found[f"private key of {name}"] = key.read_text().strip()
        return found

    def create_zone(self, name: str, cidr: str, description: str = "") -> None:
        _, zone = self.curl("POST", "/zone", {"Name": name, "Description": description,
                                              "CIDR": cidr})
        self.secrets[name] = zone["AgentSecret"]

    # -- agents --------------------------------------------------------------------------

    def keygen(self, host: Host) -> str:
        return host.run([str(BIN / "aircrew"), "keygen", "--force", "--private-key-file",
                         "/etc/wireguard/private.key"]).stdout.strip()

    def agent_argv(self, zone: str = "default", *extra: str) -> list[str]:
        """The agent's command line; the zone secret goes in the environment (not in ps)."""
        return [str(BIN / "aircrew"), "--private-key-file=/etc/wireguard/private.key",
                f"--controller={self.tower.address}", f"--zone={zone}",
                "--heartbeat-interval=2", *extra]

    def agent_env(self, zone: str) -> dict[str, str]:
        return {"AIRCREW_CONTROLLER_PASSWORD": self.secrets.get(zone, self.secrets["default"])}

    def start_agent(self, host: Host, zone: str = "default", *extra: str,
                    new_key: bool = True) -> LabAgent:
        if new_key:
            key = self.keygen(host)
        else:  # the host already holds /etc/wireguard/private.key
            key = host.run(["wg", "pubkey"], input=host.run(
                ["cat", "/etc/wireguard/private.key"]).stdout).stdout.strip()
        agent = LabAgent(host, zone, key, self.agent_argv(zone, *extra), self.agent_env(zone))
        agent.proc = host.spawn(agent.argv, "aircrew", env=agent.env, detach=self.detach)
        self.agents[host.name] = agent
        return agent

    def restart_agent(self, agent: LabAgent) -> None:
        agent.proc = agent.host.spawn(agent.argv, "aircrew", env=agent.env)

    def mesh_address(self, host: Host) -> str | None:
        out = host.run(["ip", "-o", "-4", "addr", "show", "dev", "wg0"], check=False).stdout
        found = re.search(r"inet (\S+)/", out)
        return found.group(1) if found else None

    def wait_address(self, agent: LabAgent, timeout: float = 30.0) -> str:
        def ready():
            if agent.proc is not None and not agent.proc.running:
                raise MeshFailure(f"aircrew on {agent.name} exited:\n{agent.proc.log_text()[-3000:]}\n"
                            f"tower log:\n{self.tower_proc.log_text()[-3000:] if self.tower_proc else ''}")
            return self.mesh_address(agent.host)
        return wait_for(ready, timeout, f"wg0 on {agent.name}")

    def wg_peers(self, host: Host) -> dict[str, dict[str, str]]:
        """`wg show wg0 dump` as {public key: {endpoint, allowed_ips, handshake}}."""
        out = host.run(["wg", "show", "wg0", "dump"], check=False).stdout.splitlines()
        peers = {}
        for line in out[1:]:
            fields = line.split("\t")
            if len(fields) >= 8:
                peers[fields[0]] = {"endpoint": fields[2], "allowed_ips": fields[3],
                                    "handshake": fields[4]}
        return peers

    def wait_peers(self, host: Host, keys: set[str], timeout: float = 30.0) -> None:
        wait_for(lambda: set(self.wg_peers(host)) == keys, timeout,
                 f"{host.name}'s wg0 to hold exactly {len(keys)} peers")

    def reaches(self, src: Host, address: str, timeout: float = 20.0) -> bool:
        """Ping until it answers (a handshake may be needed first) or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if src.ping(address, count=1, timeout=1):
                return True
        return False


    # -- relays and paths ------------------------------------------------------------------

    def relay_redis_url(self) -> str:
        """The tower's private Redis as seen from the wan, as the relays' own user."""
        from urllib.parse import quote
        password = quote(self._tower_file("relay-redis-password"), safe="")
        return f"redis://ct-relay:{password}@{self.tower.address}:6379/0"

    def start_relay(self, host: Host, region: str, *extra: str) -> HostProcess:
        """``controltower relay`` on ``host`` (its key in the host's /etc/wireguard/relay),
        announced in the tower's Redis as the ``ct-relay`` user; the Redis URL goes in the
        environment."""
        argv = [str(BIN / "controltower"), "relay", "--region", region,
                "--listen", "0.0.0.0:3480", "--public-address", host.address,
                "--data-dir", "/etc/wireguard/relay", *extra]
        proc = host.spawn(argv, f"relay-{region}",
                          env={"CONTROLTOWER_REDIS_URL": self.relay_redis_url()})
        self.relays[region] = proc
        wait_for(lambda: any(r.get("Region") == region for r in self.curl(
            "GET", "/zones/default/paths")[1]["Relays"]) or (
            not proc.running and _raise(MeshFailure(f"relay {region} exited:\n"
                                                    f"{proc.log_text()[-2000:]}"))),
            20, f"relay {region} to announce itself")
        return proc

    def paths(self, host: Host) -> dict[str, Any]:
        """The agent's path status (``<state dir>/wg0-paths.json``): {"peers": {key: {path,
        relay, ...}}, "relays": {...}}; empty before the agent wrote it."""
        try:
            return json.loads((host.etc_dir / "wg0-paths.json").read_text())
        except (OSError, ValueError):
            return {}

    def path_of(self, host: Host, peer_key: str) -> tuple[str | None, str | None]:
        entry = self.paths(host).get("peers", {}).get(peer_key) or {}
        return entry.get("path"), entry.get("relay")

    def first_ping(self, src: Host, address: str, timeout: float) -> float | None:
        """Seconds until ``src`` gets an answer from ``address`` over wg0 (None: never)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if src.ping(address, count=1, timeout=0.3):
                return time.monotonic() - start
        return None


@contextmanager
def towered_lab() -> Iterator[tuple[Lab, Mesh]]:
    """A lab with a public host "tower" running ``controltower serve``: (lab, mesh); the
    lab and everything in it removed on exit, even on failure."""
    with Lab() as lab:
        mesh = Mesh(lab, lab.add_public_host("tower"))
        mesh.start_tower()
        yield lab, mesh


def _raise(exc: Exception):
    raise exc


def in_network(address: str, cidr: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(cidr)

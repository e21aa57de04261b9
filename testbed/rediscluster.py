"""A real Redis Cluster on loopback, for tests and benchmarks: N ``redis-server
--cluster-enabled yes`` processes on free ports (the client port and its bus port, port +
10000, both free), formed with ``redis-cli --cluster create --cluster-replicas R``.

``start`` returns once every node says ``cluster_state:ok``, all agree on the slot map
and every replica's replication link is up (a replica that has not synced yet may not
take over: a primary killed right after creation was never replaced). Every process is
stopped and the data directory removed by ``stop``, also when ``start`` fails.
Faults: ``kill`` (SIGKILL), ``restart``, ``wait_promoted``, ``add_node``, ``reshard_lowest_slot``
(``redis-cli --cluster reshard ... --cluster-slots 1`` moves a primary's lowest slot:
``zone_on(primary, first_slot=True)`` names a zone there)."""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis import crc

BUS_OFFSET = 10000        # a cluster node's bus port is its port + 10000


def key_slot(key: str) -> int:
    """Redis Cluster's slot of a key or channel (its hash tag, if any)."""
    return crc.key_slot(key.encode())


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class NodeExited(RuntimeError):
    """A cluster node's redis-server exited (its output is in the message)."""


def free_cluster_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` ports whose bus ports (+10000) are free too."""
    out: list[int] = []
    while len(out) < count:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port + BUS_OFFSET < 65536 and port not in out and _port_free(port + BUS_OFFSET, host):
            out.append(port)
    return out


@dataclass
class Node:
    port: int
    dir: Path
    proc: subprocess.Popen | None = None
    host: str = "127.0.0.1"

    def client(self, **kw: Any) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, decode_responses=True, **kw)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalCluster:
    def __init__(self, nodes: int = 6, replicas: int = 1, node_timeout_ms: int = 2000,
                 extra: list[str] | None = None, host: str = "127.0.0.1") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ct-cluster-"))
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.extra = extra or []
        self.host = host        # where the nodes listen, and the address they announce
        self.nodes = [Node(p, self.dir / str(p), host=host)
                      for p in free_cluster_ports(nodes, host)]

    # -- life ---------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> LocalCluster:
        try:
            for node in self.nodes:
                self._spawn(node)
            for node in self.nodes:
                self._wait_first_start(node)
            subprocess.run(["redis-cli", "--cluster", "create",
                            *(f"{self.host}:{n.port}" for n in self.nodes),
                            "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                           check=True, capture_output=True, timeout=60)
            self.wait_ok(timeout)
            return self
        except BaseException:
            self.stop()
            raise

    def _spawn(self, node: Node) -> None:
        node.dir.mkdir(parents=True, exist_ok=True)
        with (node.dir / "redis.log").open("ab") as log:
            node.proc = subprocess.Popen(
                ["redis-server", "--port", str(node.port), "--bind", self.host,
                 "--cluster-enabled", "yes", "--cluster-config-file", str(node.dir / "nodes.conf"),
                 "--cluster-node-timeout", str(self.node_timeout_ms), "--dir", str(node.dir),
                 "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                 "--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning",
                 "--enable-debug-command", "local", *self.extra],
                stdout=log, stderr=subprocess.STDOUT)

    def _wait_first_start(self, node: Node, attempts: int = 3) -> None:
        """A new node up; one whose port (or bus port) was taken between the look and
        its start, so that it exited, starts again on other ports."""
        for attempt in range(attempts):
            try:
                return self._wait_ping(node)
            except NodeExited:
                if attempt == attempts - 1:
                    raise
                taken = {n.port for n in self.nodes}
                node.port = next(p for p in free_cluster_ports(4, self.host) if p not in taken)
                node.dir = self.dir / str(node.port)
                self._spawn(node)

    def _wait_ping(self, node: Node, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if node.client(socket_timeout=0.5).ping():
                    return
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.exceptions.ConnectionError:
                if node.proc is not None and node.proc.poll() is not None:
                    log = (node.dir / "redis.log").read_text(errors="replace")[-500:]
                    raise NodeExited(f"redis-server :{node.port} exited: {log}") from None
            time.sleep(0.02)
        raise RuntimeError(f"redis-server :{node.port} did not answer")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and agrees on one owner per slot."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(n.client().cluster("info")["cluster_state"] == "ok"
                       for n in self.nodes if n.alive) and self._slots_agree() \
                        and self._replicas_linked():
                    return
            except redis.exceptions.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the cluster did not become ok")

    def _replicas_linked(self) -> bool:
        """Every live replica has its replication link up (else it may not be
        allowed to take over: cluster-replica-validity-factor)."""
        for n in self.nodes:
            if n.alive:
                info = n.client().info("replication")
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
        return True

    def _slots_agree(self) -> bool:
        views = {tuple(sorted((a, b, p) for a, b, p in self.slot_ranges(n))) for n in self.nodes if n.alive}
        return len(views) == 1

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- topology -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{self.host}:{n.port}" for n in self.nodes)

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def slot_ranges(self, via: Node) -> list[tuple[int, int, int]]:
        """(first slot, last slot, primary port) as ``via`` sees them."""
        return [(int(r[0]), int(r[1]), int(r[2][1])) for r in via.client().execute_command("CLUSTER", "SLOTS")]

    def owner(self, slot: int) -> Node:
        live = next(n for n in self.nodes if n.alive)
        for first, last, port in self.slot_ranges(live):
            if first <= slot <= last:
                return self.node(port)
        raise KeyError(slot)

    def primaries(self) -> list[Node]:
        live = next(n for n in self.nodes if n.alive)
        return [self.node(p) for p in sorted({p for _, _, p in self.slot_ranges(live)})]

    def node_id(self, node: Node) -> str:
        return node.client().execute_command("CLUSTER", "MYID")

    def replica_of(self, primary: Node) -> Node:
        pid = self.node_id(primary)
        for n in self.nodes:
            if n.alive and n is not primary:
                role = n.client().execute_command("ROLE")
                if role[0] == "slave" and int(role[2]) == primary.port:
                    return n
        raise KeyError(f"no replica of :{primary.port} ({pid})")

    def zone_on(self, primary: Node, prefix: str = "zone", first_slot: bool = False) -> str:
        """A zone name whose slot the primary owns (its lowest slot: what
        ``redis-cli --cluster reshard --cluster-slots 1`` moves first)."""
        live = next(n for n in self.nodes if n.alive)
        ranges = [(a, b) for a, b, p in self.slot_ranges(live) if p == primary.port]
        lowest = min(a for a, _ in ranges)
        i = 0
        while True:
            name = f"{prefix}-{i}"
            s = key_slot(name)
            if (s == lowest) if first_slot else any(a <= s <= b for a, b in ranges):
                return name
            i += 1

    # -- faults ---------------------------------------------------------------------------
    def kill(self, node: Node) -> None:
        if node.alive:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait()

    def restart(self, node: Node) -> None:
        self._spawn(node)
        self._wait_ping(node)

    def add_node(self) -> Node:
        """A new empty primary joined to the cluster (``redis-cli --cluster add-node``)."""
        port = next(p for p in free_cluster_ports(8, self.host)
                    if p not in {n.port for n in self.nodes})
        node = Node(port, self.dir / str(port), host=self.host)
        self.nodes.append(node)            # stopped with the others, whatever happens
        self._spawn(node)
        self._wait_ping(node)
        existing = next(n for n in self.nodes if n.alive and n is not node)
        subprocess.run(["redis-cli", "--cluster", "add-node", f"{self.host}:{node.port}",
                        f"{self.host}:{existing.port}"],
                       check=True, capture_output=True, timeout=60)
        return node

    def wait_promoted(self, replica: Node, timeout: float = 30.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                if replica.client().execute_command("ROLE")[0] == "master":
                    return time.monotonic() - t0
            except redis.exceptions.RedisError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f":{replica.port} was not promoted within {timeout} s")

    def reshard_lowest_slot(self, source: Node, target: Node) -> None:
        subprocess.run(["redis-cli", "--cluster", "reshard", f"{self.host}:{source.port}",
                        "--cluster-from", self.node_id(source), "--cluster-to", self.node_id(target),
                        "--cluster-slots", "1", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)


def main(argv: list[str] | None = None) -> int:
    """``python -m testbed.rediscluster --host ADDR --url-file PATH``: a cluster that runs
    until SIGTERM (a lab host's, testbed.host ``spawn``); its URL is written to the file
    once it is ready."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m testbed.rediscluster")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--url-file", type=Path, required=True)
    args = parser.parse_args(argv)
    stop = False

    def terminated(*_: object) -> None:
        nonlocal stop
        stop = True
    signal.signal(signal.SIGTERM, terminated)
    with LocalCluster(host=args.host) as cluster:
        args.url_file.write_text(cluster.url + "\n")
        while not stop:
            time.sleep(0.2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

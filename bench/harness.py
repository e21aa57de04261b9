"""The stack a scenario runs against: real redis-server, real ``controltower serve``, a zone.

Also: raising the file-descriptor limit (every simulated agent holds one pub/sub
connection, as a real agent does), agent identities (own X25519 key, register body) and
the direct pre-registration used to build large zones quickly.
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from controltower.private_redis import TCP_BACKLOG
from ipam.store import ZoneStore
from testbed.redisserver import RedisProcess
from testbed.tower import TowerProcess
from wire import proof

log = logging.getLogger(__name__)

ZONE = "bench"
ZONE_CIDR = "10.64.0.0/16"          # 65,534 addresses: room for every scenario's nodes
ENDPOINT_NETS = ("192.0.2", "198.51.100", "203.0.113")   # documentation ranges only


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit to %d: %s", hard, exc)
    return soft


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-fsync", choices=("always", "everysec"), default="always",
                        help="Redis appendfsync: always is what the tower's own Redis uses "
                             "(private_redis.py); everysec is a diagnostic, not the target")
    parser.add_argument("--publish-window", type=float, default=None,
                        help="the tower's --publish-window (default: the tower's own)")


def stack_for(args: argparse.Namespace) -> "Stack":
    tower_args = []
    if getattr(args, "publish_window", None) is not None:
        tower_args += ["--publish-window", str(args.publish_window)]
    return Stack(redis_args=["--appendfsync", getattr(args, "redis_fsync", "always")],
                 tower_args=tower_args)


def stack_options(args: argparse.Namespace) -> str:
    """The stack options of a command line, as given."""
    out = ""
    if getattr(args, "redis_fsync", "always") != "always":
        out += f" --redis-fsync {args.redis_fsync}"
    if getattr(args, "publish_window", None) is not None:
        out += f" --publish-window {args.publish_window:g}"
    return out


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Identity:
    """One simulated node: its WireGuard key pair, agent session id and register body."""
    private_key: str
    public_key: str
    session: str
    body: dict[str, Any]


def make_identity(index: int, prefix: str = "sim") -> Identity:
    """A node with a fresh key and a register body in the form the tower stores it.

    The body is what the agent sends with a static endpoint (``--local-endpoint-ip``) and
    already canonical (what ``wire.messages`` makes of it), so a direct pre-registration
    and a later register request through the tower, by the agent with this session id,
    produce the same peer record: the second one is idempotent and publishes nothing.
    """
    private = proof.generate_private_key()
    net = ENDPOINT_NETS[index % len(ENDPOINT_NETS)]
    host = (index // len(ENDPOINT_NETS)) % 254 + 1
    port = 10000 + index // (len(ENDPOINT_NETS) * 254)
    body = {"endpoint": f"{net}.{host}:{port}", "listen_port": 51820, "request_ip": None,
            "child_prefixes": [], "nat_type": "static", "hostname": f"{prefix}-{index}"}
    session = f"{prefix}-{index}-{secrets.token_hex(6)}"
    return Identity(private, proof.public_key_of(private), session, body)


def make_identities(count: int, prefix: str = "sim", start: int = 0) -> list[Identity]:
    return [make_identity(start + i, prefix) for i in range(count)]


@dataclass
class Stack:
    """redis-server + controltower serve + one zone. Use as a context manager."""
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ct-bench-")))
    zone: str = ZONE
    cidr: str = ZONE_CIDR
    tower_args: list[str] = field(default_factory=list)
    redis_args: list[str] = field(default_factory=list)
    keep: bool = False
    redis_proc: RedisProcess | None = None
    tower: TowerProcess | None = None
    fd_limit: int = 0

    def __enter__(self) -> "Stack":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(failed=exc[0] is not None)

    def start(self) -> None:
        self.fd_limit = raise_fd_limit()
        maxclients = max(1000, self.fd_limit - 128)
        self.redis_proc = RedisProcess(self.workdir / "redis", extra=[
            "--maxclients", str(maxclients), "--tcp-backlog", str(TCP_BACKLOG), *self.redis_args])
        self.redis_proc.start()
        self.tower = TowerProcess(self.redis_proc.url, self.workdir / "tower",
                                  extra=["--stun-port", "0", *self.tower_args])
        self.tower.start(timeout=30)
        store = self.store()
        store.create_zone(self.zone, self.cidr, "benchmark zone")
        log.info("stack up: redis :%d (maxclients %d), tower %s, zone %s %s",
                 self.redis_proc.port, maxclients, self.tower.api, self.zone, self.cidr)

    def stop(self, failed: bool = False) -> None:
        if failed and self.tower is not None:
            tail = self.tower.log_text()[-3000:]
            if tail:
                print(f"--- tail of the tower log ({self.tower.log_path}) ---\n{tail}",
                      file=sys.stderr)
        if self.tower is not None:
            self.tower.stop()
        if self.redis_proc is not None:
            self.redis_proc.stop()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def redis_url(self) -> str:
        assert self.redis_proc is not None
        return self.redis_proc.url

    def client(self) -> redis.Redis:
        assert self.redis_proc is not None
        return self.redis_proc.client(socket_timeout=60)

    def store(self) -> ZoneStore:
        return ZoneStore(self.client())

    def preregister(self, identities: list[Identity]) -> float:
        """Register nodes straight into the store (no request stream); returns seconds.

        Builds a large zone in seconds. Nobody is subscribed yet, so the flush at the
        end publishes to no one; the agents then register again through the tower with
        proof of possession, which leaves their records unchanged (no update).
        """
        started = time.monotonic()
        store = self.store()
        for ident in identities:
            store.register(self.zone, ident.public_key, session=ident.session, **ident.body)
        store.flush(self.zone)
        store.redis.close()
        return time.monotonic() - started

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by the tower process (worker threads) and by Redis."""
        out: dict[str, float] = {}
        if self.tower is not None and self.tower.proc is not None:
            out["tower"] = process_cpu(self.tower.proc.pid)
        client = self.client()
        try:
            info = client.info("cpu")
            out["redis"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        finally:
            client.close()
        return out

    def command_stats(self) -> dict[str, dict[str, float]]:
        """Redis INFO commandstats: {command: {"calls", "usec_per_call"}}."""
        client = self.client()
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        return {name.removeprefix("cmdstat_"): {"calls": int(v["calls"]),
                                                 "usec_per_call": float(v["usec_per_call"])}
                for name, v in stats.items()}

    def peer_count(self) -> int:
        client = self.client()
        try:
            return int(client.hlen(self.store().keys.peers(self.zone)))
        finally:
            client.close()

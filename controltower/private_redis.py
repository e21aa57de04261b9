"""A private redis-server child with AOF persistence in the tower's data directory.

One command gives a working tower on a single machine. The ``default`` Redis user is
off; the tower connects as ``ct-tower``, whose password is generated on first start and
kept in ``<data-dir>/redis-password`` (mode 0600); relays on other hosts as ``ct-relay``
(``<data-dir>/relay-redis-password``, rules in aclrules.relay). The ACL file
(``users.acl``) holds only those three: the agents' users (per node, join key and zone secret) are applied by
the tower from their stored digests at every start and after a failover (controltower/
acl.py). No secret is ever on a command line.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import resource
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis

from wire.errors import Unavailable

from wire.keys import Keys
from wire.secretfile import read_or_create_secret, write_secret

from . import aclrules, children

log = logging.getLogger(__name__)

TOWER_USER = "ct-tower"
RELAY_USER = "ct-relay"
# Every agent holds one pub/sub connection: room for a few zones of 10,000 agents.
MAX_CLIENTS = 65000
RESERVED_FDS = 32   # descriptors redis-server keeps for itself beyond maxclients
# Thousands of agents reconnect at once after an outage; Redis's default queue of 511
# unaccepted connections overflows while it is busy, and each refused SYN costs an agent
# a retransmission (1 s, 3 s, 7 s). The kernel caps it at net.core.somaxconn.
TCP_BACKLOG = 4096
# What all clients' buffers together may hold before Redis evicts the biggest (docs/security.md).
MAX_CLIENT_MEMORY = "1gb"


def raise_open_files(clients: int) -> int:
    """Raise this process's limit on open files (the redis-server child inherits it) to
    what ``clients`` connections need, as far as allowed; returns the clients it allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = clients + RESERVED_FDS
    unlimited = hard == resource.RLIM_INFINITY
    if soft != resource.RLIM_INFINITY and soft < want:
        try:   # the hard limit too: allowed with privileges (root, CAP_SYS_RESOURCE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard if unlimited else max(hard, want)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want if unlimited else min(want, hard), hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    allowed = clients if soft == resource.RLIM_INFINITY else min(clients, soft - RESERVED_FDS)
    if allowed < clients:
        log.warning("the open-file limit (%d) lets the private Redis serve %d clients, not "
                    "%d: raise it (systemd: LimitNOFILE=) for large zones", soft, allowed,
                    clients)
    return allowed


def connect_host(bind: str) -> str:
    """The address the tower reaches a server on that binds ``bind``: loopback of the
    family for a wildcard, else the address itself."""
    if bind in ("", "0.0.0.0", "*"):
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    return bind


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def check_port(bind: str, port: int) -> None:
    """Unavailable (saying why, and what to do) when nothing could listen on ``bind``:``port``."""
    host = "0.0.0.0" if bind in ("", "*") else bind
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as Redis does
        try:
            probe.bind((host, port))
            return
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise Unavailable(f"the private Redis cannot listen on "
                                  f"{url_host(host)}:{port}: {exc.strerror}") from None
    who = "a Redis" if _answers_like_redis(connect_host(bind), port) else "another program"
    raise Unavailable(
        f"port {port} on {host} is in use by {who} (Debian's redis-server service? "
        f"`systemctl disable --now redis-server`), so the private Redis cannot start: free "
        f"it, choose another --redis-port, or use that Redis with --redis-url")


def _answers_like_redis(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64)[:1] in (b"+", b"-")
    except OSError:
        return False


@dataclass(frozen=True)
class RedisTLSPort:
    """A TLS port of the private Redis (agents on networks the tower does not trust)."""
    port: int
    cert: Path
    key: Path


class PrivateRedis:
    """The child redis-server: ``start`` it, ``restart`` it when it died (same
    configuration, same AOF), ``stop`` it. Every file it writes is 0600 (umask 077)."""

    def __init__(self, data_dir: Path, bind: str = "127.0.0.1", port: int = 6379,
                 tls: RedisTLSPort | None = None, keys: Keys = Keys()) -> None:
        self.data_dir = data_dir
        self.bind = bind
        self.port = port
        self.tls = tls
        self.keys = keys
        self.password = read_or_create_secret(data_dir / "redis-password",
                                              lambda: secrets.token_urlsafe(24),
                                              "Redis password file")
        self.relay_password = read_or_create_secret(data_dir / "relay-redis-password",
                                                    lambda: secrets.token_urlsafe(24),
                                                    "relay's Redis password file")
        self.proc: subprocess.Popen | None = None
        self.config: Path | None = None

    @property
    def url(self) -> str:
        host = url_host(connect_host(self.bind))
        return f"redis://{TOWER_USER}:{quote(self.password, safe='')}@{host}:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise Unavailable("redis-server is not on PATH: install it, or pass --redis-url")
        check_port(self.bind, self.port)
        if self.tls is not None:
            check_port(self.bind, self.tls.port)
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(redis_dir, 0o700)
        acl_file = self.data_dir / "users.acl"
        digest = hashlib.sha256(self.password.encode()).hexdigest()
        relay_digest = hashlib.sha256(self.relay_password.encode()).hexdigest()
        # The default user is off (no one can log in as it) but keeps full rights: Redis
        # replays the AOF as that user, and a transaction it may not run would be lost.
        # The tower's and the relays' users are rewritten at every start; agents' users
        # are applied by the tower from its registry (never saved here: ACL SAVE blocks
        # Redis).
        relay_rules = " ".join(aclrules.relay(self.keys))
        write_secret(acl_file, "\n".join(["user default off ~* &* +@all",
                                          f"user {TOWER_USER} on #{digest} ~* &* +@all",
                                          f"user {RELAY_USER} {relay_rules} #{relay_digest}",
                                          ""]))
        self.config = self.data_dir / "redis.conf"
        binds = "* -::*" if self.bind in ("0.0.0.0", "::", "") else self.bind
        max_clients = raise_open_files(MAX_CLIENTS)
        tls = [] if self.tls is None else [
            f"tls-port {self.tls.port}", f"tls-cert-file {self.tls.cert}",
            f"tls-key-file {self.tls.key}", "tls-auth-clients no"]
        write_secret(self.config, "\n".join([
            f"bind {binds}", f"port {self.port}", f"dir {redis_dir}", "appendonly yes",
            "daemonize no", "protected-mode no", "loglevel warning",
            f"maxclients {max_clients}", f"tcp-backlog {TCP_BACKLOG}", "appendfsync always",
            f"aclfile {acl_file}", *tls,
            # No argument over 1 MB (Redis's lowest setting; a 150 MB one reached Redis
            # whole before), and a bound on what all clients together make Redis hold
            # (a refused command is read whole before the ACL check): the tower's own
            # connections are exempt (CLIENT NO-EVICT, wire.redisconn.never_evicted).
            "proto-max-bulk-len 1mb", f"maxmemory-clients {MAX_CLIENT_MEMORY}", ""]))
        log.info("starting a private redis-server on %s:%d%s (data in %s)", self.bind,
                 self.port, f" and TLS port {self.tls.port}" if self.tls else "", redis_dir)
        self._spawn(binary, timeout)

    def _spawn(self, binary: str, timeout: float) -> None:
        # umask 077: Redis rewrites users.acl (secret digests) and its AOF (the tower's
        # private key) by renaming new files, which would otherwise be 0644.
        self.proc = children.spawn([binary, str(self.config)], umask=0o077)
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"redis-server exited with status {self.proc.returncode} "
                                  "(its own message is above)")
            try:
                client.ping()
                return
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                time.sleep(0.05)
            finally:
                client.close()
        raise Unavailable(f"redis-server did not answer within {timeout:.0f}s")

    def exited(self) -> int | None:
        """The exit status when the child has exited, else None."""
        return None if self.proc is None else self.proc.poll()

    def restart(self, timeout: float = 15.0) -> None:
        """Start the child again with the configuration of ``start`` (it replays its AOF)."""
        binary = shutil.which("redis-server")
        if binary is None or self.config is None:
            raise Unavailable("cannot restart the private Redis: redis-server is gone")
        check_port(self.bind, self.port)
        self._spawn(binary, timeout)

    def stop(self) -> None:
        if self.proc is not None:
            children.stop(self.proc, "redis-server")

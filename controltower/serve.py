"""``controltower serve``: Redis (private or given), request worker, STUN, relay, REST API.

This process runs the request worker, the STUN responder and the relay in threads and supervises
two children that die with it: an optional private redis-server and gunicorn serving
the Flask app. Several such processes on one Redis are replicas of one tower.

The process and its gunicorn workers share a fresh run directory: the Prometheus
multiprocess files (so ``/metrics`` sums the replica) and, for ``--log-format json``,
gunicorn's logging configuration. It is removed at exit, and at start those of
processes that died without removing theirs (SIGKILL).
"""
from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import os
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
from urllib.parse import urlsplit, urlunsplit
from dataclasses import dataclass
from pathlib import Path

import redis

from ipam.store import DEFAULT_ZONE, ZoneStore
from wire import logs
from wire.errors import MeshError, Unavailable
from wire.keys import Keys
from wire.redisconn import ClusterNodes, RedisTLS, connect, never_evicted
from wire.secretfile import read_or_create_secret, read_secret, write_secret

from . import children, metrics
from .acl import AgentCredentials, digest, new_secret
from .private_redis import PrivateRedis, RedisTLSPort
from .worker import RequestWorker

log = logging.getLogger(__name__)

RUN_DIR_PREFIX = "controltower-"


@dataclass
class ServeSettings:
    listen: str = "0.0.0.0"
    port: int = 8080
    redis_url: str | None = None
    redis_port: int = 6379
    data_dir: Path = Path("/var/lib/controltower")
    stun_port: int = 3478
    relay_port: int = 3480               # 0: no relay in this process
    relay_public_address: str | None = None   # None: agents use the controller's host
    relay_region: str = "tower"
    relay_datapath: str = "auto"         # auto | kernel | user
    log_level: str = "info"
    log_format: str = "text"         # text | json
    key_prefix: str = "ct:"
    workers: int = 2
    offline_after: float = 30.0
    expiry: float = 86400.0
    publish_window: float = 0.02
    publish_window_max: float = 0.25     # a busy zone's window grows up to this
    cluster_replica_acks: int = 1        # Redis Cluster: WAIT for this many replicas
    agent_acl: bool = True
    read_auth: str = "auto"          # auto: open on a loopback bind, token otherwise
    admin_token_file: Path | None = None
    http_tls_cert: Path | None = None
    http_tls_key: Path | None = None
    http_tls_ca: Path | None = None      # given: clients need a certificate it signed (mTLS)
    redis_tls: RedisTLS = RedisTLS()
    private_redis_tls: RedisTLSPort | None = None   # a TLS port of the private Redis
    redis_wait: float = 30.0             # seconds to wait for a given Redis at start


# The private Redis is restarted when it dies, after these pauses; when it dies again
# after the last, the tower exits (status 1) and its service manager takes over.
REDIS_RESTART_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)
REDIS_STABLE_AFTER = 120.0     # a Redis up this long has its restart count forgiven


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def make_data_dir(path: Path) -> None:
    """The data directory holds secrets: made 0700; an existing one that others may
    enter is used, with a warning (a directory the tower did not make is not chmodded)."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not path.is_dir():
            raise Unavailable(f"the data directory {path} is not a directory") from None
        if path.stat().st_mode & 0o077:
            log.warning("the data directory %s can be entered by other users: chmod 700 it",
                        path)


def redact(url: str) -> str:
    """A Redis URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))


def new_run_dir() -> Path:
    """A fresh ``controltower-<pid>-*`` directory under the temporary directory, after
    removing those whose process is gone."""
    for old in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*-*"):
        pid = old.name[len(RUN_DIR_PREFIX):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True          # another user's process
    return True


class Tower:
    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        self.private_redis: PrivateRedis | None = None
        self.gunicorn = None
        self.stun: list = []
        self.relay = None
        self.threads: list[threading.Thread] = []
        self.run_dir: Path | None = None

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (0), or until the API server or the private Redis
        cannot be kept running (1). A set-up step that fails raises MeshError, saying
        which file, port or server and why."""
        s = self.settings
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_event.set())
        try:
            try:
                return self._run()
            except OSError as exc:   # a file or socket of our own set-up
                where = f" ({exc.filename})" if exc.filename else ""
                raise Unavailable(f"cannot start the tower: {exc.strerror or exc}{where}") from None
            except redis.exceptions.RedisError as exc:
                raise Unavailable(f"cannot start the tower: Redis answered {exc}") from None
        finally:
            self.shutdown()

    def _run(self) -> int:
        s = self.settings
        make_data_dir(s.data_dir)
        self.run_dir = new_run_dir()
        (self.run_dir / "metrics").mkdir()
        metrics.use_directory(self.run_dir / "metrics")
        redis_url = s.redis_url
        if not redis_url:
            self.private_redis = PrivateRedis(s.data_dir, s.listen, s.redis_port,
                                              s.private_redis_tls, Keys(s.key_prefix))
            self.private_redis.start()
            redis_url = self.private_redis.url
            log.info("agents connect with --controller <this host>:%d", s.redis_port)
        store = ZoneStore(connect(redis_url, s.redis_tls, redis_connect_func=never_evicted),
                          Keys(s.key_prefix), expiry=s.expiry)
        self._wait_for_redis(store, redis_url)
        store.ensure_default_zone()
        creds = None
        if s.agent_acl:
            server_ids = self._server_ids(store)     # before the users are applied
            creds = self._agent_credentials(store)
            self._thread(lambda stop: self._follow_redis(store, server_ids, stop),
                         "redis-watch")
        self.token_file = self._admin_token_file()
        worker = RequestWorker(store, publish_window=s.publish_window,
                               publish_window_max=s.publish_window_max, credentials=creds,
                               replica_acks=s.cluster_replica_acks)
        self._thread(worker.run, "request-worker")      # and its gate
        if s.stun_port:
            # Two ports, so an agent asking both can tell a symmetric NAT (a new
            # mapping per destination) from a cone NAT (one mapping).
            from .stun_responder import StunResponder
            for port in (s.stun_port, s.stun_port + 1):
                responder = StunResponder(s.listen, port)
                try:
                    responder.start()
                except OSError as exc:
                    raise Unavailable(f"cannot answer STUN on udp "
                                      f"{bind_address(s.listen, port)}: {exc.strerror}") from None
                self.stun.append(responder)
            log.info("answering STUN on udp ports %d and %d", s.stun_port, s.stun_port + 1)
        if s.relay_port:
            self._start_relay(store)
        self._start_gunicorn(redis_url, worker.consumer)
        scheme = "https" if s.http_tls_cert else "http"
        log.info("ControlTower API on %s://%s%s", scheme, bind_address(s.listen, s.port),
                 " (client certificates required)" if s.http_tls_ca else "")
        return self._supervise()

    def _start_relay(self, store: ZoneStore) -> None:
        from .relay.server import make_relay, relay_key
        s = self.settings
        relay = make_relay(store.redis, store.keys, relay_key(s.data_dir),
                           region=s.relay_region, host=s.relay_public_address,
                           listen=s.listen, port=s.relay_port,
                           datapath=s.relay_datapath, metrics=metrics.relay())
        try:
            relay.start()
        except OSError as exc:     # the port is taken (another replica on this host)
            log.error("the relay did not start on udp port %d: %s; this replica runs "
                      "without it (--relay-port 0 to say so)", s.relay_port, exc)
            return
        self.relay = relay

    def _supervise(self) -> int:
        """Watch the children: the API server must run; the private Redis is restarted
        (``REDIS_RESTART_DELAYS``) and the tower exits when it keeps dying."""
        restarts, up_since = 0, time.monotonic()
        while not self.stop_event.wait(0.5):
            if self.gunicorn.poll() is not None:
                log.error("the API server exited with status %s", self.gunicorn.returncode)
                return 1
            status = self.private_redis.exited() if self.private_redis else None
            if status is None:
                if restarts and time.monotonic() - up_since > REDIS_STABLE_AFTER:
                    restarts = 0
                continue
            if restarts >= len(REDIS_RESTART_DELAYS):
                log.error("the private Redis keeps exiting (status %s): giving up", status)
                return 1
            delay = REDIS_RESTART_DELAYS[restarts]
            restarts += 1
            log.error("the private Redis %s: restarting it in %.0fs (attempt %d of %d)",
                      f"exited with status {status}" if restarts == 1 or up_since else
                      "is still down", delay, restarts, len(REDIS_RESTART_DELAYS))
            up_since = 0.0
            if self.stop_event.wait(delay):
                break
            try:
                self.private_redis.restart()
                up_since = time.monotonic()
                log.warning("the private Redis is running again")
            except MeshError as exc:
                log.error("restarting the private Redis failed: %s", exc)
        return 0

    def _wait_for_redis(self, store: ZoneStore, url: str) -> None:
        """A Redis given by URL may still be starting: wait up to ``redis_wait`` seconds."""
        deadline = time.monotonic() + self.settings.redis_wait
        delay = 0.2
        while True:
            try:
                store.redis.ping()
                return
            except redis.exceptions.AuthenticationError as exc:
                raise Unavailable(f"Redis at {redact(url)} refused the tower's credentials: "
                                  f"{exc}") from None
            except redis.exceptions.RedisError as exc:
                if time.monotonic() > deadline or self.stop_event.is_set():
                    raise Unavailable(f"cannot reach Redis at {redact(url)}: {exc}") from None
                log.warning("Redis at %s does not answer yet (%s); retrying", redact(url), exc)
                self.stop_event.wait(delay)
                delay = min(delay * 2, 2.0)

    def _admin_token_file(self) -> Path:
        """The admin token's file, checked now (an empty one is an error, never an open
        API) or generated when missing, before the API workers read it."""
        token_file = self.settings.admin_token_file or self.settings.data_dir / "admin-token"
        if token_file.exists() or token_file.is_symlink():
            read_secret(token_file, "admin token file")
        else:
            write_secret(token_file, secrets.token_urlsafe(32) + "\n")
            log.info("generated the admin token for the REST API in %s", token_file)
        return token_file

    def _agent_credentials(self, store: ZoneStore) -> AgentCredentials:
        """Re-apply zone agent users; the default zone's secret lives in the data dir.

        Redis holds the truth (the secret's digest). The file ``default-zone-secret`` is
        applied when it holds a secret the tower has not seen: a new file of the operator's,
        or the first start. A file holding what the tower last applied or wrote there
        (``FILE_FIELD``) while the zone has another secret is older than a rotation through
        the API: it is left alone and named in a warning, so a restart never undoes a
        rotation. A replica started with no file keeps the stored secret."""
        creds = AgentCredentials(store.redis, store.keys)
        creds.sync(store.zone_names())
        secret_file = self.settings.data_dir / "default-zone-secret"
        stored = creds.zone_secret_digest(DEFAULT_ZONE)
        if secret_file.exists():
            secret = read_secret(secret_file, "default zone secret file")
            if digest(secret) == stored:
                creds.note_file_secret(DEFAULT_ZONE, stored)
            elif stored and digest(secret) in creds.file_secrets(DEFAULT_ZONE):
                log.warning("%s holds an older secret than zone %s's (it was rotated since): "
                            "not applied; copy the current secret there from the replica "
                            "that rotated it", secret_file, DEFAULT_ZONE)
                return creds
            else:
                creds.set(DEFAULT_ZONE, secret)
                creds.note_file_secret(DEFAULT_ZONE, digest(secret))
        elif stored:
            log.warning("zone %s already has an agent secret (set by another replica); copy "
                        "its default-zone-secret into %s", DEFAULT_ZONE, self.settings.data_dir)
            return creds
        else:
            secret = read_or_create_secret(secret_file, new_secret, "default zone secret file")
            creds.set(DEFAULT_ZONE, secret)
            creds.note_file_secret(DEFAULT_ZONE, digest(secret))
        log.info("agents of zone %s use --controller-password from %s", DEFAULT_ZONE, secret_file)
        return creds

    @staticmethod
    def _server_ids(store: ZoneStore) -> dict[str, str]:
        """The run id of each Redis server the agent users live on: the one Redis, or
        every node of a Redis Cluster (by address; a node that does not answer is left
        out, and gets the users when it answers again)."""
        if not store.sharded:
            return {"": store.redis.info("server")["run_id"]}
        nodes = ClusterNodes(store.redis)
        ids = {}
        for address in nodes.ids():
            try:
                ids[address] = nodes.client(address).info("server")["run_id"]
            except redis.exceptions.RedisError:
                pass
        return ids

    def _follow_redis(self, store: ZoneStore, applied_on: dict[str, str],
                      stop: threading.Event, interval: float = 1.0) -> None:
        """Re-apply the agent users where a Redis server changed under us.

        ACL users are not replicated and not in the AOF: after a Sentinel failover (the
        URL now leads to a promoted replica), a restart without an ACL file, or on a
        Redis Cluster a node that joined or restarted, agents could not log in there
        until the users are set again from their stored digests. ``applied_on``: the
        servers (address -> run id) they were last applied on, read before. (On a
        cluster every replica has the users already: a promotion changes nothing.)"""
        while not stop.wait(interval):
            try:
                now = self._server_ids(store)
                changed = [address for address, run_id in now.items()
                           if applied_on.get(address) != run_id]
                if changed:
                    creds = AgentCredentials(store.redis, store.keys)
                    servers = None if creds.nodes is None else [
                        creds.nodes.client(address) for address in changed]
                    creds.sync(store.zone_names(), servers)
                    log.warning("Redis server(s) changed (failover, restart or a new cluster "
                                "node%s): re-applied the agent users of every zone there",
                                f": {', '.join(changed)}" if creds.nodes is not None else "")
                    applied_on = now
            except (redis.exceptions.RedisError, MeshError) as exc:
                log.debug("cannot check the Redis server: %s", exc)

    def _thread(self, target, name: str) -> None:
        thread = threading.Thread(target=target, args=(self.stop_event,), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _start_gunicorn(self, redis_url: str, worker_id: str) -> None:
        s = self.settings
        # The app reads CONTROLTOWER_* (Flask's prefixed env): only what is set here, so a
        # variable of the admin commands (CONTROLTOWER_ADMIN_TOKEN...) in the operator's
        # environment cannot replace the token file or any other setting.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLTOWER_")}
        env = dict(inherited, CONTROLTOWER_REDIS_URL=redis_url,
                   CONTROLTOWER_WORKER_ID=worker_id,
                   CONTROLTOWER_KEY_PREFIX=s.key_prefix,
                   CONTROLTOWER_OFFLINE_AFTER=str(s.offline_after),
                   CONTROLTOWER_EXPIRY=str(s.expiry),
                   CONTROLTOWER_AGENT_ACL=json.dumps(s.agent_acl),
                   CONTROLTOWER_ADMIN_TOKEN_FILE=str(self.token_file),
                   CONTROLTOWER_SESSION_COOKIE_SECURE=json.dumps(bool(s.http_tls_cert)),
                   CONTROLTOWER_DEFAULT_ZONE_SECRET_FILE=str(
                       s.data_dir / "default-zone-secret") if s.agent_acl else "",
                   CONTROLTOWER_READ_AUTH=json.dumps(
                       s.read_auth == "token" or (s.read_auth == "auto" and not is_loopback(s.listen))))
        for name, value in (("CA", s.redis_tls.ca), ("CERT", s.redis_tls.cert),
                            ("KEY", s.redis_tls.key)):
            if value:
                env[f"CONTROLTOWER_REDIS_TLS_{name}"] = str(value)
        argv = [sys.executable, "-m", "gunicorn", "--bind", bind_address(s.listen, s.port),
                "--workers", str(s.workers), "--worker-class", "controltower.httpworker.JsonErrorWorker",
                "--threads", "4",
                "--log-level", s.log_level, "--graceful-timeout", "5", "--no-control-socket",
                *self._tls_args(), *self._log_args(), "controltower.app:create_app()"]
        self.gunicorn = children.spawn(argv, env=env)

    def _log_args(self) -> list[str]:
        """gunicorn and the app in its workers log as this process does (text with time,
        level and logger, or JSON): without it the app's lines had neither."""
        path = self.run_dir / "gunicorn-logging.json"
        path.write_text(json.dumps(logs.gunicorn_config(self.settings.log_level,
                                                        self.settings.log_format)))
        return ["--log-config-json", str(path)]

    def _tls_args(self) -> list[str]:
        s = self.settings
        if not s.http_tls_cert:
            return []
        args = ["--certfile", str(s.http_tls_cert), "--keyfile", str(s.http_tls_key)]
        if s.http_tls_ca:
            args += ["--ca-certs", str(s.http_tls_ca), "--cert-reqs", str(int(ssl.CERT_REQUIRED))]
        return args

    def shutdown(self) -> None:
        self.stop_event.set()
        if self.gunicorn is not None:
            children.stop(self.gunicorn, "gunicorn")
        for responder in self.stun:
            responder.stop()
        if self.relay is not None:
            self.relay.stop()
        for thread in self.threads:
            thread.join(5)
        if self.private_redis is not None:
            self.private_redis.stop()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)

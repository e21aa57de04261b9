"""The relay at work: one UDP socket, the table's decisions carried out, the kernel data
path kept in step, the relay kept announced in Redis.

Runs as threads of ``controltower serve`` (``--relay-port``) or of ``controltower
relay``. One datagram never ends the loop: an unexpected error is logged and counted.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import ipaddress
import logging
import os
import select
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import redis

from wire import relaymsg as rm, x25519
from wire.errors import InvalidInput, MeshError
from wire.secretfile import read_or_create_secret

from .directory import Directory, RelayRecord, prune
from .kernel import KernelPath, NftError
from .table import AddRoute, Limits, RelayTable, RemoveRoute, Send

log = logging.getLogger(__name__)

DATAPATHS = ("auto", "kernel", "user")
ANNOUNCE_INTERVAL = 2.0
MEMBERS_INTERVAL = 5.0
EXPIRE_INTERVAL = 1.0
_BATCH = 256


def relay_key(data_dir: Path, name: str = "relay.key") -> bytes:
    """The relay's X25519 private key, created on first use (file mode 0600)."""
    text = read_or_create_secret(data_dir / name, lambda: base64.b64encode(
        x25519.generate_private_key()).decode())
    return base64.b64decode(text)


def relay_id(region: str, public_key: bytes) -> str:
    return f"{region}-{hashlib.sha256(public_key).hexdigest()[:8]}"


def local_source(listen: str) -> str:
    """The local IPv4 address relayed datagrams leave from: the listen address, or the
    source of the default route (a UDP connect sends nothing)."""
    if listen not in ("0.0.0.0", "", "::"):
        return str(ipaddress.IPv4Address(listen))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


class RelayServer:
    def __init__(self, listen: str, port: int, private_key: bytes, directory: Directory | None,
                 members=None, datapath: str = "auto", limits: Limits = Limits(),
                 metrics=None) -> None:
        if datapath not in DATAPATHS:
            raise InvalidInput(f"relay data path must be one of {', '.join(DATAPATHS)}")
        self.listen, self.port = listen, port
        self.private_key = private_key
        self.public_key = x25519.public_key(private_key)
        self.directory = directory
        self.datapath = datapath
        self.metrics = metrics
        self._mac_keys: dict[bytes, bytes] = {}
        self.table = RelayTable(self._mac_key_of, os.urandom(8), members or directory, limits)
        self.kernel: KernelPath | None = None
        self.stop_event = threading.Event()
        self.sock: socket.socket | None = None
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()       # the table: socket thread and housekeeping
        self.errors = 0
        self._kernel_seen = (0, 0)
        self._reported: Counter[str] = Counter()

    def _mac_key_of(self, key: bytes) -> bytes:
        found = self._mac_keys.get(key)
        if found is None:
            if len(self._mac_keys) > 200_000:
                self._mac_keys.clear()
            found = rm.derived_key(rm.RELAY_CONTEXT, x25519.exchange(self.private_key, key))
            self._mac_keys[key] = found
        return found

    @property
    def bound_port(self) -> int:
        return self.sock.getsockname()[1] if self.sock else self.port

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.listen else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            self.sock.setsockopt(socket.SOL_SOCKET, option, 4 << 20)
        self.sock.bind((self.listen, self.port))
        self.sock.setblocking(False)
        if self.datapath != "user" and family == socket.AF_INET:
            try:
                self.kernel = KernelPath(local_source(self.listen), self.bound_port)
                self.kernel.start()
            except (NftError, OSError) as exc:
                self.kernel = None
                if self.datapath == "kernel":
                    self.sock.close()
                    raise MeshError(f"the relay's kernel data path is not available: {exc}") from None
                log.warning("relay: the kernel data path is not available (%s); forwarding in "
                            "Python (about one core per Gbit/s)", exc)
        if self.directory is not None:
            self.directory.record = dataclasses.replace(self.directory.record,
                                                        port=self.bound_port)
            self._housekeeping_once(first=True)
        for target, name in ((self._serve, "relay"), (self._housekeeping, "relay-housekeeping")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)
        log.info("relay on udp %s:%d (data path: %s)", self.listen, self.bound_port,
                 "kernel" if self.kernel else "python")

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(5)
        if self.kernel is not None:
            self.kernel.stop()
        if self.directory is not None:
            try:
                self.directory.withdraw()
            except redis.exceptions.RedisError as exc:
                log.debug("relay: cannot withdraw the announcement: %s", exc)
        if self.sock is not None:
            self.sock.close()

    # -- the socket ---------------------------------------------------------------------

    def _serve(self) -> None:
        adds: list = []
        removes: list = []
        while not self.stop_event.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.2)
            if not ready:
                continue
            with self._lock:
                for _ in range(_BATCH):
                    try:
                        data, source = self.sock.recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as exc:
                        log.debug("relay: receive: %s", exc)
                        break
                    source = source[:2]
                    try:
                        actions = self.table.handle(data, source, time.time())
                    except Exception:  # noqa: BLE001 - one datagram never ends the relay
                        self.errors += 1
                        log.exception("relay: datagram from %s", source)
                        continue
                    self._carry_out(actions, adds, removes)
            self._flush_kernel(adds, removes)

    def _carry_out(self, actions, adds: list, removes: list) -> None:
        for action in actions:
            if isinstance(action, Send):
                try:
                    self.sock.sendto(action.data, action.destination)
                except OSError as exc:
                    log.debug("relay: send to %s: %s", action.destination, exc)
            elif isinstance(action, AddRoute):
                adds.append((action.source, action.index, action.destination, action.ttl))
            elif isinstance(action, RemoveRoute):
                removes.append((action.source, action.index))

    def _flush_kernel(self, adds: list, removes: list) -> None:
        if self.kernel is not None and (adds or removes):
            try:
                self.kernel.remove([r for r in removes if ":" not in r[0][0]])
                self.kernel.add([a for a in adds if ":" not in a[0][0] and ":" not in a[2][0]])
            except NftError as exc:
                log.warning("relay: cannot update the kernel routes: %s", exc)
        adds.clear()
        removes.clear()

    # -- housekeeping -------------------------------------------------------------------

    def _housekeeping(self) -> None:
        last = {"announce": 0.0, "members": 0.0, "expire": 0.0}
        while not self.stop_event.wait(0.5):
            try:
                self._housekeeping_once(last=last)
            except (redis.exceptions.RedisError, MeshError, OSError, NftError) as exc:
                log.warning("relay: %s", exc)      # housekeeping goes on: next round

    def _housekeeping_once(self, first: bool = False, last: dict | None = None) -> None:
        now = time.monotonic()
        last = last if last is not None else {"announce": 0.0, "members": 0.0, "expire": 0.0}
        adds: list = []
        removes: list = []
        if self.directory is not None and (first or now - last["members"] >= MEMBERS_INTERVAL):
            last["members"] = now
            self.directory.refresh_members()
            with self._lock:
                self._carry_out(self.table.recheck_members(), adds, removes)
        if first or now - last["expire"] >= EXPIRE_INTERVAL:
            last["expire"] = now
            with self._lock:
                self._carry_out(self.table.expire(time.time()), adds, removes)
            self._report()
        self._flush_kernel(adds, removes)
        if self.directory is not None and (first or now - last["announce"] >= ANNOUNCE_INTERVAL):
            last["announce"] = now
            self.directory.announce()
            prune(self.directory.redis, self.directory.keys)

    def drop_key(self, key: bytes, reason: str = "revoked") -> None:
        """Forget a node now (a hook for revocation): its binding and routes go."""
        adds: list = []
        removes: list = []
        with self._lock:
            self._carry_out(self.table.drop_key(key, reason), adds, removes)
        self._flush_kernel(adds, removes)

    def stats(self) -> dict:
        with self._lock:
            counters = dict(self.table.counters)
            bindings = len(self.table.bindings)
            pairs = self.table.pairs(time.time())
        packets, octets = self.kernel.counters() if self.kernel else (0, 0)
        return {"bindings": bindings, "pairs": pairs, "kernel_packets": packets,
                "kernel_bytes": octets, "counters": counters, "errors": self.errors,
                "datapath": "kernel" if self.kernel else "python"}

    def _report(self) -> None:
        if self.metrics is None:
            return
        stats = self.stats()
        m = self.metrics
        m.bindings.set(stats["bindings"])
        m.pairs.set(stats["pairs"])
        kp, kb = stats["kernel_packets"], stats["kernel_bytes"]
        m.packets.labels("kernel").inc(max(0, kp - self._kernel_seen[0]))
        m.bytes.labels("kernel").inc(max(0, kb - self._kernel_seen[1]))
        self._kernel_seen = (kp, kb)
        counters = Counter(stats["counters"])
        for name, value in counters.items():
            delta = value - self._reported[name]
            if delta <= 0:
                continue
            if name == "forwarded":
                m.packets.labels("python").inc(delta)
            elif name == "forwarded_bytes":
                m.bytes.labels("python").inc(delta)
            elif name == "handshakes":
                m.handshakes.inc(delta)
            elif name.startswith(("refused:", "dropped:")):
                m.refused.labels(name.split(":", 1)[1]).inc(delta)
        self._reported = counters


def make_relay(client: redis.Redis, keys, private_key: bytes, *, region: str,
               host: str | None, listen: str, port: int, zones: tuple[str, ...] = ("*",),
               datapath: str = "auto", limits: Limits = Limits(), metrics=None) -> RelayServer:
    """A relay announced in ``client``'s Redis for ``zones`` (not started)."""
    public = x25519.public_key(private_key)
    record = RelayRecord(relay_id(region, public), region, host, port,
                         base64.b64encode(public).decode(), zones, time.time())
    return RelayServer(listen, port, private_key, Directory(client, record, keys),
                       datapath=datapath, limits=limits, metrics=metrics)

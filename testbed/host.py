"""Test hosts: a network namespace plus a private mount namespace, as in a container.

Every command of a :class:`Host` runs as::

    ip netns exec NAME unshare --mount --propagation private \\
        sh -c 'mount --bind RUN /run/wireguard; mount --bind ETC /etc/wireguard; exec CMD'

so each host has its own ``/run/wireguard`` (wireguard-go's UAPI sockets) and
``/etc/wireguard``, backed by temporary directories. (The mount points must exist, so
the script creates an empty ``/run/wireguard`` once, as wireguard-go itself would.) Python code runs inside a host
through a :class:`Worker`: a child ``python -m tests.nshelp`` that builds objects and
calls their methods on request (pickle over its stdin/stdout), so the code under test
runs exactly as it would on a node.

Cleanup: ``Host.close()`` (context manager, plus an atexit safety net) stops workers,
kills every process left in the namespace (all started by us: the namespace name is
unique), deletes the namespace (its veth links go with it) and the directories.
"""
from __future__ import annotations

import atexit
import importlib
import logging
import os
import pickle
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
PREFIX = "dv-"
_MOUNT_SCRIPT = ('mkdir -p /run/wireguard /etc/wireguard && '
                 'mount --bind "$1" /run/wireguard && mount --bind "$2" /etc/wireguard && '
                 'shift 2 && exec "$@"')
_LIVE: set["Host"] = set()


def available() -> str | None:
    """None when hosts can be built here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "unshare", "mount", "wireguard-go"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


class Host:
    """One namespace host. Use as a context manager."""

    def __init__(self, tag: str = "h") -> None:
        self.tag = tag
        self.name = f"{PREFIX}{secrets.token_hex(4)}-{tag}"[:31]
        self.root = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.run_dir = self.root / "run-wireguard"
        self.etc_dir = self.root / "etc-wireguard"
        self.run_dir.mkdir(mode=0o755)
        self.etc_dir.mkdir(mode=0o700)
        self._procs: list[subprocess.Popen[bytes]] = []
        self._workers: list[Worker] = []
        self._links = 0
        self._netns = False
        _LIVE.add(self)
        try:
            _sh(["ip", "netns", "add", self.name])
            self._netns = True
            self.run(["ip", "link", "set", "lo", "up"])
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Host":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs ``argv`` inside this host."""
        return ["ip", "netns", "exec", self.name, "unshare", "--mount", "--propagation",
                "private", "sh", "-c", _MOUNT_SCRIPT, "sh", str(self.run_dir),
                str(self.etc_dir), *argv]

    def run(self, argv: list[str], check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.wrap(argv), capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(argv)} failed "
                               f"({result.returncode}): {result.stderr.strip()}")
        return result

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self.wrap(argv), **kwargs)
        self._procs.append(proc)
        return proc

    def worker(self, env: dict[str, str] | None = None) -> "Worker":
        worker = Worker(self, env)
        self._workers.append(worker)
        return worker

    def new_link_name(self) -> str:
        self._links += 1
        return f"eth{self._links}"

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        self._workers.clear()
        for proc in self._procs:
            _stop(proc)
        self._procs.clear()
        if self._netns:
            self._kill_leftovers()
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
            self._netns = False
        shutil.rmtree(self.root, ignore_errors=True)
        _LIVE.discard(self)

    def _kill_leftovers(self) -> None:
        """Kill what still runs in our namespace (daemonised wireguard-go), by PID."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 2
            while pids and self.pids() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not self.pids():
                return

    def pids(self) -> list[int]:
        result = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True,
                                text=True)
        return [int(p) for p in result.stdout.split() if p.isdigit()]


def connect(a: Host, b: Host, a_addr: str, b_addr: str, prefix_len: int = 24) -> tuple[str, str]:
    """Join two hosts with a veth pair and address both ends; returns the link names."""
    a_link, b_link = a.new_link_name(), b.new_link_name()
    a.run(["ip", "link", "add", a_link, "type", "veth", "peer", "name", b_link,
           "netns", b.name])
    for host, link, addr in ((a, a_link, a_addr), (b, b_link, b_addr)):
        host.run(["ip", "addr", "add", f"{addr}/{prefix_len}", "dev", link])
        host.run(["ip", "link", "set", link, "up"])
    return a_link, b_link


class RemoteError(Exception):
    """An exception raised in a worker that could not be sent back as itself."""


class Worker:
    """A Python process inside a host that runs calls on request."""

    def __init__(self, host: Host, env: dict[str, str] | None = None) -> None:
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [environment.get("PYTHONPATH")])])
        environment.update(env or {})
        self.host = host
        self.last_elapsed = 0.0
        self._next = 0
        self._proc = subprocess.Popen(host.wrap([sys.executable, "-m", "tests.nshelp"]),
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      cwd=REPO, env=environment)

    @property
    def pid(self) -> int:
        """The worker's PID inside the host (the launcher chain ends in exec)."""
        return self._proc.pid

    def new(self, target: str, *args: Any, **kwargs: Any) -> "Remote":
        """Build ``module:Class(*args, **kwargs)`` in the worker; return a proxy."""
        self._next += 1
        handle = self._next
        self._request(("new", handle, target, args, kwargs))
        return Remote(self, handle)

    def call(self, handle: int, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._request(("call", handle, method, args, kwargs))

    def getattr(self, handle: int, name: str) -> Any:
        return self._request(("getattr", handle, name, (), {}))

    def _request(self, message: tuple[Any, ...], timeout: float = 60) -> Any:
        if self._proc.poll() is not None:
            raise RuntimeError(f"worker in {self.host.name} exited ({self._proc.returncode})")
        assert self._proc.stdin is not None and self._proc.stdout is not None
        _send(self._proc.stdin, message)
        reply = _recv(self._proc.stdout, timeout)
        if reply is None:
            raise RuntimeError(f"worker in {self.host.name} died ({self._proc.wait()})")
        status, value, elapsed = reply
        self.last_elapsed = elapsed
        if status == "err":
            raise value
        return value

    def stop(self) -> None:
        if self._proc.poll() is None and self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        _stop(self._proc)


class Remote:
    """A proxy for one object in a worker: ``remote.method(...)`` runs it there."""

    def __init__(self, worker: Worker, handle: int) -> None:
        self._worker = worker
        self._handle = handle

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def method(*args: Any, **kwargs: Any) -> Any:
            return self._worker.call(self._handle, name, *args, **kwargs)
        return method

    def attr(self, name: str) -> Any:
        """Read a plain attribute of the remote object."""
        return self._worker.getattr(self._handle, name)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _send(stream: Any, message: Any) -> None:
    data = pickle.dumps(message)
    stream.write(struct.pack("!I", len(data)) + data)
    stream.flush()


def _read_exact(stream: Any, size: int, deadline: float | None) -> bytes | None:
    data = b""
    while len(data) < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stream], [], [], left)[0]:
                raise TimeoutError("worker did not answer in time")
        chunk = os.read(stream.fileno(), size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _recv(stream: Any, timeout: float | None = None) -> Any:
    deadline = None if timeout is None else time.monotonic() + timeout
    header = _read_exact(stream, 4, deadline)
    if header is None:
        return None
    body = _read_exact(stream, struct.unpack("!I", header)[0], deadline)
    return None if body is None else pickle.loads(body)


def _sh(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")


@atexit.register
def _close_all() -> None:
    for host in list(_LIVE):
        host.close()


# -- the worker side -----------------------------------------------------------------------

def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def serve() -> None:
    """Worker main loop: the protocol stream is the original stdout; prints go to stderr."""
    logging.basicConfig(level=os.environ.get("NSHELP_LOG", "WARNING"))
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    objects: dict[int, Any] = {}
    while True:
        message = _recv(sys.stdin.buffer)
        if message is None:
            return
        op, handle, name, args, kwargs = message
        started = time.perf_counter()
        try:
            if op == "new":
                objects[handle] = _resolve(name)(*args, **kwargs)
                value = None
            elif op == "call":
                value = getattr(objects[handle], name)(*args, **kwargs)
            else:
                value = getattr(objects[handle], name)
            reply: tuple[Any, ...] = ("ok", value, time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - everything goes back to the test
            reply = ("err", exc, time.perf_counter() - started)
        try:
            _send(out, reply)
        except (pickle.PicklingError, TypeError, AttributeError):
            _send(out, ("err", RemoteError(repr(reply[1])), reply[2]))


if __name__ == "__main__":
    serve()

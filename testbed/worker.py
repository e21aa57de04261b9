"""Python code inside a host: a child ``python -m testbed.worker`` that runs calls on request.

``Host.worker()`` starts one. ``worker.new("module:Class", *args)`` builds an object
inside the host and returns a :class:`Remote`; ``remote.method(...)`` runs the method
there and returns its result (pickle over the child's stdin/stdout, one request at a
time). An exception raised inside comes back as itself, or as :class:`RemoteError` when
it cannot be pickled. The code under test thus runs as it would on a node: in the host's
network namespace, with the host's own ``/run/wireguard`` and ``/etc/wireguard``.
"""
from __future__ import annotations

import importlib
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .host import stop_popen

if TYPE_CHECKING:
    from .host import Host

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent


class RemoteError(Exception):
    """An exception raised in a worker that could not be sent back as itself."""


class WorkerError(RuntimeError):
    """The worker process died, or did not answer in time."""


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
        self._proc = subprocess.Popen(host.command([sys.executable, "-m", "testbed.worker"]),
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      cwd=REPO, env=environment)

    @property
    def pid(self) -> int:
        """The worker's PID inside the host (the launcher chain ends in exec)."""
        return self._proc.pid

    def new(self, target: str, *args: Any, **kwargs: Any) -> Remote:
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
            raise WorkerError(f"worker in {self.host.name} exited ({self._proc.returncode})")
        if self._proc.stdin is None or self._proc.stdout is None:
            raise WorkerError(f"worker in {self.host.name} has no pipes")
        _send(self._proc.stdin, message)
        reply = _recv(self._proc.stdout, timeout)
        if reply is None:
            raise WorkerError(f"worker in {self.host.name} died ({self._proc.wait()})")
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
        stop_popen(self._proc)


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
                raise WorkerError("worker did not answer in time")
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


# -- the worker side -----------------------------------------------------------------------

def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def serve() -> None:
    """Worker main loop: the protocol stream is the original stdout; prints go to stderr."""
    logging.basicConfig(level=os.environ.get("TESTBED_WORKER_LOG", "WARNING"))
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
        except Exception as exc:  # noqa: BLE001 - everything goes back to the caller
            reply = ("err", exc, time.perf_counter() - started)
        try:
            _send(out, reply)
        except (pickle.PicklingError, TypeError, AttributeError):
            _send(out, ("err", RemoteError(repr(reply[1])), reply[2]))


if __name__ == "__main__":
    serve()

"""A few simulator processes (``bench.simproc``) driven from the scenario's process.

Every call has a deadline; ``close`` stops the processes (politely, then by PID), so no
simulator outlives its scenario, whatever happened.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any

from . import simproc

log = logging.getLogger(__name__)


class FleetError(RuntimeError):
    pass


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """Round-robin split into ``parts`` lists."""
    return [items[i::parts] for i in range(parts)]


class Fleet:
    def __init__(self, processes: int, log_level: str = "WARNING") -> None:
        self.size = max(1, processes)
        self.log_level = log_level
        self._procs: list[mp.process.BaseProcess] = []
        self._conns: list[Connection] = []

    def __enter__(self) -> "Fleet":
        ctx = mp.get_context("spawn")
        try:
            for i in range(self.size):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=simproc.main, args=(child, self.log_level),
                                   name=f"bench-sim-{i}", daemon=True)
                proc.start()
                child.close()
                self._procs.append(proc)
                self._conns.append(parent)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, op: str, args: list[dict[str, Any]] | dict[str, Any], timeout: float
             ) -> list[dict[str, Any]]:
        """Send ``op`` to every process (same args, or one dict each); gather replies."""
        per_proc = args if isinstance(args, list) else [args] * self.size
        for conn, a in zip(self._conns, per_proc):
            conn.send({"op": op, "args": a})
        deadline = time.monotonic() + timeout
        replies = []
        for i, conn in enumerate(self._conns):
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise FleetError(f"simulator {i} did not answer {op!r} within {timeout:.0f} s")
            reply = conn.recv()
            if not reply.get("ok"):
                raise FleetError(f"simulator {i} failed {op!r}:\n{reply.get('error')}")
            replies.append(reply)
        return replies

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send({"op": "stop"})
            except (OSError, BrokenPipeError):
                pass
        deadline = time.monotonic() + 60   # thousands of sessions to close each
        for proc in self._procs:
            proc.join(max(0.1, deadline - time.monotonic()))
        for proc in self._procs:
            if proc.is_alive():
                log.warning("simulator %s (pid %s) did not stop: terminating", proc.name, proc.pid)
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []

"""``api``: ``GET /peers?zone=`` against the production server (gunicorn) under load.

N peers are registered straight into the store (ipam.store.ZoneStore). A load generator
on loopback (``--clients`` processes x ``--threads`` threads, each thread one keep-alive
``http.client`` connection, closed loop) requests the zone's peer list for
``--duration`` seconds after ``--warmup`` seconds. rps counts the answers (HTTP 200 with
the whole list) in the measured window; p99 is over their latencies. ``server_cpu_pct``
(the tower and its gunicorn workers) and ``client_cpu_pct`` (the load generator) are
their CPU use in that window, in % of one core: both share the machine's cores.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import resource
import threading
import time
from pathlib import Path
from typing import Any

from .harness import (add_stack_arguments, make_identities, process_cpu, stack_for,
                      stack_options)
from .report import Target, percentile

TARGETS = [Target("rps", ">=", 500), Target("p99_ms", "<=", 50)]
HEADLINE = ["peers", "rps", "p99_ms", "p50_ms"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stack_arguments(parser)
    parser.add_argument("--peers", type=int, default=1000, help="peers in the zone")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--clients", type=int, default=2, help="load generator processes")
    parser.add_argument("--threads", type=int, default=4, help="connections per process")
    parser.add_argument("--changes-per-s", type=float, default=0.0,
                        help="endpoint changes per second into the zone during the run "
                             "(0: a quiet zone, the issue's scenario)")


def command_of(args: argparse.Namespace) -> str:
    extra = f" --duration {args.duration:g}" if args.duration != 10.0 else ""
    if args.changes_per_s:
        extra += f" --changes-per-s {args.changes_per_s:g}"
    return f"python -m bench api --peers {args.peers}{extra}" + stack_options(args)


def _client(port: int, path: str, peers: int, threads: int, start: float, stop: float,
            out: "mp.Queue[dict[str, Any]]") -> None:
    """One load-generator process: ``threads`` keep-alive connections until ``stop``."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        checked = False
        while True:
            began = time.monotonic()
            if began >= stop:
                break
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            ended = time.monotonic()
            if resp.status != 200:
                with lock:
                    errors.append(f"HTTP {resp.status}")
                continue
            if not checked:  # once per connection: the whole list came back
                got = len(json.loads(body))
                if got != peers:
                    with lock:
                        errors.append(f"{got} peers in the answer, expected {peers}")
                checked = True
            if began >= start and ended <= stop:
                mine.append((ended - began) * 1000)
        conn.close()
        with lock:
            latencies.extend(mine)
    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    time.sleep(max(0.0, start - time.monotonic()))
    cpu_start = _own_cpu()
    time.sleep(max(0.0, stop - time.monotonic()))
    cpu = _own_cpu() - cpu_start
    for t in pool:
        t.join(stop - time.monotonic() + 60)
    out.put({"latencies": latencies, "errors": errors[:20], "error_count": len(errors),
             "cpu_s": cpu})


def _changer(stack: Any, identities: list[Any], rate: float, stop: float,
             done: list[int]) -> None:
    """Endpoint changes at ``rate`` per second until ``stop``; each bumps the zone's
    revision, so the API's cached answer is reloaded. ``done[0]``: changes made."""
    store = stack.store()
    began = time.monotonic()
    try:
        while time.monotonic() < stop:
            n = done[0]
            ident = identities[n % len(identities)]
            store.update_endpoint(stack.zone, ident.public_key, ident.session,
                                  f"198.51.100.{n % 250 + 1}:{20000 + n % 1000}", "cone")
            done[0] = n + 1
            time.sleep(max(0.0, began + (n + 1) / rate - time.monotonic()))
    finally:
        store.redis.close()


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a process and its descendants alive now (Linux)."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            total += process_cpu(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def run(args: argparse.Namespace) -> dict[str, Any]:
    identities = make_identities(args.peers, "api")
    with stack_for(args) as stack:
        stack.preregister(identities)
        assert stack.tower is not None
        port = stack.tower.port
        path = f"/peers?zone={stack.zone}"
        ctx = mp.get_context("spawn")
        out: mp.Queue[dict[str, Any]] = ctx.Queue()
        begin = time.monotonic() + 1.0          # spawn time
        start = begin + args.warmup
        stop = start + args.duration
        procs = [ctx.Process(target=_client, daemon=True,
                             args=(port, path, args.peers, args.threads, start, stop, out))
                 for _ in range(args.clients)]
        tower_pid = stack.tower.proc.pid
        changes = [0]
        changer = threading.Thread(target=_changer, daemon=True,
                                   args=(stack, identities, args.changes_per_s, stop, changes))
        try:
            for proc in procs:
                proc.start()
            if args.changes_per_s > 0:
                changer.start()
            time.sleep(max(0.0, start - time.monotonic()))
            server_cpu = _tree_cpu(tower_pid)
            time.sleep(max(0.0, stop - time.monotonic()))
            server_cpu = _tree_cpu(tower_pid) - server_cpu
            parts = [out.get(timeout=stop - time.monotonic() + 90) for _ in procs]
        finally:
            if changer.is_alive():
                changer.join(10)
            for proc in procs:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
    latencies = [x for part in parts for x in part["latencies"]]
    errors = [e for part in parts for e in part["errors"]]
    return {
        "peers": args.peers,
        "rps": round(len(latencies) / args.duration, 1),
        "p99_ms": round(percentile(latencies, 99), 2) if latencies else None,
        "p50_ms": round(percentile(latencies, 50), 2) if latencies else None,
        "requests": len(latencies),
        "errors": sum(part["error_count"] for part in parts),
        "first_errors": errors[:5],
        "connections": args.clients * args.threads,
        "changes": changes[0],
        # CPU use in the measured window, in % of one core (the machine has 2 cores)
        "server_cpu_pct": round(100 * server_cpu / args.duration, 1),
        "client_cpu_pct": round(100 * sum(p["cpu_s"] for p in parts) / args.duration, 1),
        "duration_s": args.duration,
        "command": command_of(args),
    }

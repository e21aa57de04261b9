"""``storm``: N nodes register into one zone at once while M agents watch.

The N nodes register as agents do (own key, subscribe, signed register request, wait for
the reply) from a few registering processes, ``--concurrency`` requests in flight in all.
The M observers are simulated agents of the zone: the real agent (see testbed.simagent).

registrations_per_s: answered registrations / (last reply - first request).
converged_s: from the first request until every observer's mirror holds all N new peers.
published_s: from the first request until the update completing the storm was published
  (a raw subscriber of the zone's channel saw it): the control plane's share of
  converged_s; the rest is the observers applying 10,000 peers each, which on this
  machine run M-to-2-cores instead of on their own nodes.
duplicates: addresses held by more than one node, in the replies or in the store.
unanswered: requests with no reply within ``--timeout``.
registrar_cpu_ms_per_node: CPU the registering processes spent per node from the first
  request to their last reply (what simulating the nodes costs the machine; the nodes'
  sessions and keys are made before the first request).
"""
from __future__ import annotations

import argparse
import logging
import math
import time
from collections import defaultdict
from typing import Any

from wire import messages
from wire.keys import Keys

from .fleet import Fleet, split
from .harness import Stack, add_stack_arguments, make_identities, stack_for, stack_options
from .join import ChannelCounter, auto_processes
from .report import Target

log = logging.getLogger(__name__)

TARGETS = [
    Target("registrations_per_s", ">=", 1000),
    Target("converged_s", "<=", 20),
    Target("duplicates", "<=", 0),
    Target("unanswered", "<=", 0),
]
HEADLINE = ["nodes", "observers", "registrations_per_s", "converged_s", "duplicates",
            "unanswered"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stack_arguments(parser)
    parser.add_argument("--redis", choices=("single", "cluster"), default="single",
                        help="cluster: the storm over --zones zones on a single Redis and on "
                             "a 6-process Redis Cluster, in one run (bench/clusterstorm.py)")
    parser.add_argument("--zones", type=int, default=30, help="zones (--redis cluster)")
    parser.add_argument("--observers-per-zone", type=int, default=10,
                        help="subscribers of each zone's updates (--redis cluster)")
    parser.add_argument("--nodes", type=int, default=10000, help="nodes registering at once")
    parser.add_argument("--observers", type=int, default=1000, help="agents watching the zone")
    parser.add_argument("--concurrency", type=int, default=256,
                        help="register requests in flight (all registering processes)")
    parser.add_argument("--registrars", type=int, default=0,
                        help="registering processes (0: 1 up to 500 nodes, else 2)")
    parser.add_argument("--processes", type=int, default=0,
                        help="observer processes (0: 1 up to 200, 2 up to 2,000, else 4)")
    parser.add_argument("--heartbeat", type=float, default=10.0,
                        help="observer heartbeat interval in seconds (0: none)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for a reply and for convergence")
    parser.add_argument("--spread", type=float, default=None,
                        help="seconds over which the observers start following the zone "
                             "(default: the heartbeat interval, at most 10)")


def command_of(args: argparse.Namespace) -> str:
    extra = f" --heartbeat {args.heartbeat:g}" if args.heartbeat != 10.0 else ""
    extra += f" --spread {args.spread:g}" if args.spread is not None else ""
    return (f"python -m bench storm --nodes {args.nodes} --observers {args.observers}{extra}"
            + stack_options(args))


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.redis == "cluster":
        from . import clusterstorm
        args.registrars = args.registrars or 2
        return clusterstorm.run(args)
    registrars = args.registrars or (1 if args.nodes <= 500 else 2)
    processes = args.processes or auto_processes(args.observers)
    observers = make_identities(args.observers, "obs")
    nodes = make_identities(args.nodes, "storm")
    with stack_for(args) as stack:
        stack.preregister(observers)
        with Fleet(processes) as watchers, Fleet(registrars) as registering:
            watchers.call("setup", [
                {"redis_url": stack.redis_url, "zone": stack.zone,
                 "agents": [(i.private_key, i.session, i.body) for i in part],
                 "heartbeat": args.heartbeat, "spread": args.spread}
                for part in split(observers, processes)], timeout=180 + args.observers * 0.05)
            watchers.call("watch", {"new_peers": args.nodes}, timeout=30)
            before = watchers.call("stats", {}, timeout=30)
            cpu_before = stack.cpu_seconds()
            calls_before = stack.command_stats()
            start_at = time.monotonic() + 1.0
            per_proc = math.ceil(args.concurrency / registrars)
            client = stack.client()
            with ChannelCounter(client, Keys().updates(stack.zone)) as channel:
                replies = registering.call("register_many", [
                    {"redis_url": stack.redis_url, "zone": stack.zone,
                     "nodes": [(i.private_key, i.body) for i in part], "concurrency": per_proc,
                     "timeout": args.timeout, "start_at": start_at}
                    for part in split(nodes, registrars)], timeout=args.timeout * 2 + 60)
                rows = [row for reply in replies for row in reply["rows"]]
                cpu_after = stack.cpu_seconds()
                calls_after = stack.command_stats()
                final_rev = int(client.get(Keys().rev(stack.zone)) or 0)
                first = min(row[3] for row in rows)
                remaining = max(10.0, args.timeout - (time.monotonic() - first))
                if any(row[2] != "ok" for row in rows):
                    remaining = 5.0     # some nodes are missing: no observer can hold them all
                converged = watchers.call("await_converged", {
                    "timeout": remaining, "check_keys": [n.public_key for n in nodes]},
                    timeout=remaining + 60)
                published = _await_published(channel, final_rev, timeout=10.0)
            client.close()
            after = watchers.call("stats", {}, timeout=30)
            store_addresses = _store_addresses(stack)
    result = _result(args, rows, converged, before, after, store_addresses, first,
                     registrars, processes)
    result["published_s"] = round(published - first, 2) if published is not None else None
    result["registrar_cpu_ms_per_node"] = round(
        sum(reply["cpu_s"] for reply in replies) / max(1, args.nodes) * 1000, 2)
    observer_cpu = sum(a["cpu_s"] for a in after) - sum(b["cpu_s"] for b in before)
    result["observer_cpu_s"] = round(observer_cpu, 1)
    applied = args.observers * args.nodes
    result["observer_us_per_peer"] = round(observer_cpu / applied * 1e6, 2) if applied else None
    span = result["registration_span_s"] or 1.0
    result["tower_cpu_pct"] = round((cpu_after["tower"] - cpu_before["tower"]) / span * 100)
    result["redis_cpu_pct"] = round((cpu_after["redis"] - cpu_before["redis"]) / span * 100)
    result["redis_calls_per_node"] = _calls_per_node(calls_before, calls_after, args.nodes)
    return result


def _await_published(channel: ChannelCounter, rev: int, timeout: float) -> float | None:
    """When the update reaching ``rev`` was seen (waits for it: without observers nothing
    else waits for the last publication, up to a publish window after the last reply)."""
    deadline = time.monotonic() + timeout
    while (seen := channel.published_at(rev)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return seen


def _calls_per_node(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
                    nodes: int) -> dict[str, list[float]]:
    """Redis commands during the storm: {command: [calls per node, usec per call]}."""
    out = {}
    for name, stat in after.items():
        calls = stat["calls"] - before.get(name, {}).get("calls", 0)
        if calls >= nodes / 10:
            out[name] = [round(calls / nodes, 2), stat["usec_per_call"]]
    return dict(sorted(out.items(), key=lambda item: -item[1][0]))


def _store_addresses(stack: Stack) -> dict[str, list[str]]:
    """address -> keys of the peer records that hold it, as stored in Redis."""
    store = stack.store()
    held: dict[str, list[str]] = defaultdict(list)
    for record in store.redis.hvals(store.keys.peers(stack.zone)):
        peer = messages.parse_peer(record)
        held[peer.address].append(peer.key)
    store.redis.close()
    return held


def _result(args: argparse.Namespace, rows: list[list[Any]], converged: list[dict[str, Any]],
            before: list[dict[str, Any]], after: list[dict[str, Any]],
            store_addresses: dict[str, list[str]], first: float, registrars: int,
            processes: int) -> dict[str, Any]:
    answered = [row for row in rows if row[2] == "ok"]
    unanswered = [row for row in rows if row[2].startswith("unanswered")]
    refused = [row for row in rows if row[2].startswith("refused")]
    replied: dict[str, set[str]] = defaultdict(set)
    for key, address, *_ in answered:
        replied[address].add(key)
    doubled = {a for a, keys in replied.items() if len(keys) > 1}
    doubled |= {a for a, keys in store_addresses.items() if len(keys) > 1}
    stored_keys = {k for keys in store_addresses.values() for k in keys}
    lost = sum(1 for row in answered if row[0] not in stored_keys)
    last_reply = max((row[4] for row in answered), default=first)
    span = last_reply - first
    all_converged = all(c["converged"] == c["agents"] for c in converged)
    last_converged = max((c["last"] for c in converged if c["last"] is not None), default=None)
    for row in (unanswered + refused)[:5]:
        log.warning("registration of %s: %s", row[0], row[2])
    return {
        "nodes": args.nodes,
        "registrations_per_s": round(len(answered) / span, 1) if span > 0 else None,
        "converged_s": (round(last_converged - first, 2)
                        if all_converged and last_converged is not None else None),
        "duplicates": len(doubled),
        "unanswered": len(unanswered),
        "observers": args.observers,
        "refused": len(refused),
        "answered_but_not_stored": lost,
        "registration_span_s": round(span, 2),
        "converged_observers": sum(c["converged"] for c in converged),
        "observers_with_wrong_peers": sum(c["wrong_peers"] for c in converged),
        "observer_resyncs": sum(a["resyncs"] for a in after),
        "observer_gap_resyncs": sum(a["gap_resyncs"] for a in after),
        "observer_check_resyncs": sum(a["check_resyncs"] for a in after),
        "observer_update_mb": round((sum(a["update_bytes"] for a in after)
                                     - sum(b["update_bytes"] for b in before)) / 1e6, 1),
        "observer_update_messages": (sum(a["update_messages"] for a in after)
                                     - sum(b["update_messages"] for b in before)),
        "observer_errors": sum(a["error_count"] for a in after),
        "observer_reconnects": sum(a["reconnects"] for a in after),
        "observer_warnings": sum(a["warnings"] for a in after),
        "observer_problems": sorted({e[:160] for a in after
                                     for e in a["warning_samples"] + a["errors"]})[:6],
        "sim_cpu_s": round(sum(a["cpu_s"] for a in after), 1),
        "registrars": registrars, "processes": processes, "concurrency": args.concurrency,
        "command": command_of(args),
    }

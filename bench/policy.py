"""``policy``: a zone policy and a group membership change, from the REST call to the
rules applied on every simulated agent, at zone sizes ``--nodes`` (1,000 and 10,000).

For each size, against a real redis-server and ``controltower serve``:

1. The zone holds ``--nodes`` nodes: ``--observers`` simulated agents (the real
   ``aircrew.agent.Agent`` with a recording device and a recording nft, testbed.simagent)
   and the rest registered straight into the store, a tenth tagged ``ops`` and a tenth
   ``web``. One more node is enrolled (it has a node record, so its tags are the
   tower's to change) and runs no agent.
2. ``PUT /zones/<zone>/policy`` (every agent enforces ``from tag:ops to *``: its sets hold
   every ``ops`` member): the time from sending the call until each agent made its nft
   transaction (a full table), p50/p99 over the agents; then a second policy (ports
   changed) the same way.
3. ``--changes`` times ``PUT /peers/<enrolled>/tags`` alternately ``["ops"]`` and ``[]``:
   the time until each agent made its set-element transaction (p50/p99 over every
   agent and change), the elements each transaction named (1), and the bytes each agent
   received on the zone channel per change (flat in the zone's size).

Then, in a network namespace of its own, the real nft on one node whose sets hold 1,000
members (``bench.policynft``): one membership change against a full reload, through
libnftables and through ``nft -f -`` (target: a change <= 50 ms).

The simulated agents run many to a process on this machine's 2 cores; each of them on
its own node would not wait for the others. A policy change makes every agent rebuild
its sets from the whole zone (O(zone) each); a membership change costs each agent O(1).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
import urllib.request
from typing import Any

from controltower.acl import AgentCredentials, new_secret
from testbed.lab import standalone
from wire import identity, proof
from wire.keys import Keys

from .fleet import Fleet, split
from .harness import add_stack_arguments, make_identities, stack_for, stack_options
from .report import Target, percentile

log = logging.getLogger(__name__)

TARGETS = [
    Target("membership_ms_p99_1000", "<=", 1000.0),
    Target("membership_ms_p99_10000", "<=", 1000.0),
    Target("policy_ms_p99_1000", "<=", 1000.0),
    Target("policy_ms_p99_10000", "<=", 1000.0),
    Target("nft_change_ms_p50", "<=", 50.0),
]
HEADLINE = ["sizes", "observers", "membership_ms_p50_1000", "membership_ms_p99_1000",
            "membership_ms_p50_10000", "membership_ms_p99_10000", "policy_ms_p50_1000",
            "policy_ms_p99_1000", "policy_ms_p50_10000", "policy_ms_p99_10000",
            "bytes_per_agent_membership", "bytes_per_agent_policy", "nft_change_ms_p50",
            "nft_reload_ms_p50"]

FIRST = {"rules": [{"from": ["tag:ops"], "to": ["*"], "ports": ["tcp/22", "icmp"],
                    "description": "ops may ssh anywhere"},
                   {"from": ["tag:web"], "to": ["tag:db"], "ports": ["tcp/5432"]}]}
SECOND = {"rules": [{"from": ["tag:ops"], "to": ["*"], "ports": ["tcp/22", "tcp/443", "icmp"],
                     "description": "ops may ssh anywhere"},
                    {"from": ["tag:web"], "to": ["tag:db"], "ports": ["tcp/5432"]}]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stack_arguments(parser)
    parser.add_argument("--nodes", default="1000,10000",
                        help="zone sizes, comma-separated (each its own stack)")
    parser.add_argument("--observers", type=int, default=100,
                        help="simulated agents in each zone (the rest run no agent)")
    parser.add_argument("--changes", type=int, default=20, help="membership changes timed")
    parser.add_argument("--processes", type=int, default=2,
                        help="simulator processes (this machine has 2 cores)")
    parser.add_argument("--nft-members", type=int, default=1000,
                        help="members in the sets of the node whose real nft is timed (0: skip)")


def command_of(args: argparse.Namespace) -> str:
    return (f"python -m bench policy --nodes {args.nodes} --observers {args.observers} "
            f"--changes {args.changes} --processes {args.processes} "
            f"--nft-members {args.nft_members}" + stack_options(args))


def _call(api: str, token: str, method: str, path: str, body: Any) -> Any:
    req = urllib.request.Request(f"{api}{path}", data=json.dumps(body).encode(), method=method,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def _timed(fleet: Fleet, kind: str, change, timeout: float) -> tuple[list[float], list[dict]]:
    """Make ``change`` (a REST call); the seconds until each agent's nft transaction."""
    started = time.monotonic()
    change()
    replies = fleet.call("nft", {"since": started, "kind": kind, "timeout": timeout},
                         timeout=timeout + 60)
    ats = [at for reply in replies for at in reply["at"]]
    missing = sum(1 for at in ats if at is None)
    if missing:
        raise RuntimeError(f"{missing} agents made no {kind} transaction within {timeout:.0f} s")
    return [at - started for at in ats], replies


def _bytes(fleet: Fleet) -> int:
    return sum(s["update_bytes"] for s in fleet.call("stats", {}, timeout=60))


def one_size(args: argparse.Namespace, nodes: int) -> dict[str, Any]:
    observers = min(args.observers, nodes)
    processes = max(1, min(args.processes, observers))
    watchers = make_identities(observers, "obs")
    others = make_identities(nodes - observers - 1, "node")
    with stack_for(args) as stack:
        store = stack.store()
        for n, ident in enumerate(others):
            tags = ("ops",) if n % 10 == 0 else ("web",) if n % 10 == 1 else ()
            store.register(stack.zone, ident.public_key, session=ident.session, tags=tags,
                           **ident.body)
        stack.preregister(watchers)
        # one enrolled node (no agent): the tower manages its tags
        creds = AgentCredentials(store.redis, Keys())
        creds.set(stack.zone, new_secret())
        changer = proof.public_key_of(proof.generate_private_key())
        store.run(creds.registry.enroll_call(stack.zone, identity.ZONE_SECRET_ID, changer,
                                             "0" * 64, "changer"))
        store.run(store.enrolled_register_call(store.get_zone(stack.zone), changer,
                                               listen_port=51820, session="changer"))
        store.flush(stack.zone)
        store.redis.close()
        token = (stack.tower.data_dir / "admin-token").read_text().strip()
        api = stack.tower.api
        with Fleet(processes) as fleet:
            fleet.call("setup", [
                {"redis_url": stack.redis_url, "zone": stack.zone, "policy": True,
                 "agents": [(i.private_key, i.session, i.body) for i in part],
                 "heartbeat": 10.0, "spread": 2.0}
                for part in split(watchers, processes)], timeout=180 + observers * 0.1)
            timeout = 60 + nodes * observers / 20000
            before = _bytes(fleet)
            policy_s, replies = _timed(fleet, "table", lambda: _call(
                api, token, "PUT", f"/zones/{stack.zone}/policy", FIRST), timeout)
            policy_bytes = _bytes(fleet) - before
            elements = max(e for r in replies for e in r["last_elements"])
            first_work = [s for r in replies for s in r["sync_seconds"]]
            second_s, replies = _timed(fleet, "table", lambda: _call(
                api, token, "PUT", f"/zones/{stack.zone}/policy", SECOND), timeout)
            second_work = [s for r in replies for s in r["sync_seconds"]]
            before = _bytes(fleet)
            membership_s: list[float] = []
            sizes: set[int] = set()
            for n in range(args.changes):
                tags = ["ops"] if n % 2 == 0 else []
                seconds, replies = _timed(fleet, "delta", lambda: _call(
                    api, token, "PUT", f"/peers/{changer}/tags", {"Tags": tags}), 60)
                membership_s += seconds
                sizes |= {e for r in replies for e in r["last_elements"]}
            membership_bytes = _bytes(fleet) - before
            states = sorted({s for r in fleet.call("nft", {"since": 0.0, "kind": "table",
                                                           "timeout": 1}, timeout=60)
                             for s in r["states"]})
    ms = lambda values, pct: round(percentile([v * 1000 for v in values], pct), 1)
    both = policy_s + second_s
    return {
        f"membership_ms_p50_{nodes}": ms(membership_s, 50),
        f"membership_ms_p99_{nodes}": ms(membership_s, 99),
        f"policy_ms_p50_{nodes}": ms(both, 50), f"policy_ms_p99_{nodes}": ms(both, 99),
        f"policy_ms_first_{nodes}": round(min(both) * 1000, 1),
        f"policy_agent_ms_p50_{nodes}": ms(first_work, 50),
        f"policy_agent_ms_p99_{nodes}": ms(first_work, 99),
        f"policy_ports_agent_ms_p50_{nodes}": ms(second_work, 50),
        f"membership_elements_{nodes}": sorted(sizes),
        f"policy_table_elements_{nodes}": elements,
        f"bytes_per_agent_membership_{nodes}": round(membership_bytes / observers / args.changes),
        f"bytes_per_agent_policy_{nodes}": round(policy_bytes / observers),
        f"firewall_states_{nodes}": states,
        f"processes_{nodes}": processes,
    }


def nft_timing(members: int) -> dict[str, Any]:
    host = standalone("nft")
    try:
        timer = host.worker().new("bench.policynft:NftTiming")
        return timer.measure(members)
    finally:
        host.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in str(args.nodes).split(",") if s.strip()]
    result: dict[str, Any] = {"sizes": sizes, "observers": args.observers,
                              "changes": args.changes}
    for nodes in sizes:
        result.update(one_size(args, nodes))
    for key in ("bytes_per_agent_membership", "bytes_per_agent_policy"):
        values = [result[f"{key}_{n}"] for n in sizes]
        result[key] = max(values)
    if args.nft_members:
        timing = nft_timing(args.nft_members)
        lib = timing["libnftables"]
        result["nft_members"] = args.nft_members
        result["nft_change_ms_p50"] = lib["change_ms_p50"]
        result["nft_change_ms_max"] = lib["change_ms_max"]
        result["nft_reload_ms_p50"] = lib["reload_ms_p50"]
        result["nft_agent_ms_p50"] = lib["change_agent_ms_p50"]
        result["nft_command_change_ms_p50"] = timing["nft_command"]["change_ms_p50"]
        result["nft_command_reload_ms_p50"] = timing["nft_command"]["reload_ms_p50"]
        result["nft_build_ms"] = lib["build_ms"]
    result["command"] = command_of(args)
    return result

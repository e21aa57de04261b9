"""Real nft transaction times for one node's rules (run inside a lab host, through
``Host.worker()``: its own network namespace, so the tables touch nothing else).

A server node of a zone with ``members`` nodes: the policy's sets hold them all; one
membership change (a node moves from one tag to another: one delete and one add, one
transaction) against a full reload of the table, through libnftables and ``nft -f -``.
"""
from __future__ import annotations

import ipaddress
import statistics
import time
from typing import Any

from aircrew import nftext
from aircrew.nftables import LibNftables, Nft, NftCommand
from aircrew.rules import Contents, compile_plan
from wire import policy as policies

POLICY = {"rules": [
    {"from": ["tag:ops"], "to": ["tag:servers"], "ports": ["tcp/22", "icmp"]},
    {"from": ["tag:web"], "to": ["tag:servers"], "ports": ["tcp/5432"]},
    {"from": ["10.64.0.0/10"], "to": ["*"], "ports": ["udp/53"]},
]}
TAGS = ("ops", "web", "servers")


def members(count: int) -> dict[str, policies.Member]:
    base = int(ipaddress.ip_address("10.0.0.1"))
    return {f"k{i}": policies.Member(f"k{i}", str(ipaddress.ip_address(base + i)), f"n{i}",
                                     frozenset({TAGS[i % 2]}))
            for i in range(count)}


class NftTiming:
    def measure(self, count: int, changes: int = 50, reloads: int = 10) -> dict[str, Any]:
        policy = policies.parse(POLICY)
        me = policies.Member("me", "10.255.255.1", "db", frozenset({"servers"}))
        zone = members(count)
        out: dict[str, Any] = {"members": count}
        for label, nft in (("libnftables", LibNftables()), ("nft_command", NftCommand())):
            out[label] = self._one(nft, policy, me, zone, changes, reloads)
            nft.run(nftext.removal("wg0"))
        return out

    @staticmethod
    def _one(nft: Nft, policy: policies.Policy, me: policies.Member,
             zone: dict[str, policies.Member], changes: int, reloads: int) -> dict[str, float]:
        plan = compile_plan(policy, me)
        contents = Contents(plan)
        started = time.perf_counter()
        contents.update(zone.items())
        text = nftext.table("wg0", plan, contents)
        compiled = time.perf_counter() - started
        reload_s = []
        for _ in range(reloads):
            started = time.perf_counter()
            nft.run(text)
            reload_s.append(time.perf_counter() - started)
        delta_s, agent_s, sizes = [], [], []
        keys = list(zone)
        for n in range(changes):
            key = keys[n % len(keys)]
            old = zone[key]
            moved = policies.Member(key, old.address, old.name,
                                    frozenset({"web"} if "ops" in old.tags else {"ops"}))
            zone[key] = moved
            started = time.perf_counter()
            delta = contents.update([(key, moved)])
            text = nftext.delta("wg0", delta)
            agent_s.append(time.perf_counter() - started)
            sizes.append(delta.size())
            started = time.perf_counter()
            nft.run(text)
            delta_s.append(time.perf_counter() - started)
        ms = lambda values: round(statistics.median(values) * 1000, 3)
        return {"change_ms_p50": ms(delta_s), "change_ms_max": round(max(delta_s) * 1000, 3),
                "change_elements": max(sizes), "change_agent_ms_p50": ms(agent_s),
                "reload_ms_p50": ms(reload_s), "reload_ms_max": round(max(reload_s) * 1000, 3),
                "build_ms": round(compiled * 1000, 1)}

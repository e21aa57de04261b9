"""What setting up ``join --state full`` will cost, measured here in seconds, before it starts.

With ``--state full`` every simulated agent (the real ``aircrew.agent.Agent``) takes the
start-up snapshot as the agent does: its mirror holds every record, and its whole-zone
pass (``Agent._resync``: ``Applied.of``, ``diff``, ``apply_ops`` onto its device) puts
every peer on its device. N agents in a zone of N peers: N^2 agent-peer applications and
three dicts of N entries per agent (mirror, applied configs, the recording device). The
records themselves are shared (parsed once per process, ``testbed.sharing``); the dicts
and the passes are each agent's own, as on real nodes.

Measured while writing this module (the same agents on stand-in sessions, in one process, 2 shared cores, load ~5): the whole-zone pass took 1.8 ms per agent at 1,000
agents (1.8 us per agent-peer), 4.9 ms at 2,000 (2.4 us), 19.5 ms at 4,000 (4.9 us:
each agent's dicts no longer stay in the CPU caches), and each agent held 78 B per peer
at every size. At 10,000: 10^8 agent-peers, 7.8 GB and 500-1,200 s of CPU.

:func:`estimate` measures it at the run's size: ``sample`` agents (same code, same
sharing) load a zone of ``agents`` peers; their CPU per pass and the memory they keep
(``tracemalloc``) times the number of agents.
"""
from __future__ import annotations

import asyncio
import base64
import gc
import os
import resource
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

# A pass measured on a few agents is faster than the same pass among thousands of agents
# whose dicts fill the heap (CPU cache misses): at 4,000 agents x 4,000 peers, 5.6 ms
# per pass for 20 agents alone against 19.5 ms for all 4,000 (measured for this module).
CROWD_FACTOR = 3.5


@dataclass(frozen=True)
class SetupEstimate:
    agents: int
    sample: int
    pass_ms: float              # one agent's whole-zone pass at this zone size (CPU)
    bytes_per_agent: float      # what one agent keeps after it (tracemalloc)

    @property
    def cpu_s(self) -> float:
        """The agents' passes together, with CROWD_FACTOR for their crowding."""
        return self.agents * self.pass_ms * CROWD_FACTOR / 1000

    @property
    def memory_gb(self) -> float:
        return self.agents * self.bytes_per_agent / 1e9

    def as_dict(self) -> dict[str, Any]:
        return {"estimate_agents_sampled": self.sample,
                "estimate_pass_ms": round(self.pass_ms, 2),
                "estimate_bytes_per_agent": round(self.bytes_per_agent),
                "estimate_setup_cpu_s": round(self.cpu_s),
                "estimate_setup_memory_gb": round(self.memory_gb, 2)}


def available_memory_gb() -> float | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return None


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def estimate(agents: int, sample: int = 20) -> SetupEstimate:
    """Measure ``sample`` real agents loading a zone of ``agents`` peers."""
    from testbed.sharing import ProcessShared
    shared = ProcessShared(keep_peers=True)
    shared.install()
    try:
        return asyncio.run(_measure(agents, min(sample, agents), shared))
    finally:
        shared.uninstall()


async def _measure(agents: int, sample: int, shared: Any) -> SetupEstimate:
    from aircrew.session import ZoneSnapshot
    from wire.messages import Peer

    from .updatecost import stand_in_agents
    from wire.proof import generate_private_key, public_key_of

    privates = [generate_private_key() for _ in range(sample)]
    keys = [public_key_of(p) for p in privates]
    keys += [base64.b64encode(os.urandom(32)).decode() for _ in range(agents - sample)]
    peers = {k: Peer(key=k, address=f"10.64.{i // 250}.{i % 250 + 1}",
                     endpoint=f"198.51.100.{i % 250 + 1}:{10000 + i // 250}", session=f"s{i}")
             for i, k in enumerate(keys)}
    sims = stand_in_agents(privates, ZoneSnapshot("10.64.0.0/16", 1, peers), shared)
    for sim in sims:
        await sim.agent._on_device(sim.agent._ensure_device)
    half = max(1, sample // 2)
    timed, traced = sims[:half], sims[half:]
    gc.collect()
    started = _cpu()
    for sim in timed:                 # timed without tracemalloc's overhead
        await sim.agent._resync()
    pass_ms = (_cpu() - started) * 1000 / half
    kept = 0.0
    if traced:                        # the others: what each keeps afterwards
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for sim in traced:
                await sim.agent._resync()
            gc.collect()
            kept = (tracemalloc.get_traced_memory()[0] - before) / len(traced)
        finally:
            tracemalloc.stop()
    return SetupEstimate(agents, sample, pass_ms, kept)


def cpu_share(cpus: int, processes: int, load: float) -> float:
    """The cores ``processes`` busy processes get beside ``load`` runnable others (the
    load average before they start): a fair share, at most every core."""
    return min(float(cpus), cpus * processes / (processes + max(0.0, load)))


def refusal(est: SetupEstimate, limit_s: float, cores: float,
            memory_gb: float | None) -> str | None:
    """Why a set-up of this estimate cannot run here (None: it can). ``cores``: what
    the simulators may get (:func:`cpu_share`)."""
    wall = est.cpu_s / max(cores, 0.1)
    if wall > limit_s:
        return (f"--state full at {est.agents:,} agents would spend ~{est.cpu_s:,.0f} s of CPU "
                f"setting up ({est.agents:,} whole-zone passes of {est.pass_ms:.1f} ms, "
                f"measured on {est.sample} agents now, x{CROWD_FACTOR:g} among thousands): "
                f"~{wall:,.0f} s on the {cores:.1f} cores the simulators would get here, over "
                f"the {limit_s:.0f} s set-up limit (--setup-limit); --state rev-only "
                f"measures the same joins without it")
    if memory_gb is not None and est.memory_gb > 0.8 * memory_gb:
        return (f"--state full at {est.agents:,} agents would keep ~{est.memory_gb:.1f} GB "
                f"({est.bytes_per_agent / 1e3:,.0f} kB per agent, measured on {est.sample} "
                f"agents now) of {memory_gb:.1f} GB available; --state rev-only measures the "
                f"same joins without it")
    return None


if __name__ == "__main__":      # python -m bench.setupcost N: the estimate alone
    import json
    import sys
    began = time.monotonic()
    found = estimate(int(sys.argv[1]))
    print(json.dumps({**found.as_dict(), "took_s": round(time.monotonic() - began, 1)}))

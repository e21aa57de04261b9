"""The PNG plot of join latency against zone size (matplotlib, when installed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def join_latency(runs: list[dict[str, Any]], path: Path) -> str:
    """Draw p50/p99 per mode against the number of agents; returns what happened."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return (f"no plot: matplotlib is not installed (pip install matplotlib); "
                f"{path.name} not written")
    done = [r for r in runs if not r.get("not_run") and r.get("p99_ms") is not None]
    if not done:
        return "no plot: no join run finished"
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    styles = {"delta": ("tab:blue", "o"), "full-list": ("tab:red", "s")}
    for mode, (color, marker) in styles.items():
        points = sorted((r["agents"], r["p50_ms"], r["p99_ms"]) for r in done
                        if r.get("mode", "delta") == mode and r.get("heartbeat_s") != 0)
        if not points:
            continue
        xs = [p[0] for p in points]
        ax.plot(xs, [p[2] for p in points], color=color, marker=marker, label=f"{mode} p99")
        ax.plot(xs, [p[1] for p in points], color=color, marker=marker, linestyle="--",
                alpha=0.6, label=f"{mode} p50")
    quiet = [r for r in done if r.get("heartbeat_s") == 0]
    if quiet:
        ax.scatter([r["agents"] for r in quiet], [r["p99_ms"] for r in quiet], color="tab:green",
                   marker="^", zorder=4, label="delta p99, no heartbeats")
    ax.scatter([1000, 10000], [100, 1000], marker="_", s=400, color="black", zorder=5,
               label="target (p99)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("agents in the zone")
    ax.set_ylabel("join latency to the last agent (ms)")
    ax.set_title("One node joins: register request -> last agent applied")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return f"wrote {path}"

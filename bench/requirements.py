"""What the scenarios that need a real WireGuard device need, and whether it is here."""
from __future__ import annotations

import importlib.util
import os
import shutil


def device_scenarios_missing() -> list[str]:
    """Reasons ``reconcile`` and ``agent-footprint`` cannot run here (empty: they can)."""
    missing = []
    for module in ("aircrew.uapi", "aircrew.backend"):
        if importlib.util.find_spec(module) is None:
            missing.append(f"{module.replace('.', '/')}.py does not exist")
    if importlib.util.find_spec("aircrew.uapi") is not None and not missing:
        from aircrew import uapi
        if not hasattr(getattr(uapi, "UserspaceDevice", None), "upsert_peers"):
            missing.append("aircrew.uapi.UserspaceDevice has no upsert_peers batch")
    if os.geteuid() != 0:
        missing.append("network namespaces need root")
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} is not installed")
    if shutil.which("wireguard-go") is None:
        missing.append("wireguard-go is not installed (Debian package wireguard-go)")
    return missing

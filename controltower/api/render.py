"""JSON shapes of the REST API (the seed's field names, plus our additions)."""
from __future__ import annotations

import ipaddress
import json
from datetime import datetime, timezone
from typing import Any

from ipam.store import Zone
from wire.messages import Peer


def zone(z: Zone, nodes: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"Name": z.name, "Description": z.description, "IpCidr": z.cidr}
    if nodes is not None:
        data["Nodes"] = nodes
    return data


def peer(zone_name: str, p: Peer, last_seen: float | None, offline_after: float,
         now: float) -> dict[str, Any]:
    return {
        "PublicKey": p.key,
        "EndpointIP": p.endpoint or "",
        "AllowedIPs": ",".join(p.allowed_ips()),
        "Zone": zone_name,
        "NodeAddress": p.address,
        "ChildPrefix": list(p.child_prefixes),
        "LastSeen": _iso(last_seen),
        "Online": last_seen is not None and now - last_seen <= offline_after,
        "NatType": p.nat_type or "unknown",
        "Hostname": p.hostname or "",
    }


def peer_list(zone_name: str, peers: list[Peer], seen: dict[str, float],
              offline_after: float, now: float) -> bytes:
    """A JSON peer list body, byte for byte what Flask's jsonify makes of the list
    (compact, ASCII, newline-terminated)."""
    rows = [peer(zone_name, p, seen.get(p.key), offline_after, now) for p in peers]
    return json.dumps(rows, separators=(",", ":")).encode() + b"\n"


def concat_lists(bodies: list[bytes]) -> bytes:
    """One JSON list body of the items of several ``peer_list`` bodies."""
    items = [body[1:-2] for body in bodies if body != b"[]\n"]
    return b"[" + b",".join(items) + b"]\n"


def leases(z: Zone, held: dict[str, str]) -> list[dict[str, Any]]:
    """The seed's shape: network and broadcast addresses show as reserved (true)."""
    net = z.network
    ips = dict.fromkeys(held, True)
    ips[str(net.network_address)] = True
    if net.version == 4:
        ips[str(net.broadcast_address)] = True
    ordered = dict(sorted(ips.items(), key=lambda item: ipaddress.ip_address(item[0])))
    return [{"Cidr": z.cidr, "IPs": ordered}]


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")

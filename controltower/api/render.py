"""JSON shapes of the REST API (the seed's field names, plus our additions)."""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from ipam.store import Zone
from wire.messages import NAT_UNKNOWN, Peer


def zone(z: Zone, nodes: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"Name": z.name, "Description": z.description, "IpCidr": z.cidr}
    if nodes is not None:
        data["Nodes"] = nodes
    return data


def peer(zone_name: str, p: Peer, last_seen: float | None, offline_after: float,
         now: float) -> dict[str, Any]:
    before, after = _peer_parts(zone_name, p)
    return {**before,
            "LastSeen": _iso(last_seen),
            "Online": _online(last_seen, offline_after, now),
            **after}


def iso(ts: float | None) -> str | None:
    return _iso(ts)


def with_identity(data: dict[str, Any], node: Any) -> dict[str, Any]:
    """A peer's row with what its enrollment says (credential expiry, join key)."""
    if node is not None:
        data["KeyExpiry"] = _iso(node.expires)
        data["JoinKey"] = node.join_key
    return data


def enrolled(zone_name: str, node: Any) -> dict[str, Any]:
    """A node enrolled but not registered (yet)."""
    return {"PublicKey": node.key, "Zone": zone_name, "Name": node.name,
            "Tags": list(node.tags), "Registered": False, "KeyExpiry": _iso(node.expires),
            "JoinKey": node.join_key}


def join_key(record: Any, now: float, key: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"Id": record.id, "Zone": record.zone}
    if key is not None:
        data["Key"] = key           # shown once: only its digest is kept
    data.update({"Created": _iso(record.created), "Expires": _iso(record.expires),
                 "State": record.state(now), "Uses": record.uses,
                 "MaxUses": record.max_uses or None, "Reusable": not record.max_uses,
                 "Ephemeral": record.ephemeral,
                 "EphemeralAfter": record.ephemeral_after if record.ephemeral else None,
                 "Tags": list(record.tags), "Routes": list(record.routes),
                 "Description": record.description})
    return data


def _peer_parts(zone_name: str, p: Peer) -> tuple[dict[str, Any], dict[str, Any]]:
    """A peer's fields from its record: those before the heartbeat fields, those after."""
    return ({
        "PublicKey": p.key,
        "EndpointIP": p.endpoint or "",
        "AllowedIPs": ",".join(p.allowed_ips()),
        "Zone": zone_name,
        "NodeAddress": p.address,
        "ChildPrefix": list(p.child_prefixes),
    }, {
        "NatType": p.nat_type or NAT_UNKNOWN,
        "Hostname": p.hostname or "",
        "Name": p.name or "",
        "Tags": list(p.tags),
        "PendingPrefixes": list(p.pending_prefixes),
        **({"KeyExpiry": _iso(p.key_expiry)} if p.key_expiry else {}),
    })


@dataclass(frozen=True)
class EncodedPeer:
    """A peer's JSON object, encoded once per record, open where the heartbeat fields go."""
    key: str
    head: str          # '{"PublicKey":...,"ChildPrefix":[...],'
    tail: str          # ',"NatType":...,"Hostname":...}'


def encoded_peer(zone_name: str, p: Peer) -> EncodedPeer:
    before, after = _peer_parts(zone_name, p)
    return EncodedPeer(p.key, _compact(before)[:-1] + ",", "," + _compact(after)[1:])


def peer_list(peers: list[EncodedPeer], seen: dict[str, float], offline_after: float,
              now: float) -> bytes:
    """A JSON list body of peers with their last heartbeat: byte for byte what Flask's
    jsonify makes of their ``peer`` rows (compact, ASCII, newline-terminated)."""
    items = []
    for p in peers:
        last = seen.get(p.key)
        online = "true" if _online(last, offline_after, now) else "false"
        items.append(f'{p.head}"LastSeen":{_iso_json(last)},"Online":{online}{p.tail}')
    return ("[" + ",".join(items) + "]\n").encode()


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


def _compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _online(last_seen: float | None, offline_after: float, now: float) -> bool:
    return last_seen is not None and now - last_seen <= offline_after


@lru_cache(maxsize=65536)
def _iso_json(ts: float | None) -> str:
    """``_iso`` as JSON; cached: most peers' last heartbeat is the same as a second ago."""
    return _compact(_iso(ts))


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")

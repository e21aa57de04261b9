"""Zones: create, list, show, delete; their settings, routes, join keys and secret."""
from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, request

from ipam.store import DEFAULT_ZONE
from wire.errors import Conflict, InvalidInput
from wire.messages import brief

from .. import joinkeys, pathmatrix
from ..acl import new_secret
from ..db import credentials, nodes, store
from ..relay.directory import read_relays
from . import render
from .body import json_object

bp = Blueprint("zones", __name__)

ZONE_FIELDS = {"Name": str, "Description": str, "CIDR": str}
JOIN_KEY_FIELDS = {"ExpiresIn": (int, float), "Uses": int, "Reusable": bool, "Ephemeral": bool,
                   "EphemeralAfter": (int, float), "Tags": list, "Routes": list,
                   "Description": str}


@bp.post("/zone")
@bp.post("/zones")
def create_zone():
    body = json_object(request, ZONE_FIELDS, required=("Name", "CIDR"))
    creds = credentials()
    secret = new_secret()
    # The digest is written with the zone: no moment in which the zone has no secret.
    zone = store().create_zone(body["Name"], body["CIDR"], body.get("Description", ""),
                               auth=creds.secret_fields(secret) if creds else None)
    data = render.zone(zone)
    if creds is not None:
        try:
            creds.apply_zone(zone.name)
        except Exception:
            store().delete_zone(zone.name, force=True)  # no zone without its credential
            creds.delete(zone.name)
            raise
        data["AgentSecret"] = secret  # shown once: only its digest is kept
    return jsonify(data), 201


@bp.get("/zones")
def list_zones():
    return jsonify([render.zone(z) for z in store().list_zones()])


@bp.get("/zones/<name>")
def show_zone(name: str):
    s = store()
    zone = s.get_zone(name)
    return jsonify(render.zone(zone, nodes=len(s.peers(name))))


@bp.delete("/zones/<name>")
def delete_zone(name: str):
    force = request.args.get("force", "false").lower()
    if force not in ("true", "false", "1", "0"):
        raise InvalidInput("force must be true or false")
    store().delete_zone(name, force=force in ("true", "1"))
    creds = credentials()
    if creds is not None:
        creds.delete(name)
    return jsonify({"Deleted": name})


@bp.patch("/zones/<name>")
def update_zone(name: str):
    """Per-zone identity settings: ``ZoneSecret`` (accept the zone secret for new
    nodes), ``AutoApprove`` (prefixes approved for any node), ``KeyExpiryDays``."""
    body = json_object(request, {"ZoneSecret": bool, "AutoApprove": list,
                                 "KeyExpiryDays": (int, float, type(None))})
    zone = store().get_zone(name)
    n = nodes()
    creds = credentials()
    # Every value is checked before anything is written: a 400 changes nothing.
    if "ZoneSecret" in body and creds is None:
        raise Conflict("this tower does not manage agent credentials (--no-agent-acl)")
    ranges = n.auto_approve_ranges(zone.network, body["AutoApprove"]) \
        if "AutoApprove" in body else None
    if "KeyExpiryDays" in body:
        n.check_key_expiry(body["KeyExpiryDays"])
    if "ZoneSecret" in body:
        creds.allow_zone_secret(zone.name, body["ZoneSecret"])
    if ranges is not None:
        n.set_auto_approve(zone.name, ranges)
    if "KeyExpiryDays" in body:
        n.set_key_expiry(zone.name, body["KeyExpiryDays"])
    return jsonify({"Name": zone.name, **n.settings(zone.name)})


@bp.get("/zones/<name>/routes")
def zone_routes(name: str):
    """Every child prefix of the zone's nodes, approved or pending."""
    rows = []
    for peer in sorted(store().peers(store().get_zone(name).name), key=lambda p: p.name or p.key):
        for state, prefixes in (("approved", peer.child_prefixes),
                                ("pending", peer.pending_prefixes)):
            rows += [{"Prefix": prefix, "State": state, "PublicKey": peer.key,
                      "Name": peer.name or ""} for prefix in prefixes]
    return jsonify(rows)


@bp.post("/zones/<name>/join-keys")
def create_join_key(name: str):
    body = json_object(request, JOIN_KEY_FIELDS)
    key, record = joinkeys.create(credentials(), store().get_zone(name), body)
    return jsonify(render.join_key(record, time.time(), key)), 201


@bp.get("/zones/<name>/join-keys")
def list_join_keys(name: str):
    now = time.time()
    return jsonify([render.join_key(r, now)
                    for r in joinkeys.listed(credentials(), store().get_zone(name).name)])


@bp.delete("/zones/<name>/join-keys/<key_id>")
def revoke_join_key(name: str, key_id: str):
    record = joinkeys.revoke(credentials(), store().get_zone(name).name, key_id)
    return jsonify(render.join_key(record, time.time()))


@bp.post("/zones/<name>/rotate-secret")
def rotate_secret(name: str):
    creds = credentials()
    if creds is None:
        raise Conflict("this tower does not manage agent credentials (--no-agent-acl)")
    zone = store().get_zone(name)
    secret = creds.rotate(zone.name)
    if zone.name == DEFAULT_ZONE:
        creds.remember_default_secret(current_app.config.get("DEFAULT_ZONE_SECRET_FILE"), secret)
    return jsonify({"Name": zone.name, "AgentSecret": secret})


@bp.get("/zones/<name>/paths")
def zone_paths(name: str):
    """Each pair of the zone's nodes and how they reach each other (direct, relayed via
    which relay, down), as both sides last reported on their heartbeats."""
    s = store()
    s.get_zone(name)                                   # 404 for an unknown zone
    only = request.args.get("node")
    peers = s.peers(name)
    if only is not None:
        found = [p.key for p in peers if only in (p.key, p.name)]
        if not found:
            raise InvalidInput(f"node {brief(only)} is not in zone {name}")
        only = found[0]
    now = time.time()
    raw = s.redis.hgetall(s.keys.paths(name))
    reports = {(k.decode() if isinstance(k, bytes) else k): pathmatrix.parse_report(v)
               for k, v in raw.items()}
    gone = set(reports) - {p.key for p in peers}
    if gone:                                   # reports of nodes removed since
        s.redis.hdel(s.keys.paths(name), *gone)
    seen = s.last_seen(name)
    offline = current_app.config["OFFLINE_AFTER"]
    stale = max(60.0, 2 * offline)
    pairs = pathmatrix.matrix(peers, reports, now, stale, only)
    nodes = [{"PublicKey": p.key, "Address": p.address, "Name": p.name, "Hostname": p.hostname,
              "NatType": p.nat_type, "Relay": p.relay,
              "Online": seen.get(p.key, 0) >= now - offline} for p in sorted(peers, key=lambda p: p.key)]
    relays = [{"Id": r.get("id"), "Region": r.get("region"), "Host": r.get("host"),
               "Port": r.get("port"), "SeenAge": None if r.get("seen") is None
               else round(now - r["seen"], 1)}
              for r in read_relays(s.redis, s.keys)
              if "*" in (r.get("zones") or ["*"]) or name in (r.get("zones") or [])]
    return jsonify({"Zone": name, "Relays": relays, "Nodes": nodes, "Pairs": pairs,
                    "Counts": pathmatrix.counts(pairs)})

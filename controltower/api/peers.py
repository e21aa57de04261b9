"""Peers: list (optionally by zone), show and delete by public key."""
from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, request

from wire import messages

from ..db import store
from . import render

bp = Blueprint("peers", __name__)


@bp.get("/peers")
def list_peers():
    s = store()
    zone = request.args.get("zone")
    names = [s.get_zone(zone).name] if zone else s.zone_names()
    offline_after = current_app.config["OFFLINE_AFTER"]
    now = time.time()
    out = []
    for name in names:
        seen = s.last_seen(name)
        for p in sorted(s.peers(name), key=lambda p: p.key):
            out.append(render.peer(name, p, seen.get(p.key), offline_after, now))
    return jsonify(out)


@bp.get("/peers/<wgkey:key>")
def show_peer(key: str):
    s = store()
    zone, p = s.find_peer(messages.public_key(key))
    seen = s.last_seen(zone).get(p.key)
    return jsonify(render.peer(zone, p, seen, current_app.config["OFFLINE_AFTER"], time.time()))


@bp.delete("/peers/<wgkey:key>")
def delete_peer(key: str):
    s = store()
    zone, p = s.find_peer(messages.public_key(key))
    s.remove_peer(zone, p.key, "deleted")
    s.flush(zone)
    return jsonify({"Deleted": p.key, "Zone": zone, "ReleasedAddress": p.address,
                    "ReleasedPrefixes": list(p.child_prefixes)})

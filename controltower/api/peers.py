"""Peers: list (optionally by zone), show and delete by public key."""
from __future__ import annotations

import time

from flask import Blueprint, Flask, current_app, jsonify, request

from wire import messages
from wire.errors import InvalidInput, NotFound

from ipam.policies import Policies

from ..db import nodes, store
from .body import json_object
from . import render
from .peercache import Answer, PeerCache, combined_etag

bp = Blueprint("peers", __name__)


def init_app(app: Flask) -> None:
    """This process's cache of the zones' peer lists, over the app's zone store (after
    ``db.init_app``)."""
    app.extensions["peer_cache"] = PeerCache(app.extensions["zone_store"],
                                             app.config["OFFLINE_AFTER"],
                                             max_age=app.config["PEERS_CACHE_SECONDS"])


def peer_cache() -> PeerCache:
    """This process's cache of the zones' peer lists (GET /peers)."""
    return current_app.extensions["peer_cache"]


@bp.get("/peers")
def list_peers():
    """Served from the per-process cache (see peercache): exact peer set, heartbeat
    fields at most PEERS_CACHE_SECONDS old; ETag / If-None-Match give 304."""
    zone = request.args.get("zone")
    if zone:
        answer = peer_cache().answer(zone)
        return _json_bytes(answer.body, answer.etag)
    answers = _every_zone()
    return _json_bytes(render.concat_lists([a.body for a in answers]), combined_etag(answers))


def _every_zone() -> list[Answer]:
    cache = peer_cache()
    answers = []
    for name in store().zone_names():
        try:
            answers.append(cache.answer(name))
        except NotFound:
            pass                    # deleted since it was listed
    return answers


def _json_bytes(body: bytes, etag: str):
    response = current_app.response_class(body, mimetype="application/json")
    response.set_etag(etag)
    response.headers["Cache-Control"] = "no-cache"
    return response.make_conditional(request)


def _found(ref: str):
    """A node by public key, name, or name.zone (``?zone=`` narrows a name)."""
    return nodes().find(ref, request.args.get("zone") or None)


@bp.get("/peers/<wgkey:key>")
def show_peer(key: str):
    found = _found(key)
    if found.peer is None:
        return jsonify(render.enrolled(found.zone, found.node))
    seen = store().last_seen(found.zone).get(found.key)
    data = render.peer(found.zone, found.peer, seen, current_app.config["OFFLINE_AFTER"],
                       time.time())
    state = Policies(store()).node_state(found.zone, found.key)
    if state is not None:
        data["Policy"] = {"State": state.get("state"), "Revision": state.get("rev"),
                          "Error": state.get("error", "")}
    return jsonify(render.with_identity(data, found.node))


@bp.delete("/peers/<wgkey:key>")
def delete_peer(key: str):
    """Remove a node for good: its credential is revoked at once (connections cut), it
    cannot register again without a new join key."""
    found = _found(key)
    peer = nodes().remove(found, "deleted")
    return jsonify({"Deleted": found.key, "Zone": found.zone,
                    "Name": found.node.name if found.node else None,
                    "Revoked": found.node is not None,
                    "ReleasedAddress": peer.address if peer else None,
                    "ReleasedPrefixes": list(peer.child_prefixes) if peer else []})


@bp.post("/peers/<wgkey:key>/routes")
def approve_routes(key: str):
    """Approve child prefixes of a node (``Approve``), or take approvals back (``Revoke``)."""
    body = json_object(request, {"Approve": list, "Revoke": list})
    found = _found(key)
    for value in (*body.get("Approve", []), *body.get("Revoke", [])):
        if not isinstance(value, str):
            raise InvalidInput("Approve and Revoke are lists of prefixes")
    node = nodes().approve(found, list(body.get("Approve", [])), list(body.get("Revoke", [])))
    again = _found(found.key)
    return jsonify({"PublicKey": found.key, "Zone": found.zone, "Name": node.name,
                    "Approved": list(node.approved),
                    "ChildPrefix": list(again.peer.child_prefixes) if again.peer else [],
                    "PendingPrefixes": list(again.peer.pending_prefixes) if again.peer else []})


@bp.put("/peers/<wgkey:key>/tags")
def set_tags(key: str):
    """Replace a node's tags (``Tags``: names, with or without ``tag:``); every agent of
    the zone hears it as one peer upsert, and a policy's sets follow."""
    body = json_object(request, {"Tags": list}, required=("Tags",))
    node = nodes().set_tags(_found(key), body["Tags"])
    return jsonify({"PublicKey": node.key, "Name": node.name, "Tags": list(node.tags)})


@bp.post("/peers/<wgkey:key>/renew")
def renew(key: str):
    node = nodes().renew(_found(key))
    return jsonify({"PublicKey": node.key, "Name": node.name,
                    "KeyExpiry": render.iso(node.expires)})

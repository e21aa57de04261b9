"""Peers: list (optionally by zone), show and delete by public key."""
from __future__ import annotations

import time

from flask import Blueprint, Flask, current_app, jsonify, request

from wire import messages
from wire.errors import NotFound

from ..db import store
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

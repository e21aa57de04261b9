"""The Redis connection and zone store of a Flask app (``init_app`` style extension)."""
from __future__ import annotations

from flask import Flask, current_app

from ipam.store import ZoneStore
from wire.keys import Keys

from .acl import AgentCredentials
from .api.peercache import PeerCache
from .redisconn import RedisTLS, connect


def init_app(app: Flask) -> None:
    tls = RedisTLS(app.config.get("REDIS_TLS_CA"), app.config.get("REDIS_TLS_CERT"),
                   app.config.get("REDIS_TLS_KEY"))
    client = connect(app.config["REDIS_URL"], tls)
    keys = Keys(app.config["KEY_PREFIX"])
    zone_store = ZoneStore(client, keys, expiry=app.config["EXPIRY"])
    app.extensions["zone_store"] = zone_store
    app.extensions["peer_cache"] = PeerCache(zone_store, app.config["OFFLINE_AFTER"],
                                             max_age=app.config["PEERS_CACHE_SECONDS"])
    app.extensions["agent_credentials"] = (AgentCredentials(client, keys)
                                           if app.config["AGENT_ACL"] else None)


def store() -> ZoneStore:
    return current_app.extensions["zone_store"]


def peer_cache() -> PeerCache:
    """This process's cache of the zones' peer lists (GET /peers)."""
    return current_app.extensions["peer_cache"]


def credentials() -> AgentCredentials | None:
    """The zone agent users' manager, or None when the tower does not manage ACLs."""
    return current_app.extensions["agent_credentials"]

"""The Redis connection and zone store of a Flask app (``init_app`` style extension).

Infrastructure only: the HTTP layer (``controltower.api``) builds on it, never the other
way round (the ``GET /peers`` cache is set up by ``api.peers.init_app``)."""
from __future__ import annotations

from flask import Flask, current_app

from ipam.store import ZoneStore
from wire.keys import Keys
from wire.redisconn import RedisTLS, connect

from .acl import AgentCredentials
from .nodes import Nodes


def init_app(app: Flask) -> None:
    tls = RedisTLS(app.config.get("REDIS_TLS_CA"), app.config.get("REDIS_TLS_CERT"),
                   app.config.get("REDIS_TLS_KEY"))
    client = connect(app.config["REDIS_URL"], tls)
    keys = Keys(app.config["KEY_PREFIX"])
    zone_store = ZoneStore(client, keys, expiry=app.config["EXPIRY"])
    app.extensions["zone_store"] = zone_store
    creds = AgentCredentials(client, keys) if app.config["AGENT_ACL"] else None
    app.extensions["agent_credentials"] = creds
    app.extensions["nodes"] = Nodes(zone_store, creds)


def store() -> ZoneStore:
    return current_app.extensions["zone_store"]


def credentials() -> AgentCredentials | None:
    """The zone agent users' manager, or None when the tower does not manage ACLs."""
    return current_app.extensions["agent_credentials"]


def nodes() -> Nodes:
    """Nodes by key or name: removal (revocation), route approval, renewal."""
    return current_app.extensions["nodes"]

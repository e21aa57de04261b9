"""The Redis connection and zone store of a Flask app (``init_app`` style extension)."""
from __future__ import annotations

from flask import Flask, current_app

from ipam.store import ZoneStore
from wire.keys import Keys

from .redisconn import connect


def init_app(app: Flask) -> None:
    client = connect(app.config["REDIS_URL"])
    app.extensions["zone_store"] = ZoneStore(client, Keys(app.config["KEY_PREFIX"]),
                                             expiry=app.config["EXPIRY"])


def store() -> ZoneStore:
    return current_app.extensions["zone_store"]

"""The web dashboard at /ui/: zones, a zone's topology picture, nodes, leases and join
keys, served by the tower from server-rendered templates (see docs/dashboard.md)."""
from __future__ import annotations

from flask import Flask

from . import login
from .views import bp

PREFIX = "/ui"


def init_app(app: Flask) -> None:
    login.init_app(app)
    app.register_blueprint(bp, url_prefix=PREFIX)

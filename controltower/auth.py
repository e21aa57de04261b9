"""Bearer-token authentication of the REST API.

Write endpoints always need the admin token; read endpoints need it when
``READ_AUTH`` is true (serve sets that for any bind other than loopback, unless told
otherwise). ``/health`` stays open for liveness probes. Comparison is constant-time.
The dashboard under ``/ui/`` applies the same rules through its own login.
"""
from __future__ import annotations

import hmac
import logging
from pathlib import Path

from flask import Flask, current_app, request

from wire.errors import Forbidden, Unauthorized

log = logging.getLogger(__name__)

OPEN_PATHS = ("/health", "/ready", "/openapi.json", "/metrics")
DASHBOARD = "/ui/"      # the dashboard checks its own logins (controltower.dashboard.login)
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def init_app(app: Flask) -> None:
    token = app.config.get("ADMIN_TOKEN")
    path = app.config.get("ADMIN_TOKEN_FILE")
    if not token and path:
        token = Path(path).read_text().strip()
    app.config["ADMIN_TOKEN"] = token or None
    if not token:
        log.warning("no admin token configured: the REST API accepts writes from anyone")
    app.before_request(_check)


def _check() -> None:
    token = current_app.config["ADMIN_TOKEN"]
    if token is None or request.path in OPEN_PATHS or (request.path + "/").startswith(DASHBOARD):
        return
    if request.method not in WRITE_METHODS and not current_app.config.get("READ_AUTH"):
        return
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("this endpoint needs 'Authorization: Bearer <admin token>'")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Forbidden("the token is not valid")

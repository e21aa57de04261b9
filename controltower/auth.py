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

from wire.errors import Forbidden, InvalidInput, Unauthorized
from wire.secretfile import read_secret

log = logging.getLogger(__name__)

OPEN_PATHS = ("/health", "/ready", "/openapi.json", "/metrics")
DASHBOARD = "/ui/"      # the dashboard checks its own logins (controltower.dashboard.login)
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def init_app(app: Flask) -> None:
    """Check every request's token. The API is never open by accident: without a token
    (``ADMIN_TOKEN``, or ``ADMIN_TOKEN_FILE`` holding one) the app is not built, unless
    its config says ``INSECURE_OPEN_API`` (tests of the API itself; ``serve`` never does)."""
    token = app.config.get("ADMIN_TOKEN")
    path = app.config.get("ADMIN_TOKEN_FILE")
    if not token and path:
        token = read_secret(Path(path), "admin token file")
    app.config["ADMIN_TOKEN"] = token or None
    if not token:
        if not app.config.get("INSECURE_OPEN_API"):
            raise InvalidInput("no admin token: give ADMIN_TOKEN or ADMIN_TOKEN_FILE "
                               "(controltower serve always does)")
        log.warning("INSECURE_OPEN_API: the REST API answers every call from anyone")
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

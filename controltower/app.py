"""The Flask application factory of the ControlTower REST API."""
from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.routing import BaseConverter

from wire.keys import DEFAULT_PREFIX

from . import auth, dashboard, db, errors, metrics
from .api import health, ipam, openapi, peers, policy, zones

DEFAULTS: dict[str, Any] = {
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "KEY_PREFIX": DEFAULT_PREFIX,
    "OFFLINE_AFTER": 30.0,
    "PEERS_CACHE_SECONDS": 1.0,  # GET /peers: LastSeen/Online at most this old (peercache)
    "EXPIRY": 86400.0,
    "AGENT_ACL": False,          # manage zone-scoped Redis users for agents
    "ADMIN_TOKEN": None,         # or ADMIN_TOKEN_FILE: a file holding it
    "ADMIN_TOKEN_FILE": None,
    "DEFAULT_ZONE_SECRET_FILE": None,  # rotating the default zone's secret rewrites it
    "INSECURE_OPEN_API": False,  # True: no token needed at all (tests of the API only)
    "MAX_CONTENT_LENGTH": 64 * 1024,  # bytes of a request body (the largest valid is < 1 KiB)
    "READ_AUTH": False,          # True: reads need the token too
    "WORKER_ID": None,           # this replica's request worker, for /ready (set by serve)
    "SESSION_COOKIE_SECURE": False,  # the dashboard's cookie: serve sets it with HTTPS
}


class WireGuardKeyConverter(BaseConverter):
    """The rest of the path, slashes included (a key like '/abc...=' gives '//abc...=')."""
    regex = ".+"
    part_isolating = False


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.json.sort_keys = False
    if test_config is None:
        app.config.from_prefixed_env("CONTROLTOWER")
    else:
        app.config.from_mapping(test_config)
    errors.init_app(app)
    app.before_request(_start_timer)     # before auth, so refused requests are timed too
    app.after_request(_observe)
    auth.init_app(app)
    db.init_app(app)
    peers.init_app(app)
    # WireGuard keys are base64 and may start with '/': match them whole, double slash too.
    app.url_map.converters["wgkey"] = WireGuardKeyConverter
    app.url_map.merge_slashes = False
    for blueprint in (zones.bp, policy.bp, peers.bp, ipam.bp, health.bp, openapi.bp):
        app.register_blueprint(blueprint)
    dashboard.init_app(app)        # /ui/: its own login (session cookie + CSRF), not Bearer
    return app


def _start_timer() -> None:
    g.started = time.perf_counter()


def _observe(response: Response) -> Response:
    """API latency and requests per route template (bounded label values)."""
    started = g.pop("started", None)
    if started is not None:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        api = metrics.api()
        api.latency.labels(request.method, endpoint).observe(time.perf_counter() - started)
        api.requests.labels(request.method, endpoint, str(response.status_code)).inc()
    return response

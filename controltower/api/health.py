"""Liveness (``/health``: Redis answers), readiness (``/ready``: Redis answers and a
request worker beats) and Prometheus metrics (``/metrics``)."""
from __future__ import annotations

import redis
from flask import Blueprint, Response, current_app, jsonify

from wire.errors import Unavailable

from .. import metrics
from ..db import store

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    store().redis.ping()
    return jsonify({"status": "ok"})


@bp.get("/ready")
def ready():
    """Ready when this replica's request worker (``WORKER_ID``, set by ``serve``) has
    a fresh heartbeat in Redis; without ``WORKER_ID``, when any worker has one."""
    s = store()
    worker_id = current_app.config.get("WORKER_ID")
    try:
        if worker_id:
            alive = bool(s.redis.exists(s.keys.tower_worker(worker_id)))
            missing = "the request worker of this replica is not running"
        else:
            alive = next(s.redis.scan_iter(match=s.keys.tower_worker_pattern, count=1000),
                         None) is not None
            missing = "no request worker is running"
    except redis.exceptions.RedisError:
        raise Unavailable("the zone store (Redis) is unreachable") from None
    if not alive:
        raise Unavailable(missing)
    return jsonify({"status": "ready"})


@bp.get("/metrics")
def prometheus():
    body, content_type = metrics.exposition(store(), current_app.config["OFFLINE_AFTER"])
    return Response(body, content_type=content_type)

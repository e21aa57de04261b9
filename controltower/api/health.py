"""Liveness: answers when Redis does."""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..db import store

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    store().redis.ping()
    return jsonify({"status": "ok"})

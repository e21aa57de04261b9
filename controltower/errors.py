"""Exceptions to JSON error answers: the status of a domain exception comes from the one
table (``wire.errors``); Redis out of reach is an ``Unavailable``; anything else is an
internal error, logged with its traceback."""
from __future__ import annotations

import logging

import redis
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from wire.errors import MeshError, Unavailable, http_status
from wire.policy import PolicyError

log = logging.getLogger(__name__)


def error(message: str, status: int):
    response = jsonify({"error": message})
    response.status_code = status
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(MeshError)
    def mesh_error(exc: MeshError):
        if isinstance(exc, PolicyError):      # every problem, each with rule and field
            response = jsonify({"error": str(exc),
                                "problems": [p.to_dict() for p in exc.problems]})
            response.status_code = http_status(exc)
            return response
        return error(str(exc), http_status(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return error(exc.description or exc.name, exc.code or 500)

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    @app.errorhandler(redis.exceptions.BusyLoadingError)
    def redis_down(exc: Exception):
        log.warning("redis unreachable: %s", exc)
        return mesh_error(Unavailable("the zone store (Redis) is unreachable"))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return error("internal error", http_status(exc))

"""The OpenAPI document of this API, at ``GET /openapi.json``."""
from __future__ import annotations

from flask import Blueprint, jsonify

from .. import openapi

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi_document():
    return jsonify(openapi.document())

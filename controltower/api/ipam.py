"""IPAM: the leases of a zone."""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..db import store
from . import render

bp = Blueprint("ipam", __name__)


@bp.get("/ipam/leases/<zone>")
def zone_leases(zone: str):
    s = store()
    return jsonify(render.leases(s.get_zone(zone), s.leases(zone)))

"""Zones: create, list, show, delete."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from wire.errors import Conflict, InvalidInput

from ..acl import new_secret
from ..db import credentials, store
from . import render
from .body import json_object

bp = Blueprint("zones", __name__)

ZONE_FIELDS = {"Name": str, "Description": str, "CIDR": str}


@bp.post("/zone")
@bp.post("/zones")
def create_zone():
    body = json_object(request, ZONE_FIELDS, required=("Name", "CIDR"))
    zone = store().create_zone(body["Name"], body["CIDR"], body.get("Description", ""))
    data = render.zone(zone)
    creds = credentials()
    if creds is not None:
        secret = new_secret()
        try:
            creds.set(zone.name, secret)
        except Exception:
            store().delete_zone(zone.name, force=True)  # no zone without its credential
            raise
        data["AgentSecret"] = secret  # shown once: only its digest is kept
    return jsonify(data), 201


@bp.get("/zones")
def list_zones():
    return jsonify([render.zone(z) for z in store().list_zones()])


@bp.get("/zones/<name>")
def show_zone(name: str):
    s = store()
    zone = s.get_zone(name)
    return jsonify(render.zone(zone, nodes=len(s.peers(name))))


@bp.delete("/zones/<name>")
def delete_zone(name: str):
    force = request.args.get("force", "false").lower()
    if force not in ("true", "false", "1", "0"):
        raise InvalidInput("force must be true or false")
    store().delete_zone(name, force=force in ("true", "1"))
    creds = credentials()
    if creds is not None:
        creds.delete(name)
    return jsonify({"Deleted": name})


@bp.post("/zones/<name>/rotate-secret")
def rotate_secret(name: str):
    creds = credentials()
    if creds is None:
        raise Conflict("this tower does not manage agent credentials (--no-agent-acl)")
    return jsonify({"Name": store().get_zone(name).name, "AgentSecret": creds.rotate(name)})

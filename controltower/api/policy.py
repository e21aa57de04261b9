"""A zone's access policy: set, show, delete, and test what it decides."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from ipam.policies import Policies, Stored
from wire import policy as policies
from wire.errors import InvalidInput

from ..db import store
from .body import json_value

bp = Blueprint("policy", __name__)


def _policies() -> Policies:
    found = current_app.extensions.get("policies")
    if found is None:
        found = current_app.extensions["policies"] = Policies(store())
    return found


def _shown(zone: str, stored: Stored | None) -> dict:
    if stored is None:
        return {"Zone": zone, "Revision": None, "Policy": None}
    return {"Zone": zone, "Revision": stored.rev, "Policy": stored.policy.to_dict()}


@bp.get("/zones/<name>/policy")
def show_policy(name: str):
    """The zone's policy (``Policy`` null: none, everything allowed) and how its nodes
    stand with it, as their heartbeats said (``Nodes``)."""
    stored = _policies().get(name)
    return jsonify({**_shown(name, stored),
                    "Nodes": _policies().summary(name, stored.rev if stored else None)})


@bp.put("/zones/<name>/policy")
def set_policy(name: str):
    """Replace the zone's policy: refused whole (400, every problem with its rule and
    field) when invalid, the old one staying in force."""
    document = json_value(request, "a policy document (a JSON object)")   # 413 over 64 KiB
    stored, warnings = _policies().set(name, document)
    return jsonify({**_shown(name, stored), "Warnings": warnings})


@bp.delete("/zones/<name>/policy")
def delete_policy(name: str):
    had = _policies().get(name) is not None
    rev = _policies().delete(name)
    return jsonify({"Zone": name, "Deleted": had, "Revision": rev})


@bp.get("/zones/<name>/policy/test")
def test_policy(name: str):
    """Would ``to`` let in a new connection from ``from`` on ``port`` (tcp/22, udp/53,
    icmp)? Ends are node names, public keys or addresses; the answer names the rule."""
    args = {field: request.args.get(field) for field in ("from", "to", "port")}
    missing = [field for field, value in args.items() if not value]
    if missing:
        raise InvalidInput(f"give {', '.join(missing)} (from=NODE&to=NODE&port=tcp/22)")
    p = _policies()
    stored = p.get(name)
    members = p.members(name)
    source = policies.resolve(members, args["from"])
    dest = policies.resolve(members, args["to"])
    proto, port = policies.packet(args["port"])
    decision = policies.decide(stored.policy if stored else None, source, dest, proto, port)
    return jsonify({"Zone": name, "From": _end(source), "To": _end(dest), "Port": args["port"],
                    "Allow": decision.allow,
                    "Rule": decision.rule.index if decision.rule else None,
                    "Reason": decision.reason})


def _end(end: policies.Endpoint) -> dict:
    member = end.member
    return {"Address": end.address, "Name": member.name if member else None,
            "PublicKey": member.key if member else None,
            "Tags": sorted(member.tags) if member else []}

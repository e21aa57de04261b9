"""Request body validation shared by the blueprints."""
from __future__ import annotations

from typing import Any

from flask import Request

from wire.errors import InvalidInput


def json_object(req: Request, fields: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The body as a JSON object with only known fields of the right types."""
    body = req.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise InvalidInput(f"unknown fields: {', '.join(unknown)} (expected {', '.join(fields)})")
    for name in required:
        if name not in body:
            raise InvalidInput(f"{name} is required")
    for name, value in body.items():
        kinds = fields[name] if isinstance(fields[name], tuple) else (fields[name],)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise InvalidInput(f"{name} must be a {' or '.join(k.__name__ for k in kinds)}")
    return body

"""Request body validation shared by the blueprints."""
from __future__ import annotations

from typing import Any

from flask import Request

from wire.errors import InvalidInput


def json_object(req: Request, fields: dict[str, type], required: tuple[str, ...] = ()) -> dict[str, Any]:
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
        if not isinstance(value, fields[name]):
            raise InvalidInput(f"{name} must be a {fields[name].__name__}")
    return body

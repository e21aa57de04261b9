"""Request body validation shared by the blueprints.

A body is read and decoded here, not by Flask's ``get_json``: malformed JSON, nesting too
deep for the decoder, text that is not UTF-8 (lone surrogates written as ``\\ud800``
included) and unknown fields are all 400s with a message, never a 500. The app's
``MAX_CONTENT_LENGTH`` bounds what is read at all (413).
"""
from __future__ import annotations

import json
from typing import Any

from flask import Request

from wire.errors import InvalidInput
from wire.messages import brief


def json_value(req: Request, what: str = "a JSON object") -> Any:
    """The body decoded as JSON (any value; its strings valid Unicode text), for a route
    whose document has its own validation (a zone policy)."""
    body = _decoded(req, what)
    if not _is_text(body):
        raise InvalidInput("the request body is not valid Unicode text (a lone surrogate?)")
    return body


def _decoded(req: Request, what: str) -> Any:
    raw = req.get_data(cache=True)          # 413 beyond MAX_CONTENT_LENGTH
    try:
        return json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise InvalidInput(f"the request body must be {what} (it is not valid JSON, or "
                           "nested too deeply)") from None


def json_object(req: Request, fields: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The body as a JSON object with only known fields of the right types."""
    body = _decoded(req, "a JSON object")
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise InvalidInput(f"unknown fields: {brief(', '.join(unknown))[1:-1]} "
                           f"(expected {', '.join(fields)})")
    for name in required:
        if name not in body:
            raise InvalidInput(f"{name} is required")
    for name, value in body.items():
        kinds = fields[name] if isinstance(fields[name], tuple) else (fields[name],)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise InvalidInput(f"{name} must be a {' or '.join(k.__name__ for k in kinds)}")
        if not _is_text(value):
            raise InvalidInput(f"{name} is not valid Unicode text (a lone surrogate?)")
    return body


def _not_json(name: str) -> Any:
    """NaN and Infinity: Python's decoder takes them, JSON has no such numbers."""
    raise ValueError(f"{name} is not JSON")


def _is_text(value: Any) -> bool:
    """Whether every string in ``value`` (lists and objects walked, without recursion:
    JSON may nest as deep as the decoder went) can be encoded."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True

"""The one place where a Lua script's status becomes a domain exception.

Each script of ipam/lua/ answers with a status first (``{'ok', ...}``, ``{'held', ...}``).
The statuses that refuse what was asked map here to an exception class of the
``wire.errors`` hierarchy, whose table gives the HTTP status and protocol code, and to
the message shown to the user, formatted with what the decoder knows (``zone``,
``requested``...). The statuses that are results (``ok``, ``stale``, ``alive``) or ask
for another step (``need``, ``retry``, ``moved``) are decoded in ipam/store.py, which
hands every other status to ``refusal``.
"""
from __future__ import annotations

from typing import Any

from wire.errors import Conflict, Forbidden, MeshError, NotFound, Removed, Superseded

REFUSALS: dict[str, tuple[type[MeshError], str]] = {
    "nozone": (NotFound, "zone {zone} does not exist"),
    "missing": (NotFound, "{peer} is not registered in zone {zone}"),
    "superseded": (Superseded, "this key was registered again from another host (superseded)"),
    "replayed": (Forbidden, "replayed request refused"),
    "removed": (Removed, "this node was removed from zone {zone}"),
    "held": (Conflict, "{requested} is held by another node (last seen {age:.0f}s ago)"),
    "prefix": (Conflict, "child prefix {wanted} overlaps {held}, already used by another "
                         "node in this zone"),
    "full": (Conflict, "zone {zone} has no free address left in {cidr}"),
    "exists": (Conflict, "zone {zone} already exists"),
    "busy": (Conflict, "zone {zone} still has {nodes} nodes; delete them first or use "
                       "force=true"),
    # Not script statuses: what a decoder concludes.
    "overtaken": (Conflict, "a newer request of this node was handled already"),
    "exhausted": (Conflict, "could not find a free address in zone {zone}"),
    "contended": (Conflict, "{what} kept changing; try again"),
}


class UnexpectedStatus(RuntimeError):
    """A script answered with a status its decoder does not know: a bug (an internal
    error of that request, never shown to the user)."""


def refusal(status: str, **context: Any) -> MeshError:
    """The exception of a refusing status, its message formatted from ``context``."""
    try:
        cls, text = REFUSALS[status]
    except KeyError:
        raise UnexpectedStatus(f"unexpected script status {status!r}") from None
    return cls(text.format(**context))


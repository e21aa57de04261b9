"""The domain exception hierarchy, shared by the tower, IPAM and the agent.

``CLASSES`` is the one table from a class to its HTTP status and its protocol code (the
``code`` of an error reply on the wire). It is looked up through the class hierarchy,
so a subclass answers as its nearest listed ancestor unless it is listed itself.
``class_for_status`` reads it backwards, for a client that gets a status.
"""
from __future__ import annotations


class MeshError(Exception):
    """Base class: the message is safe to show to a user (never holds a secret)."""


class InvalidInput(MeshError):
    """Malformed or invalid input."""


class NotFound(MeshError):
    """Unknown zone or peer."""


class Conflict(MeshError):
    """The request collides with existing state."""


class Superseded(Conflict):
    """The node's key was registered again from another host (another session)."""


class Unauthorized(MeshError):
    """No credential."""


class Forbidden(MeshError):
    """A wrong credential or a failed proof."""


class Removed(Forbidden):
    """The node was removed from its zone for good (revoked): it must not come back on
    its own (the agent exits 3)."""


class Unavailable(MeshError):
    """A dependency (Redis) cannot be reached."""


# class -> (HTTP status, protocol code); most specific classes first is not required.
CLASSES: dict[type[BaseException], tuple[int, str]] = {
    MeshError: (400, "error"),
    InvalidInput: (400, "invalid"),
    NotFound: (404, "not-found"),
    Conflict: (409, "conflict"),
    Superseded: (409, "superseded"),
    Removed: (403, "removed"),
    Unauthorized: (401, "unauthorized"),
    Forbidden: (403, "forbidden"),
    Unavailable: (503, "unavailable"),
}
UNKNOWN = (500, "error")


def classify(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, protocol code) of an exception: its nearest class in ``CLASSES``;
    anything outside the hierarchy is an internal error (500, "error")."""
    return _entry(type(exc))


def http_status(exc: BaseException) -> int:
    return classify(exc)[0]


def protocol_code(exc: BaseException) -> str:
    return classify(exc)[1]


def code_of(cls: type[BaseException]) -> str:
    """The protocol code errors of class ``cls`` travel with (what a reply's ``code`` is
    compared with)."""
    return _entry(cls)[1]


def class_for_status(status: int) -> type[MeshError]:
    """The least specific class of ``CLASSES`` answered with HTTP ``status`` (400 is
    InvalidInput, 409 Conflict); MeshError for a status no class has."""
    found = [cls for cls, (known, _code) in CLASSES.items()
             if known == status and cls is not MeshError and issubclass(cls, MeshError)]
    return min(found, key=lambda cls: len(cls.__mro__), default=MeshError)


def _entry(cls: type[BaseException]) -> tuple[int, str]:
    for klass in cls.__mro__:
        found = CLASSES.get(klass)
        if found is not None:
            return found
    return UNKNOWN


BRIEF = 64          # characters of an input value quoted in an error message


def brief(value: object) -> str:
    """``repr(value)`` cut to ``BRIEF`` characters: errors quote input, never all of it."""
    text = repr(value)
    return text if len(text) <= BRIEF else text[:BRIEF - 3] + "..."

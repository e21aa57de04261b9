"""The domain exception hierarchy, shared by the tower, IPAM and the agent.

The REST layer maps each class to one HTTP status in one place.
"""


class MeshError(Exception):
    """Base class: the message is safe to show to a user (never holds a secret)."""


class InvalidInput(MeshError):
    """Malformed or invalid input (HTTP 400)."""


class NotFound(MeshError):
    """Unknown zone or peer (HTTP 404)."""


class Conflict(MeshError):
    """The request collides with existing state (HTTP 409)."""


class Unauthorized(MeshError):
    """No credential (HTTP 401)."""


class Forbidden(MeshError):
    """A wrong credential or a failed proof (HTTP 403)."""


class Unavailable(MeshError):
    """A dependency (Redis) cannot be reached (HTTP 503)."""

"""Errors raised by the device backends and the link/route configuration.

Messages are safe to show to a user: they name the interface and what failed, never a
key. Both classes are :class:`wire.errors.MeshError`, so the agent's CLI can report them
without a traceback.
"""
from __future__ import annotations

from wire.errors import MeshError


class DeviceError(MeshError):
    """A WireGuard device could not be created, read or changed."""


class LinkError(DeviceError):
    """An interface, address or route could not be configured."""

"""The test bed's errors, in the project's one hierarchy (``wire.errors``).

They are not protocol errors: nothing maps them to a reply. A test bed error is a
``MeshError`` so that code catching the domain's errors also catches ours, and its
message, like every ``MeshError``'s, is safe to show (never a secret).
"""
from __future__ import annotations

import subprocess

from wire.errors import MeshError


class LabError(MeshError):
    """The lab (namespaces, hosts, NATs, processes) could not be built or used as asked."""


class CommandError(LabError, subprocess.CalledProcessError):
    """A command in a lab host (or one building the lab) failed; the message carries its
    stderr. Also a ``CalledProcessError``: ``returncode``, ``cmd``, ``stdout``, ``stderr``."""

    def __str__(self) -> str:
        detail = (self.stderr or self.stdout or "").strip()
        base = subprocess.CalledProcessError.__str__(self)
        return f"{base}: {detail}" if detail else base


class MeshFailure(LabError):
    """The lab's mesh (tower and agents in lab hosts) did not come up or answer as expected:
    a wait timed out, a process exited, an API call was refused."""

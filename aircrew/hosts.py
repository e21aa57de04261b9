"""Names of the zone's nodes in ``/etc/hosts``: one block the agent manages.

    # BEGIN aircrew wg0 zone-blue (managed by aircrew: edits are overwritten)
    10.140.0.3	laptop.zone-blue laptop.zone-blue.mesh
    # END aircrew wg0 zone-blue

``render`` and ``merge`` are pure (text in, text out); ``HostsFile`` writes the file
when the block changed: atomically (a temporary file renamed over it), or in place when
the file cannot be replaced (a bind mount, as in containers). Lines outside the block
are kept byte for byte; blocks of other interfaces are left alone.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def markers(interface: str, zone: str) -> tuple[str, str]:
    return (f"# BEGIN aircrew {interface} {zone} (managed by aircrew: edits are overwritten)",
            f"# END aircrew {interface} {zone}")


def render(interface: str, zone: str, entries: Iterable[tuple[str, str]], suffix: str = "") -> str:
    """The block for (address, name) pairs, sorted by name."""
    begin, end = markers(interface, zone)
    lines = [begin]
    for address, name in sorted(set(entries), key=lambda e: (e[1], e[0])):
        names = f"{name}.{zone}" + (f" {name}.{zone}.{suffix}" if suffix else "")
        lines.append(f"{address}\t{names}")
    lines.append(end)
    return "\n".join(lines) + "\n"


def merge(text: str, interface: str, block: str | None) -> str:
    """``text`` with this interface's block (of any zone) replaced by ``block`` (None:
    removed), or the block appended when there was none."""
    begin, end = f"# BEGIN aircrew {interface} ", f"# END aircrew {interface} "
    out: list[str] = []
    inside = placed = False
    for line in text.splitlines(keepends=True):
        if not inside and line.startswith(begin):
            inside = True
            if block is not None and not placed:
                out.append(block)
                placed = True
            continue
        if inside:
            inside = not line.startswith(end)
            continue
        out.append(line)
    if block is not None and not placed:
        if out and not out[-1].endswith("\n"):
            out.append("\n")
        out.append(block)
    return "".join(out)


class HostsFile:
    def __init__(self, path: Path, interface: str, suffix: str = "") -> None:
        self.path = Path(path)
        self.interface = interface
        self.suffix = suffix
        self._written: str | None = None

    def write(self, zone: str, entries: Iterable[tuple[str, str]]) -> None:
        self._update(render(self.interface, zone, entries, self.suffix))

    def remove(self) -> None:
        self._written = None
        self._update(None)

    def _update(self, block: str | None) -> None:
        if block is not None and block == self._written:
            return
        try:
            text = self.path.read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            text = ""
        new = merge(text, self.interface, block)
        if new != text:
            _replace(self.path, new)
        self._written = block


def _replace(path: Path, text: str) -> None:
    data = text.encode("utf-8", "surrogateescape")
    temp = path.with_name(f".{path.name}.aircrew.tmp")
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):     # a read-only directory: no temporary was made
            temp.unlink(missing_ok=True)
        if exc.errno not in (errno.EBUSY, errno.EXDEV, errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        # A bind mount (a container's /etc/hosts; the systemd unit's ReadWritePaths= under
        # ProtectSystem=strict): written in place.
        with open(path, "r+b") as handle:
            handle.write(data)
            handle.truncate()

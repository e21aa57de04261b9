"""Files holding secrets: created with mode 0600, never wider, replaced atomically."""
from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Callable

from .errors import InvalidInput

log = logging.getLogger(__name__)

MIN_SECRET = 16     # characters; shorter secrets are used, with a warning


def write_secret(path: str | os.PathLike[str], text: str) -> None:
    """Atomically replace ``path`` with ``text``; the file is 0600 from its creation.

    The temporary file is created with ``O_EXCL`` and mode 0600 beside the target, filled,
    fsynced, then renamed over it, so a reader sees the old or the new file, never a part,
    and there is no moment in which anyone else may read it.
    """
    target = Path(path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    try:
        os.fchmod(fd, 0o600)                 # whatever the umask did, exactly 0600
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            fd = -1
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def read_secret(path: str | os.PathLike[str], what: str = "secret file") -> str:
    """The secret held by a file: one line of printable characters without spaces.

    An empty (or blank) file is an error, never "no secret": a Redis password or token of
    "" would let anyone in. A file other users may read is used, with a warning."""
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
        mode = target.stat().st_mode
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} {target} is not UTF-8 text") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {target}: {exc.strerror or exc}") from None
    secret = text.strip()
    if not secret:
        raise InvalidInput(f"{what} {target} is empty: write a secret into it (one line), "
                           "or remove it to have one generated")
    if any(c.isspace() or not c.isprintable() for c in secret):
        raise InvalidInput(f"{what} {target} must hold one line of printable characters "
                           "without spaces")
    if len(secret) < MIN_SECRET:
        log.warning("%s %s holds a short secret (%d characters): use %d or more",
                    what, target, len(secret), MIN_SECRET)
    if mode & 0o077:
        log.warning("%s %s can be read by other users: chmod 600 it", what, target)
    return secret


def read_or_create_secret(path: Path, make: Callable[[], str], what: str = "secret file") -> str:
    """The secret in ``path`` (``read_secret``), or a new one from ``make`` written there."""
    if path.exists() or path.is_symlink():
        return read_secret(path, what)
    secret = make()
    write_secret(path, secret + "\n")
    return secret

"""Files holding secrets: created with mode 0600, never wider, replaced atomically."""
from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


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


def read_or_create_secret(path: Path, make: Callable[[], str]) -> str:
    if path.exists():
        return path.read_text().strip()
    secret = make()
    write_secret(path, secret + "\n")
    return secret

"""Child processes that die with their parent (even when the parent is SIGKILLed)."""
from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
from typing import Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig)


def spawn(argv: list[str], death_signal: int = signal.SIGTERM, **kwargs: Any) -> subprocess.Popen:
    """Start a child that receives ``death_signal`` when this process ends."""
    return subprocess.Popen(argv, preexec_fn=lambda: _die_with_parent(death_signal), **kwargs)


def stop(proc: subprocess.Popen, name: str, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %.0fs; killing it", name, timeout)
        proc.kill()
        proc.wait()

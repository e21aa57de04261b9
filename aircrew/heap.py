"""The agent's C heap: one malloc arena for all its threads.

glibc gives every thread that allocates its own arena; the agent's few threads (device
calls, state files, STUN) rarely allocate at the same time, and each extra arena keeps
about a megabyte of freed memory resident. ``MALLOC_ARENA_MAX=1`` does the same from
the environment; this sets it for an agent started any way at all.
"""
from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8     # glibc's <malloc.h>


def use_one_arena() -> bool:
    """Ask glibc for a single arena (before threads start); False where there is no
    ``mallopt`` (another C library) or it refused."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if mallopt(M_ARENA_MAX, 1) != 1:
        log.debug("mallopt(M_ARENA_MAX, 1) was refused")
        return False
    return True

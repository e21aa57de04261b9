"""aircrew.heap: with one arena, the agent's threads allocate from glibc's main arena."""
from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import ctypes, sys, threading
from aircrew import heap
if sys.argv[1] == "one":
    assert heap.use_one_arena()
def allocate():
    global kept
    kept = [bytes(600) for _ in range(2000)]    # above pymalloc's limit: C malloc
threads = [threading.Thread(target=allocate) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()                # one "Arena N:" block per arena, on stderr
"""


def arenas(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True,
                            text=True, timeout=60, check=True)
    return sum(line.startswith("Arena ") for line in result.stderr.splitlines())


def test_threads_share_one_arena():
    assert arenas("default") > 1
    assert arenas("one") == 1

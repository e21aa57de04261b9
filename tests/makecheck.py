"""The Makefile's variables as make itself expands them (for tests of docs and set-up)."""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_variable(name: str) -> list[str]:
    """Variable ``name`` of the repository's Makefile, expanded, split into words."""
    out = subprocess.run(["make", "-s", "--no-print-directory", "--eval",
                          "print-%: ; @echo $($*)", f"print-{name}"], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.split()

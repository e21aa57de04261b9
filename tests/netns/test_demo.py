"""`make demo` runs green and cleans up after itself."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_passes_every_check_and_tears_down():
    proc = subprocess.run([sys.executable, "-m", "deploy.demo"], capture_output=True, text=True,
                          timeout=170)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"demo: (\d+)/\1 checks passed", lines[-1]), lines[-1]
    assert "relayed" in proc.stdout     # laptop (cone) - phone (symmetric): via the relay

    assert re.search(r"demo: dashboard: http://127\.0\.0\.1:\d+/ui/ +\(log in with the admin "
                     r"token: cat \S+/admin-token\)", proc.stdout)
    assert "demo: the dashboard answers at" in proc.stdout
    # Only the demo's own namespaces are looked at: other labs may come and go meanwhile.
    prefix = re.search(r"building lab (\w+):", proc.stdout).group(1)
    left = [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                        text=True).stdout.split() if ns.startswith(prefix + "-")]
    assert left == []

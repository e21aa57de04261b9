"""controltower.relay.kernel on a real nftables, in a namespace host.

The relay's socket thread adds routes while its housekeeping thread expires them and
reads the counters, all through one libnftables context. Two calls at once mixed their
netlink replies: libnftnl took them for a broken kernel ABI and ended the relay with
exit(1) (a segfault at times), which in the lab left the pairs of a killed relay with no
relay to move to.
"""
from __future__ import annotations

import sys

from testbed.lab import standalone

HAMMER = """
import os, threading, time
from controltower.relay.kernel import KernelPath, NftError
path = KernelPath("10.0.0.1", 3480)
path.start()
errors, calls = [], [0, 0]
stop = time.monotonic() + 4.0
def adder():
    n = 0
    while time.monotonic() < stop:
        n += 1
        try:
            path.add([(("10.0.0.%d" % (n % 200 + 2), 40000 + n % 1000), os.urandom(4),
                       ("10.0.1.2", 51820), 200.0)])
        except NftError as exc:
            errors.append(str(exc))
        calls[0] += 1
def reader():
    while time.monotonic() < stop:
        try:
            path.counters()
        except NftError as exc:
            errors.append(str(exc))
        calls[1] += 1
threads = [threading.Thread(target=adder), threading.Thread(target=reader)]
for t in threads: t.start()
for t in threads: t.join()
path.stop()
print("calls", *calls, "errors", len(errors), errors[:2])
"""


def test_routes_and_counters_from_two_threads_at_once():
    with standalone("nft") as host:
        proc = host.run([sys.executable, "-c", HAMMER], check=False, timeout=60)
        tables = host.run(["nft", "list", "tables"], check=False).stdout
    assert proc.returncode == 0, f"the relay's nftables user died ({proc.returncode}):\n" \
                                 f"{proc.stdout}\n{proc.stderr[-2000:]}"
    words = proc.stdout.split()
    adds, reads = int(words[1]), int(words[2])
    assert adds > 20 and reads > 20, proc.stdout            # both threads did run together
    assert words[3:5] == ["errors", "0"], proc.stdout
    assert "apexrelay_3480" not in tables                    # stop removed the table


READ_ONLY_FORWARDING = """
import subprocess, sys
from controltower.relay.kernel import IP_FORWARD, KernelPath
path = str(IP_FORWARD)
subprocess.run(["mount", "--bind", path, path], check=True)     # this command's mounts only
subprocess.run(["mount", "-o", "remount,bind,ro", path], check=True)
try:
    KernelPath("10.0.0.1", 3480).start()
except OSError as exc:
    print("refused", exc.errno)
else:
    print("started")
"""


def test_a_relay_that_cannot_turn_forwarding_on_leaves_no_table():
    """Under a sandbox with a read-only /proc/sys (systemd's ProtectKernelTunables) the
    kernel path fails at start, and the relay falls back to Python: nothing of it stays."""
    with standalone("nft") as host:
        host.run(["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        proc = host.run([sys.executable, "-c", READ_ONLY_FORWARDING], check=False, timeout=60)
        tables = host.run(["nft", "list", "tables"], check=False).stdout
        forwarding = host.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
    assert proc.stdout.split() == ["refused", "30"], (proc.stdout, proc.stderr[-2000:])  # EROFS
    assert "apexrelay_3480" not in tables, tables
    assert forwarding == "0"

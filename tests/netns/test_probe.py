"""The lab's TCP probe names each outcome a policy change can produce, in a real namespace."""
from __future__ import annotations

from testbed.lab import standalone
from testbed.probe import OPEN, REFUSED, RESET

# What an agent's table does to a connection whose SYN got in before a rule was revoked:
# the ACK (original direction) meets the reject.
CUT_AFTER_SYN = """table inet probe {
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport 2301 tcp flags & (syn | ack) == ack reject with tcp reset
    tcp dport 2302 reject with tcp reset
  }
}
"""


def test_open_refused_and_cut_connections_are_told_apart():
    with standalone("p") as host:
        host.run(["ip", "link", "set", "lo", "up"])
        host.run(["nft", "-f", "-"], input=CUT_AFTER_SYN)
        worker = host.worker()
        listeners = worker.new("testbed.probe:Listeners", [2300, 2301, 2302])
        probe = worker.new("testbed.probe:Prober")
        try:
            assert probe.tcp("127.0.0.1", 2300) == OPEN
            assert probe.tcp("127.0.0.1", 2301) == RESET
            assert probe.tcp("127.0.0.1", 2302) == REFUSED
            assert probe.tcp("127.0.0.1", 2303) == REFUSED       # nothing listens
            seen = probe.watch("127.0.0.1", 2301, REFUSED, timeout=0.5, settle=0.1)
            assert seen["at"] is None                             # a cut is not a refusal
        finally:
            listeners.stop()

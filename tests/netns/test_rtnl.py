"""aircrew.rtnl: the kernel's answers, in a namespace host (the parsing: tests/unit)."""
from __future__ import annotations

import sys

from testbed.lab import standalone


def test_link_delete_and_refusals_carry_the_kernels_errno():
    with standalone("rt") as host:
        host.run(["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        program = (
            "import errno, socket\n"
            "from aircrew.rtnl import Netlink\n"
            "nl = Netlink()\n"
            "index = socket.if_nametoindex('v0')\n"
            "nl.delete_link(index)\n"
            "try:\n"
            "    nl.delete_link(index)\n"
            "except OSError as exc:\n"
            "    print('second delete', errno.errorcode[exc.errno])\n"
            "print('left', sorted(n for _, n in socket.if_nameindex()))\n")
        out = host.run([sys.executable, "-c", program], check=True).stdout
    assert "second delete ENODEV" in out
    assert "left ['lo']" in out                           # the veth pair went together

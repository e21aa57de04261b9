"""aircrew.rtnl: message parsing (pure) and the kernel's answers (in a namespace host)."""
from __future__ import annotations

import struct
import sys

import pytest

from aircrew import rtnl
from tests import nshelp

_NO_HOSTS = nshelp.available()
needs_hosts = pytest.mark.skipif(_NO_HOSTS is not None, reason=f"namespace hosts: {_NO_HOSTS}")


def test_attributes_round_trip_and_padding():
    body = rtnl.attr(rtnl.RTA_DST, bytes([10, 0, 0, 0])) + rtnl.attr(rtnl.RTA_OIF,
                                                                     struct.pack("=I", 7))
    assert len(rtnl.attr(1, b"abc")) == 8                # 4 header + 3 value + 1 padding
    assert rtnl.attrs(body) == {rtnl.RTA_DST: bytes([10, 0, 0, 0]),
                                rtnl.RTA_OIF: struct.pack("=I", 7)}


@pytest.mark.parametrize("junk", [b"", b"\x01", b"\x00\x00\x01\x00" * 3, b"\xff" * 7])
def test_malformed_input_ends_the_parse(junk):
    assert isinstance(rtnl.attrs(junk), dict)            # a zero or short length stops it
    assert isinstance(list(rtnl.messages(junk)), list)


def test_generic_netlink_probe_tells_known_from_unknown_families():
    assert rtnl.genl_family_exists("nlctrl")             # the controller itself, always there
    assert not rtnl.genl_family_exists("no-such-family")


@needs_hosts
def test_link_delete_and_refusals_carry_the_kernels_errno():
    with nshelp.Host("rt") as host:
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

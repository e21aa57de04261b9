"""aircrew.rtnl: message parsing (pure) and the generic-netlink probe (no root needed)."""
from __future__ import annotations

import struct

import pytest

from aircrew import rtnl

# One rtnetlink message: length 20, type 24 (RTM_NEWROUTE), no flags, sequence 7, pid 0.
MESSAGE = struct.pack("=IHHII", 20, 24, 0, 7, 0) + b"body"


def test_attributes_round_trip_and_padding():
    body = rtnl.attr(rtnl.RTA_DST, bytes([10, 0, 0, 0])) + rtnl.attr(rtnl.RTA_OIF,
                                                                     struct.pack("=I", 7))
    assert len(rtnl.attr(1, b"abc")) == 8                # 4 header + 3 value + 1 padding
    assert rtnl.attrs(body) == {rtnl.RTA_DST: bytes([10, 0, 0, 0]),
                                rtnl.RTA_OIF: struct.pack("=I", 7)}


@pytest.mark.parametrize("junk, attributes", [
    (b"", {}),
    (b"\x01", {}),                                       # shorter than a header
    (b"\x00\x00\x01\x00" * 3, {}),                       # length 0: the parse stops
    (b"\x05\x00\x01\x00abcd", {1: b"a"}),                # length 5: one byte, then padding
    # A length past the end: what is there is kept, and the parse stops.
    (b"\xff" * 7, {0x3FFF: b"\xff" * 3}),
])
def test_malformed_attributes_end_the_parse(junk, attributes):
    assert rtnl.attrs(junk) == attributes
    assert rtnl.attrs(rtnl.attr(2, b"ok") + junk) == {2: b"ok", **attributes}


@pytest.mark.parametrize("junk", [b"", b"\x01" * 15, bytes(16), b"\xff" * 7])
def test_malformed_messages_end_the_parse(junk):
    assert list(rtnl.messages(junk)) == []
    # A good message before the junk is still read, and nothing after it.
    assert list(rtnl.messages(MESSAGE + junk)) == [(24, 7, b"body")]


def test_generic_netlink_probe_tells_known_from_unknown_families():
    assert rtnl.genl_family_exists("nlctrl")             # the controller itself, always there
    assert not rtnl.genl_family_exists("no-such-family")

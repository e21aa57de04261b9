"""LinkConfig in a namespace host: MTU/state, our address, our routes, never others'."""
from __future__ import annotations

import pytest

from aircrew.device_errors import LinkError
from aircrew.routes import DEFAULT_MTU, RTPROT_AIRCREW
from testbed.host import Host
from testbed.lab import standalone
from wire.errors import InvalidInput


@pytest.fixture
def lab():
    """(host, remote LinkConfig for 'mesh0'); mesh0 is one end of a veth pair."""
    with standalone("r") as host:
        host.run(["ip", "link", "add", "mesh0", "type", "veth", "peer", "name", "other0"])
        host.run(["ip", "link", "set", "other0", "up"])
        worker = host.worker()
        yield host, worker.new("aircrew.routes:LinkConfig", "mesh0")


def ip(host: Host, *args: str) -> str:
    return host.run(["ip", *args]).stdout


def test_up_sets_mtu_and_state(lab):
    host, link = lab
    link.up()
    link.up()
    out = ip(host, "-o", "link", "show", "mesh0")
    assert f"mtu {DEFAULT_MTU}" in out and ",UP" in out


def test_set_address_is_idempotent_and_replaces_only_ours(lab):
    host, link = lab
    ip(host, "addr", "add", "10.66.0.1/24", "dev", "mesh0")          # not ours
    link.set_address("10.140.0.5", 16)
    link.set_address("10.140.0.5", 16)
    assert link.addresses() == {"10.140.0.5/16"}
    out = ip(host, "-4", "-o", "addr", "show", "dev", "mesh0")
    assert out.count("10.140.0.5/16") == 1 and "10.66.0.1/24" in out

    link.set_address("10.140.0.9", 16)                               # a new assignment
    out = ip(host, "-4", "-o", "addr", "show", "dev", "mesh0")
    assert "10.140.0.9/16" in out and "10.140.0.5/" not in out and "10.66.0.1/24" in out
    assert link.addresses() == {"10.140.0.9/16"}

    # A fresh LinkConfig (an agent restart) still recognises its address by protocol.
    fresh = host.worker().new("aircrew.routes:LinkConfig", "mesh0")
    fresh.set_address("fd00:140::9", 64)
    out = ip(host, "-o", "addr", "show", "dev", "mesh0")
    assert "fd00:140::9/64" in out and "10.140.0.9/" not in out and "10.66.0.1/24" in out


def test_routes_lists_and_removes_only_ours(lab):
    host, link = lab
    link.up()
    ip(host, "route", "add", "10.201.0.0/24", "dev", "mesh0")                 # not ours
    ip(host, "route", "add", "10.202.0.0/24", "dev", "mesh0", "proto", "static")
    assert link.routes() == set()

    link.add_route("10.200.1.0/24")
    link.add_route("10.200.1.0/24")                                          # idempotent
    link.add_route("fd00:200::/64")
    assert link.routes() == {"10.200.1.0/24", "fd00:200::/64"}
    ours = ip(host, "route", "show", "proto", str(RTPROT_AIRCREW))
    assert "10.200.1.0/24 dev mesh0" in ours and "10.201.0.0" not in ours

    link.remove_route("10.201.0.0/24")                                       # not ours: no-op
    link.remove_route("10.202.0.0/24")
    with pytest.raises(LinkError, match="did not add"):
        link.add_route("10.201.0.0/24")
    table = ip(host, "route", "show")
    assert "10.201.0.0/24 dev mesh0" in table and "10.202.0.0/24 dev mesh0" in table

    link.remove_route("10.200.1.0/24")
    link.remove_route("10.200.1.0/24")                                       # idempotent
    link.remove_route("fd00:200::/64")
    assert link.routes() == set()
    table = ip(host, "route", "show")
    assert "10.200.1.0" not in table and "10.201.0.0/24" in table


def test_errors_are_clear(lab):
    host, link = lab
    with pytest.raises(InvalidInput, match="host bits"):
        link.add_route("10.200.1.1/24")
    with pytest.raises(InvalidInput):
        link.set_address("10.0.0.1/24", 24)
    missing = host.worker().new("aircrew.routes:LinkConfig", "nosuch0")
    with pytest.raises(LinkError, match="interface nosuch0 does not exist"):
        missing.add_route("10.200.1.0/24")
    with pytest.raises(LinkError, match="interface nosuch0 does not exist"):
        missing.routes()
    link.set_mtu(1280)
    assert "mtu 1280" in ip(host, "-o", "link", "show", "mesh0")

"""wire.messages: the one endpoint formatter and the NAT types every module names."""
from __future__ import annotations

import ipaddress

import pytest

from wire import messages
from wire.errors import InvalidInput


@pytest.mark.parametrize("ip, port, text", [
    ("203.0.113.5", 51820, "203.0.113.5:51820"),
    (ipaddress.ip_address("203.0.113.5"), 1, "203.0.113.5:1"),
    ("2001:db8:0:0::5", 51820, "[2001:db8::5]:51820"),          # canonical form
    (ipaddress.ip_address("2001:db8::5"), 3478, "[2001:db8::5]:3478"),
])
def test_format_endpoint(ip, port, text):
    assert messages.format_endpoint(ip, port) == text
    assert messages.endpoint(text) == text          # what the tower accepts, unchanged


def test_format_endpoint_refuses_a_name():
    with pytest.raises(ValueError):
        messages.format_endpoint("stun.example", 3478)


def test_nat_types_are_what_a_node_may_report():
    for nat_type in messages.NAT_TYPES:
        assert messages.nat_type(nat_type) == nat_type
    assert messages.nat_type(None) is None
    with pytest.raises(InvalidInput):
        messages.nat_type("full-cone")


def test_a_heartbeat_may_carry_the_state_of_the_nodes_policy_rules():
    from wire.messages import _BODY_VALIDATORS
    check = _BODY_VALIDATORS["heartbeat"]
    assert check({}) == {}
    good = {"policy": {"rev": 7, "state": "failed", "error": "x" * 999}}
    assert check(good)["policy"]["error"] == "x" * 256
    assert check({"policy": {"rev": None, "state": "none"}}) == {
        "policy": {"rev": None, "state": "none", "error": ""}}
    for bad in ({"policy": {"state": "open"}}, {"policy": {"rev": -1, "state": "applied"}},
                {"policy": {"rev": True, "state": "applied"}}, {"policy": "applied"},
                {"policy": {"state": "applied", "more": 1}}, {"other": 1}):
        with pytest.raises(InvalidInput):
            check(bad)

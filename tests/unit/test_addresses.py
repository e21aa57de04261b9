"""wire.addresses and what uses it: zone CIDRs, endpoints and the request fields a mesh
can use (issue 15, items 4 and 9)."""
from __future__ import annotations

import ipaddress
import json
import time

import pytest

from ipam import cidr
from wire import addresses, messages, proof
from wire.errors import InvalidInput
from wire.proof import generate_private_key, public_key_of

KEY = public_key_of(generate_private_key())


@pytest.mark.parametrize("text, kind", [
    ("0.0.0.0/0", "'this network'"),
    ("0.0.0.0/8", "'this network'"),
    ("127.0.0.0/8", "loopback"),
    ("64.0.0.0/2", "loopback"),                  # holds 127/8
    ("224.0.0.0/4", "multicast"),
    ("239.1.0.0/16", "multicast"),
    ("240.0.0.0/4", "reserved and broadcast"),
    ("169.254.0.0/16", "link-local"),
    ("::/0", "unspecified"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("fe80::/64", "link-local"),
    ("ff00::/8", "multicast"),
])
def test_special_ranges_are_no_zone(text, kind):
    with pytest.raises(InvalidInput, match=kind) as found:
        cidr.zone_network(ipaddress.ip_network(text))
    assert "use a private range" in str(found.value)


@pytest.mark.parametrize("text", ["10.140.0.0/20", "172.16.0.0/12", "192.168.7.0/24",
                                  "100.64.0.0/10", "198.51.100.0/24", "fd00::/64",
                                  "2001:db8::/64", "10.0.0.0/8"])
def test_usable_ranges_are_zones(text):
    net = ipaddress.ip_network(text)
    assert cidr.zone_network(net) == net


@pytest.mark.parametrize("text", ["0.0.0.0:51820", "255.255.255.255:1", "224.0.0.1:5",
                                  "[fe80::1%eth0]:51820", "[fe80::1]:51820", "[::]:1",
                                  "[ff02::1]:5", "169.254.1.1:5", "240.0.0.1:5",
                                  "[::ffff:1.2.3.4]:5"])
def test_unusable_endpoints_are_refused(text):
    with pytest.raises(InvalidInput):
        messages.endpoint(text)


@pytest.mark.parametrize("text", ["203.0.113.7:51820", "10.0.0.1:1", "[2001:db8::5]:3478",
                                  "127.0.0.1:51820", "[::1]:51820"])
def test_usable_endpoints_pass(text):
    assert messages.endpoint(text) == text


def request(**override):
    data = {"v": 1, "type": "heartbeat", "id": "r1", "zone": "default", "key": KEY,
            "session": "s1", "ts": time.time(), "nonce": "0123456789abcdef", "body": {}}
    data.update(override)
    return json.dumps(data).encode()


def test_unknown_top_level_fields_are_refused():
    assert messages.parse_request(request()).type == "heartbeat"
    with pytest.raises(InvalidInput, match="unknown request fields: extra"):
        messages.parse_request(request(extra=1))


@pytest.mark.parametrize("ts", [1e300, -1.0, 2**33 + 1, int("9" * 300), float("nan")])
def test_timestamps_out_of_range_are_refused_briefly(ts):
    payload = json.dumps({**json.loads(request()), "ts": ts}).encode()
    with pytest.raises(InvalidInput) as found:
        messages.parse_request(payload)
    assert len(str(found.value)) < 100


def test_error_messages_quote_input_briefly():
    with pytest.raises(InvalidInput) as found:
        messages.network("x" * 10_000 + "/8", "child prefix")
    assert len(str(found.value)) < 150


def test_an_all_zero_private_key_is_refused():
    zero = proof.encode_key(bytes(32))
    with pytest.raises(InvalidInput, match="all zero"):
        proof.decode_private_key(zero)
    with pytest.raises(InvalidInput, match="all zero"):
        proof.public_key_of(zero)
    proof.decode_private_key(generate_private_key())


def test_a_peer_name_that_is_no_dns_label_is_dropped():
    """Names go into /etc/hosts: a record whose name holds a newline (or anything but a
    DNS label) is kept, without the name."""
    from wire import messages
    from wire.proof import generate_private_key, public_key_of
    record = {"key": public_key_of(generate_private_key()), "address": "10.200.0.5",
              "listen_port": 51820}
    assert messages.parse_peer({**record, "name": "laptop-2"}).name == "laptop-2"
    for bad in ("x\n203.0.113.9 bank.example", "UPPER", "-x", "a" * 64, 5):
        assert messages.parse_peer({**record, "name": bad}).name is None

"""KernelDevice and backend choice without a device: requests, dumps, the choice.

The kernel probe and KernelDevice in a namespace: tests/netns/test_netlink_device.py.
"""
from __future__ import annotations

import socket

import pytest
from pyroute2.netlink.generic.wireguard import wgmsg

from aircrew.backend import kernel_wireguard_available, open_device
from aircrew.device import PeerConfig
from aircrew.device_errors import DeviceError
from aircrew.netlink_device import KernelDevice, peer_request, state_from_messages
from aircrew.uapi import UserspaceDevice
from wire.errors import InvalidInput
from wire.proof import generate_private_key, public_key_of

KERNEL = kernel_wireguard_available()


def new_key() -> str:
    return public_key_of(generate_private_key())


def test_peer_request_for_pyroute2():
    key = new_key()
    request = peer_request(PeerConfig(key, "[2001:db8::1]:51820", ("10.1.0.0/24",), 25))
    assert request == {"public_key": key, "persistent_keepalive": 25,
                       "replace_allowed_ips": True, "allowed_ips": ["10.1.0.0/24"],
                       "endpoint_addr": "2001:db8::1", "endpoint_port": 51820}
    assert "endpoint_addr" not in peer_request(PeerConfig(key, None, ()))
    with pytest.raises(InvalidInput):
        peer_request(PeerConfig("nope", None, ()))


def _allowed(cidr: str) -> dict:
    address, length = cidr.split("/")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return {"attrs": [["WGALLOWEDIP_A_FAMILY", family],
                      ["WGALLOWEDIP_A_IPADDR", socket.inet_pton(family, address)],
                      ["WGALLOWEDIP_A_CIDR_MASK", int(length)]]}


def _decoded(attrs: list) -> wgmsg:
    msg = wgmsg()
    msg["cmd"], msg["version"], msg["attrs"] = 0, 1, attrs
    msg.encode()
    decoded = wgmsg(msg.data)
    decoded.decode()
    return decoded


def test_state_from_a_split_dump():
    private, a, b = generate_private_key(), new_key(), new_key()
    first = _decoded([
        ["WGDEVICE_A_IFNAME", "wg0"],
        ["WGDEVICE_A_PRIVATE_KEY", private],
        ["WGDEVICE_A_PUBLIC_KEY", public_key_of(private)],
        ["WGDEVICE_A_LISTEN_PORT", 51820],
        ["WGDEVICE_A_PEERS", [
            {"attrs": [["WGPEER_A_PUBLIC_KEY", a],
                       ["WGPEER_A_ENDPOINT", {"addr": "198.51.100.7", "port": 51820}],
                       ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", 25],
                       ["WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": 1700000000, "tv_nsec": 250000000}],
                       ["WGPEER_A_RX_BYTES", 10], ["WGPEER_A_TX_BYTES", 20],
                       ["WGPEER_A_ALLOWEDIPS", [_allowed("10.200.0.0/24")]]]}]]])
    # The kernel continues a long allowed-IP list in the next message.
    second = _decoded([
        ["WGDEVICE_A_IFNAME", "wg0"],
        ["WGDEVICE_A_PEERS", [
            {"attrs": [["WGPEER_A_PUBLIC_KEY", a],
                       ["WGPEER_A_ALLOWEDIPS", [_allowed("10.140.0.7/32")]]]},
            {"attrs": [["WGPEER_A_PUBLIC_KEY", b],
                       ["WGPEER_A_ENDPOINT", {"addr": "2001:db8::9", "port": 4500}],
                       ["WGPEER_A_ALLOWEDIPS", [_allowed("fd00::9/128")]]]}]]])
    state = state_from_messages([first, second])
    assert state.public_key == public_key_of(private)
    assert state.listen_port == 51820
    assert state.peers == {
        a: PeerConfig(a, "198.51.100.7:51820", ("10.140.0.7/32", "10.200.0.0/24"), 25),
        b: PeerConfig(b, "[2001:db8::9]:4500", ("fd00::9/128",), 0)}
    assert state.stats[a].last_handshake == 1700000000.25
    assert (state.stats[a].rx_bytes, state.stats[a].tx_bytes) == (10, 20)
    assert state.stats[b].last_handshake == 0.0


def test_backend_choice():
    with pytest.raises(InvalidInput, match="unknown WireGuard backend"):
        open_device("wg0", "magic")
    assert isinstance(open_device("wg0", "userspace"), UserspaceDevice)
    chosen = open_device("wg0")
    assert isinstance(chosen, KernelDevice if KERNEL else UserspaceDevice)
    if KERNEL:
        assert isinstance(open_device("wg0", "kernel"), KernelDevice)
    else:
        with pytest.raises(DeviceError, match="kernel WireGuard is not available"):
            open_device("wg0", "kernel")

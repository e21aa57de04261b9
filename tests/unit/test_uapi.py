"""UserspaceDevice without namespaces: error paths, the UAPI socket protocol, parsing.

Against real wireguard-go in namespaces: tests/netns/test_uapi.py.
"""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from aircrew.device import PeerConfig
from aircrew.device_errors import DeviceError
from aircrew.uapi import IMPLEMENTATION_ENV, UserspaceDevice, parse_get_reply
from wire.proof import decode_key, generate_private_key, public_key_of


def new_key() -> str:
    return public_key_of(generate_private_key())


def test_no_device_is_a_clear_error(tmp_path):
    device = UserspaceDevice("wg9", socket_dir=str(tmp_path))
    assert device.exists() is False
    with pytest.raises(DeviceError, match="no userspace WireGuard answers"):
        device.read()
    with pytest.raises(DeviceError, match="wg9"):
        device.remove_peer(new_key())


def test_implementation_failures_are_clear(tmp_path, monkeypatch):
    device = UserspaceDevice("wg9", socket_dir=str(tmp_path), start_timeout=1.0)
    monkeypatch.setenv(IMPLEMENTATION_ENV, "false")
    with pytest.raises(DeviceError, match="exit status 1"):
        device.create()
    monkeypatch.setenv(IMPLEMENTATION_ENV, str(tmp_path / "missing-wireguard"))
    with pytest.raises(DeviceError, match="not an executable"):
        device.create()
    script = tmp_path / "silent-wg"
    script.write_text("#!/bin/sh\necho 'Failed to create TUN device: nope' >&2\nexec sleep 30\n")
    script.chmod(0o755)
    monkeypatch.setenv(IMPLEMENTATION_ENV, str(script))
    started = time.monotonic()
    with pytest.raises(DeviceError, match="did not answer within 1 s: Failed to create TUN"):
        device.create()
    assert time.monotonic() - started < 5
    monkeypatch.delenv(IMPLEMENTATION_ENV)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DeviceError, match="wireguard-go is not on PATH"):
        device.create()


class FakeUapi:
    """A UAPI server on a unix socket: answers get with ``reply`` and set with ``errno``."""

    def __init__(self, path: Path, reply: str, set_errno: int) -> None:
        self.reply, self.set_errno, self.requests = reply, set_errno, []
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data.decode())
                if data.startswith(b"get=1"):
                    conn.sendall(f"{self.reply}errno=0\n\n".encode())
                else:
                    conn.sendall(f"errno={self.set_errno}\n\n".encode())

    def close(self) -> None:
        self.server.close()


def test_errno_and_get_reply_over_a_socket(tmp_path):
    private = generate_private_key()
    peer = new_key()
    reply = (f"private_key={decode_key(private).hex()}\nlisten_port=51820\nfwmark=0\n"
             f"public_key={decode_key(peer).hex()}\npreshared_key={'0' * 64}\n"
             "protocol_version=1\nendpoint=[2001:db8::1]:51820\n"
             "last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=500000000\n"
             "tx_bytes=1234\nrx_bytes=5678\npersistent_keepalive_interval=25\n"
             "allowed_ip=10.200.0.0/24\nallowed_ip=10.140.0.2/32\n")
    server = FakeUapi(tmp_path / "wg7.sock", reply, -22)
    try:
        device = UserspaceDevice("wg7", socket_dir=str(tmp_path))
        state = device.read()
        assert state.public_key == public_key_of(private)
        assert state.listen_port == 51820
        assert state.peers[peer] == PeerConfig(peer, "[2001:db8::1]:51820",
                                               ("10.140.0.2/32", "10.200.0.0/24"), 25)
        stats = state.stats[peer]
        assert (stats.last_handshake, stats.rx_bytes, stats.tx_bytes) == (1700000000.5, 5678, 1234)

        with pytest.raises(DeviceError, match=r"errno -22 \(Invalid argument\)") as caught:
            device.set_identity(private, 51820)
        assert private not in str(caught.value)
        assert decode_key(private).hex() not in str(caught.value)
        assert device.operations == 1                 # it was attempted: one operation
        assert server.requests[-1] == (f"set=1\nprivate_key={decode_key(private).hex()}\n"
                                       "listen_port=51820\n\n")
        server.set_errno = 0
        device.upsert_peers([PeerConfig(peer, "192.0.2.1:1", ("10.1.0.0/16",), 0),
                             PeerConfig(new_key(), None, (), 25)])
        request = server.requests[-1]
        assert request.startswith(f"set=1\npublic_key={decode_key(peer).hex()}\n"
                                  "endpoint=192.0.2.1:1\npersistent_keepalive_interval=0\n"
                                  "replace_allowed_ips=true\nallowed_ip=10.1.0.0/16\n"
                                  "public_key=")
        assert request.count("public_key=") == 2 and request.endswith("\n\n")
        assert device.operations == 2
    finally:
        server.close()


def test_parse_get_reply_rejects_garbage():
    with pytest.raises(DeviceError, match="malformed"):
        parse_get_reply(["listen_port=51820", "garbage"])
    with pytest.raises(DeviceError, match="listen_port"):
        parse_get_reply(["listen_port=abc"])
    assert parse_get_reply([]).peers == {}


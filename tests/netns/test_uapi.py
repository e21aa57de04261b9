"""UserspaceDevice against real wireguard-go, each host in its own namespaces."""
from __future__ import annotations

import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from aircrew.device import PeerConfig
from aircrew.device_errors import DeviceError
from aircrew.uapi import IMPLEMENTATION_ENV, UserspaceDevice, parse_get_reply
from tests import nshelp
from wire.errors import InvalidInput
from wire.proof import decode_key, generate_private_key, public_key_of

_NO_HOSTS = nshelp.available()


def needs_hosts(test):
    """Mark a test that builds namespace hosts (root, ip, wireguard-go)."""
    skip = pytest.mark.skipif(_NO_HOSTS is not None, reason=f"namespace hosts: {_NO_HOSTS}")
    return pytest.mark.netns(skip(test))


def new_key() -> str:
    return public_key_of(generate_private_key())


@pytest.fixture
def host():
    with nshelp.Host("u") as h:
        yield h


@pytest.fixture
def wg(host):
    """(worker, remote UserspaceDevice 'wg0') with the device created."""
    worker = host.worker()
    device = worker.new("aircrew.uapi:UserspaceDevice", "wg0")
    device.create()
    yield worker, device


def wireguard_go_pids(host: nshelp.Host) -> list[int]:
    return [pid for pid in host.pids()
            if Path(f"/proc/{pid}/comm").read_text().strip() == "wireguard-go"]


@needs_hosts
def test_create_is_idempotent_and_destroy_removes_everything(host):
    worker = host.worker()
    device = worker.new("aircrew.uapi:UserspaceDevice", "wg0")
    assert device.exists() is False
    device.create()
    device.create()                                   # no-op: already answers
    assert device.exists() is True
    assert len(wireguard_go_pids(host)) == 1          # daemonised, one instance
    sock = host.run_dir / "wg0.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert "wg0" in host.run(["ip", "-o", "link", "show"]).stdout
    assert device.attr("operations") == 0

    device.destroy()
    assert device.exists() is False
    assert "wg0" not in host.run(["ip", "-o", "link", "show"]).stdout
    deadline = time.monotonic() + 3
    while wireguard_go_pids(host) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert wireguard_go_pids(host) == []
    assert not sock.exists()
    device.destroy()                                  # idempotent


@needs_hosts
def test_foreground_implementation_becomes_our_child(host):
    worker = host.worker(env={IMPLEMENTATION_ENV: "wireguard-go --foreground"})
    device = worker.new("aircrew.uapi:UserspaceDevice", "wg0")
    device.create()
    pids = wireguard_go_pids(host)
    assert len(pids) == 1
    assert Path(f"/proc/{pids[0]}/stat").read_text().split()[3] == str(worker.pid)
    device.destroy()                                  # link deleted, child reaped
    assert device.exists() is False and wireguard_go_pids(host) == []


@needs_hosts
def test_identity_and_peers_read_back_exactly(wg):
    worker, device = wg
    private = generate_private_key()
    device.set_identity(private, 51820)
    assert device.attr("operations") == 1
    state = device.read()
    assert (state.public_key, state.listen_port, state.peers) == (public_key_of(private), 51820, {})

    a = PeerConfig(new_key(), "198.51.100.7:51820", ("10.140.0.7/32", "10.200.1.0/24"), 25)
    b = PeerConfig(new_key(), "[2001:db8::9]:4500", ("fd00:140::9/128",), 0)
    c = PeerConfig(new_key(), None, (), 25)
    for count, peer in enumerate((a, b, c), start=2):
        device.upsert_peer(peer)
        assert device.attr("operations") == count
    state = device.read()
    assert state.peers == {a.public_key: a, b.public_key: b, c.public_key: c}
    assert set(state.stats) == set(state.peers)
    assert state.stats[a.public_key].last_handshake == 0.0

    # An update replaces allowed IPs (never merges) and changes endpoint and keepalive.
    a2 = PeerConfig(a.public_key, "203.0.113.5:1234", ("10.140.0.7/32",), 10)
    device.upsert_peer(a2)
    assert device.attr("operations") == 5
    assert device.read().peers[a.public_key] == a2

    device.remove_peer(b.public_key)
    assert device.attr("operations") == 6
    assert set(device.read().peers) == {a.public_key, c.public_key}
    device.remove_peer(b.public_key)                  # absent: still fine, one operation
    assert device.attr("operations") == 7

    # Invalid input is refused before anything is sent: no operation counted.
    with pytest.raises(InvalidInput):
        device.upsert_peer(PeerConfig("not-a-key", None, ()))
    with pytest.raises(InvalidInput):
        device.upsert_peer(PeerConfig(new_key(), "vpn.example.com:51820", ()))
    with pytest.raises(InvalidInput):
        device.set_identity(private, 70000)
    assert device.attr("operations") == 7
    assert device.read().public_key == public_key_of(private)


@needs_hosts
def test_batch_of_1000_peers_is_one_operation(host, wg):
    worker, device = wg
    link = worker.new("aircrew.routes:LinkConfig", "wg0")
    device.set_identity(generate_private_key(), 51820)
    link.set_address("10.140.0.1", 16)
    link.up()                                          # peers start their routines
    peers = [PeerConfig(new_key(), f"198.51.100.{i % 250 + 1}:{20000 + i}",
                        (f"10.140.{i // 250}.{i % 250 + 2}/32", f"10.{200 + i // 250}.{i % 250}.0/24"),
                        25)
             for i in range(1000)]
    before = device.attr("operations")
    started = time.perf_counter()
    device.upsert_peers(peers)
    batch = time.perf_counter() - started
    batch_in_worker = worker.last_elapsed
    assert device.attr("operations") == before + 1

    started = time.perf_counter()
    state = device.read()
    read_time = time.perf_counter() - started
    assert state.peers == {p.public_key: p for p in peers}

    changed = PeerConfig(peers[500].public_key, "203.0.113.50:51820", peers[500].allowed_ips, 25)
    one = []
    for _ in range(5):
        started = time.perf_counter()
        device.upsert_peer(changed)
        one.append(time.perf_counter() - started)
    assert device.attr("operations") == before + 6
    assert device.read().peers[changed.public_key] == changed

    device.remove_peers([p.public_key for p in peers[:10]])
    assert device.attr("operations") == before + 7
    assert len(device.read().peers) == 990
    print(f"\n[timing] 1000-peer batch upsert {batch * 1000:.1f} ms "
          f"(inside the host {batch_in_worker * 1000:.1f} ms), "
          f"read of 1000 peers {read_time * 1000:.1f} ms, "
          f"one-peer change median {sorted(one)[2] * 1000:.2f} ms (max {max(one) * 1000:.2f})")
    assert batch < 10        # the target is 2 s; this only catches a pathology


@needs_hosts
def test_tunnel_works_and_unrelated_changes_keep_the_session():
    with nshelp.Host("a") as a, nshelp.Host("b") as b:
        nshelp.connect(a, b, "198.51.100.1", "198.51.100.2")
        keys = {a: generate_private_key(), b: generate_private_key()}
        tunnel = {a: "10.99.0.1", b: "10.99.0.2"}
        under = {a: "198.51.100.1", b: "198.51.100.2"}
        devices = {}
        for me, other in ((a, b), (b, a)):
            worker = me.worker()
            device = worker.new("aircrew.uapi:UserspaceDevice", "wg0")
            device.create()
            device.set_identity(keys[me], 51820)
            link = worker.new("aircrew.routes:LinkConfig", "wg0")
            link.set_address(tunnel[me], 24)
            link.up()
            devices[me] = device
        peer_config = {}
        for me, other in ((a, b), (b, a)):
            peer_config[me] = PeerConfig(public_key_of(keys[other]), f"{under[other]}:51820",
                                         (f"{tunnel[other]}/32",), 25)
            devices[me].upsert_peer(peer_config[me])

        ping(a, tunnel[b])
        ping(b, tunnel[a])
        before = stable_handshakes(devices, keys, a, b)
        assert all(before.values())
        stats = devices[a].read().stats[public_key_of(keys[b])]
        assert stats.rx_bytes > 0 and stats.tx_bytes > 0

        # Changes that do not concern the a<->b tunnel: a new peer on each side, an
        # unrelated peer updated, and the same peer config applied again (a resync).
        stranger = PeerConfig(new_key(), "203.0.113.9:51820", ("10.99.0.9/32",), 25)
        devices[a].upsert_peer(stranger)
        devices[b].upsert_peer(stranger)
        devices[a].upsert_peer(PeerConfig(stranger.public_key, "203.0.113.10:51820",
                                          ("10.99.0.10/32",), 25))
        devices[a].remove_peer(stranger.public_key)
        devices[a].upsert_peer(peer_config[a])
        time.sleep(0.3)
        ping(a, tunnel[b])
        ping(b, tunnel[a])
        after = {me: devices[me].read().stats[public_key_of(keys[other])].last_handshake
                 for me, other in ((a, b), (b, a))}
        assert after == before


def ping(host: nshelp.Host, address: str) -> None:
    # A lost first handshake is retried after WireGuard's REKEY_TIMEOUT (5 s): wait longer.
    for _ in range(12):
        if host.run(["ping", "-c", "1", "-W", "1", address], check=False).returncode == 0:
            return
    raise AssertionError(f"{host.name} cannot ping {address} over the tunnel")


def stable_handshakes(devices, keys, a, b) -> dict:
    """Last handshake per side once no handshake is in flight (both sides initiate)."""
    previous = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        current = {me: devices[me].read().stats[public_key_of(keys[other])].last_handshake
                   for me, other in ((a, b), (b, a))}
        if current == previous and all(current.values()):
            return current
        previous = current
        time.sleep(0.5)
    raise AssertionError("handshakes did not settle")


# -- without namespaces: error paths, parsing ----------------------------------------------

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


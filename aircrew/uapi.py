"""Userspace WireGuard (wireguard-go, boringtun) through the cross-platform UAPI socket.

The protocol is text over the unix socket ``/var/run/wireguard/<name>.sock``: a request
is ``get=1`` or ``set=1`` followed by ``key=value`` lines and an empty line; the reply is
``key=value`` lines ending with ``errno=N`` and an empty line. Keys are hex there.

Each device call opens one connection and sends one transaction (connecting to a unix
socket costs microseconds, and a fresh connection can never be stale after the daemon
restarted). ``upsert_peers``/``remove_peers`` put many peers in ONE ``set`` transaction;
that is one device operation, used for the initial apply.

Starting the implementation: like wg-quick, we run ``$WG_QUICK_USERSPACE_IMPLEMENTATION``
(or ``wireguard-go`` from PATH) with the interface name and let it daemonise. The
interface, and so every tunnel, outlives an agent restart; ``destroy()`` deletes the
link, which makes wireguard-go exit. An implementation that stays in the foreground is
detected (still running when its socket answers) and kept as our child.
"""
from __future__ import annotations

import errno as errno_names
import logging
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from typing import IO

from wire.errors import InvalidInput
from wire.proof import public_key_of

from .device import Device, DeviceState, PeerConfig
from .device_errors import DeviceError
from .rtnl import Netlink
from .wgfields import (PeerReading, canonical_cidr, canonical_endpoint, key_from_hex, key_to_hex,
                       validate_ifname, validate_keepalive, validate_port)

__all__ = ["UserspaceDevice", "DeviceError", "implementation_command", "parse_get_reply",
           "DEFAULT_SOCKET_DIR", "IMPLEMENTATION_ENV"]

log = logging.getLogger(__name__)

DEFAULT_SOCKET_DIR = "/var/run/wireguard"
IMPLEMENTATION_ENV = "WG_QUICK_USERSPACE_IMPLEMENTATION"
DEFAULT_IMPLEMENTATION = "wireguard-go"
_RECV_CHUNK = 1 << 16
_POLL_INTERVAL = 0.01
_LAUNCHER_EXIT_GRACE = 0.5
_SECONDS_PER_PEER = 0.005     # reply timeout allowance per peer of a batch (measured ~0.3 ms)


def implementation_command() -> list[str]:
    """The userspace WireGuard command (without the interface name) we would run."""
    configured = os.environ.get(IMPLEMENTATION_ENV, "").strip()
    if configured:
        argv = shlex.split(configured)
        if shutil.which(argv[0]) is None:
            raise DeviceError(f"{IMPLEMENTATION_ENV}={configured!r}: {argv[0]} is not an "
                              "executable on PATH")
        return argv
    found = shutil.which(DEFAULT_IMPLEMENTATION)
    if found is None:
        raise DeviceError(f"no userspace WireGuard: {DEFAULT_IMPLEMENTATION} is not on PATH and "
                          f"{IMPLEMENTATION_ENV} is not set (Debian: apt-get install wireguard-go)")
    return [found]


class UserspaceDevice(Device):
    """A WireGuard interface run by a userspace implementation, driven over UAPI."""

    def __init__(self, name: str, *, socket_dir: str = DEFAULT_SOCKET_DIR,
                 timeout: float = 5.0, start_timeout: float = 5.0) -> None:
        super().__init__(validate_ifname(name))
        self.socket_path = os.path.join(socket_dir, f"{name}.sock")
        self.timeout = timeout
        self.start_timeout = start_timeout
        self._child: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def exists(self) -> bool:
        sock = self._connect()
        if sock is None:
            return False
        sock.close()
        return True

    def create(self) -> None:
        if self.exists():
            return
        argv = [*implementation_command(), self.name]
        env = dict(os.environ)
        env.pop("WG_PROCESS_FOREGROUND", None)       # let wireguard-go daemonise
        # With LOG_LEVEL set, the daemon keeps the stdout/stderr it was given: hand it
        # ours. Otherwise capture the launcher's stderr to explain a failure.
        capture = None if env.get("LOG_LEVEL") else tempfile.TemporaryFile()
        log.info("starting %s for %s", argv[0], self.name)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL if capture else None,
                                    stderr=capture, env=env, start_new_session=True)
        except OSError as exc:
            if capture:
                capture.close()
            raise DeviceError(f"{self.name}: cannot start {argv[0]}: "
                              f"{exc.strerror or exc}") from None
        try:
            self._await_start(proc, argv[0], capture)
        finally:
            if capture:
                capture.close()

    def _await_start(self, proc: subprocess.Popen[bytes], program: str,
                     capture: IO[bytes] | None) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            status = proc.poll()
            if status not in (None, 0):
                raise DeviceError(f"{self.name}: {program} failed with exit status {status}"
                                  f"{_last_line(capture)}")
            if self.exists():
                if status is None:
                    # A daemonising launcher exits right after binding the socket.
                    try:
                        status = proc.wait(timeout=_LAUNCHER_EXIT_GRACE)
                    except subprocess.TimeoutExpired:
                        self._child = proc  # it stays in the foreground: our child now
                log.info("%s is up (%s)", self.name, self.socket_path)
                return
            if time.monotonic() > deadline:
                if status is None:
                    proc.kill()
                    proc.wait()
                raise DeviceError(f"{self.name}: {program} started but {self.socket_path} "
                                  f"did not answer within {self.start_timeout:g} s"
                                  f"{_last_line(capture)}")
            time.sleep(_POLL_INTERVAL)

    def destroy(self) -> None:
        if not self._delete_link() and self.exists():
            # No kernel-visible link (not Linux, or a broken state): wireguard-go also
            # exits when its socket file disappears.
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise DeviceError(f"{self.name}: cannot remove {self.socket_path}: "
                                  f"{exc.strerror}") from None
        deadline = time.monotonic() + self.start_timeout
        while self.exists() and time.monotonic() < deadline:
            time.sleep(_POLL_INTERVAL)
        self._reap_child()
        if self.exists():
            raise DeviceError(f"{self.name}: the userspace implementation still answers on "
                              f"{self.socket_path} after the interface was removed")
        log.info("%s removed", self.name)

    def _delete_link(self) -> bool:
        """Delete the network interface; False when there is none."""
        try:
            index = socket.if_nametoindex(self.name)
        except OSError:
            return False
        netlink = Netlink()
        try:
            netlink.delete_link(index)
        except OSError as exc:
            if exc.errno == errno_names.ENODEV:
                return False
            raise DeviceError(f"{self.name}: cannot delete the interface: "
                              f"{os.strerror(exc.errno or 0)}") from None
        finally:
            netlink.close()
        return True

    def _reap_child(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        try:
            child.wait(timeout=self.start_timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    # -- operations ----------------------------------------------------------------------

    def read(self) -> DeviceState:
        return parse_get_reply(self._transact(b"get=1\n\n", "get"))

    def set_identity(self, private_key: str, listen_port: int) -> None:
        request = (f"set=1\nprivate_key={key_to_hex(private_key, 'private key')}\n"
                   f"listen_port={validate_port(listen_port)}\n\n")
        self.operations += 1
        self._transact(request.encode(), "set identity")
        log.debug("%s: identity set, listen port %d", self.name, listen_port)

    def upsert_peer(self, peer: PeerConfig) -> None:
        self.upsert_peers([peer])

    def upsert_peers(self, peers: Iterable[PeerConfig]) -> None:
        """Add or update many peers in ONE set transaction (one operation)."""
        batch = list(peers)
        lines = [line for peer in batch for line in _peer_lines(peer)]
        if not batch:
            return
        self.operations += 1
        self._transact(_set_request(lines), "upsert peers", self._batch_timeout(len(batch)))
        log.debug("%s: upserted %d peer(s)", self.name, len(batch))

    def remove_peer(self, public_key: str) -> None:
        self.remove_peers([public_key])

    def reset_peer(self, peer: PeerConfig) -> None:
        """Remove and add the peer in ONE set transaction: its sessions are gone and
        wireguard-go handshakes at once (persistent keepalive sends the first packet)."""
        lines = [f"public_key={key_to_hex(peer.public_key, 'peer public key')}", "remove=true",
                 *_peer_lines(peer)]
        self.operations += 1
        self._transact(_set_request(lines), "reset peer")
        log.debug("%s: reset peer %s", self.name, peer.public_key)

    def remove_peers(self, public_keys: Iterable[str]) -> None:
        """Remove many peers in ONE set transaction (one operation); absent ones are fine."""
        batch = list(public_keys)
        lines: list[str] = []
        for key in batch:
            lines += [f"public_key={key_to_hex(key, 'peer public key')}", "remove=true"]
        if not batch:
            return
        self.operations += 1
        self._transact(_set_request(lines), "remove peers", self._batch_timeout(len(batch)))
        log.debug("%s: removed %d peer(s)", self.name, len(batch))

    def _batch_timeout(self, peers: int) -> float:
        return self.timeout + peers * _SECONDS_PER_PEER

    # -- transport -----------------------------------------------------------------------

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            sock.close()
            return None
        except OSError as exc:
            sock.close()
            raise DeviceError(f"{self.name}: cannot connect to {self.socket_path}: "
                              f"{exc.strerror or exc}") from None
        return sock

    def _transact(self, request: bytes, what: str, timeout: float | None = None) -> list[str]:
        """Send one request; return the reply lines before ``errno=0``."""
        sock = self._connect()
        if sock is None:
            raise DeviceError(f"{self.name}: no userspace WireGuard answers on "
                              f"{self.socket_path} (is the interface created?)")
        timeout = timeout or self.timeout
        sock.settimeout(timeout)
        with sock:
            try:
                try:
                    sock.sendall(request)
                except (BrokenPipeError, ConnectionResetError):
                    pass    # it stopped reading after an error; its errno may be waiting
                reply = _receive(sock)
            except TimeoutError:
                raise DeviceError(f"{self.name}: {what}: no reply within "
                                  f"{timeout:g} s") from None
            except OSError as exc:
                raise DeviceError(f"{self.name}: {what}: connection failed: "
                                  f"{exc.strerror or exc}") from None
        if reply is None:
            raise DeviceError(f"{self.name}: {what}: the device closed the connection "
                              "without a complete reply")
        return _check_errno(reply, f"{self.name}: {what}")


def _set_request(lines: list[str]) -> bytes:
    return ("set=1\n" + "\n".join(lines) + "\n\n").encode()


def _peer_lines(peer: PeerConfig) -> list[str]:
    lines = [f"public_key={key_to_hex(peer.public_key, 'peer public key')}"]
    if peer.endpoint is not None:
        lines.append(f"endpoint={canonical_endpoint(peer.endpoint)}")
    lines.append(f"persistent_keepalive_interval={validate_keepalive(peer.keepalive)}")
    lines.append("replace_allowed_ips=true")
    lines += [f"allowed_ip={canonical_cidr(cidr)}" for cidr in peer.allowed_ips]
    return lines


def _receive(sock: socket.socket) -> str | None:
    """Read one reply (up to and including the empty line); None on early EOF."""
    buffer = bytearray()
    while not buffer.endswith(b"\n\n"):
        chunk = sock.recv(_RECV_CHUNK)
        if not chunk:
            return None
        buffer += chunk
    return buffer[:-2].decode("ascii", errors="replace")


def _check_errno(reply: str, context: str) -> list[str]:
    lines = reply.split("\n")
    key, _, value = lines[-1].partition("=")
    if key != "errno" or not value.lstrip("-").isdigit():
        raise DeviceError(f"{context}: malformed reply from the device (no errno line)")
    code = int(value)
    if code != 0:
        raise DeviceError(f"{context}: refused by the device: errno {code} "
                          f"({os.strerror(abs(code))})")
    return lines[:-1]


# -- parsing a get reply -----------------------------------------------------------------

_PEER_INTS = {"persistent_keepalive_interval": "keepalive",
              "last_handshake_time_sec": "handshake_sec",
              "last_handshake_time_nsec": "handshake_nsec",
              "rx_bytes": "rx_bytes", "tx_bytes": "tx_bytes"}


def parse_get_reply(lines: Iterable[str]) -> DeviceState:
    """Turn the ``key=value`` lines of a ``get=1`` reply into a DeviceState."""
    state = DeviceState()
    peers: list[PeerReading] = []
    for line in lines:
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise DeviceError("malformed UAPI reply line (no '=')")
        try:
            if key == "public_key":
                peers.append(PeerReading(key_from_hex(value, "peer public key")))
            elif not peers:
                if key == "private_key":
                    state.public_key = public_key_of(key_from_hex(value, "private key"))
                elif key == "listen_port":
                    state.listen_port = int(value)
            elif key in _PEER_INTS:
                setattr(peers[-1], _PEER_INTS[key], int(value))
            elif key == "endpoint":
                peers[-1].endpoint = _endpoint_or_raw(value)
            elif key == "allowed_ip":
                peers[-1].allowed_ips.append(value)
        except (ValueError, InvalidInput):
            raise DeviceError(f"malformed value for {key!r} in the UAPI reply") from None
    for peer in peers:
        state.peers[peer.public_key] = peer.config()
        state.stats[peer.public_key] = peer.stats()
    return state


def _endpoint_or_raw(value: str) -> str:
    try:
        return canonical_endpoint(value)
    except InvalidInput:
        return value


def _last_line(capture: IO[bytes] | None) -> str:
    """': <last line the launcher printed>' or '' (its output holds no secret)."""
    if capture is None:
        return ""
    capture.seek(0)
    text = capture.read(65536).decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip(" │┌┐└┘─\t")]
    return f": {lines[-1][:300]}" if lines else ""

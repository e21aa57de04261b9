"""The STUN client against a server nobody here wrote: coturn (``turnserver --stun-only``).

coturn listens on a free loopback port with a throw-away config, log and database; the
fixture kills it by PID whatever happens. A missing turnserver fails the tests (it is a
declared test dependency: Debian package ``coturn``), it does not skip them.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from aircrew import stun_client
from aircrew.stun_client import StunError
from controltower.stun_responder import StunResponder
from wire import stun

STARTUP_TIMEOUT = 10.0


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _raw_sockets_allowed() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
    except PermissionError:
        return False
    return True


needs_raw = pytest.mark.skipif(not _raw_sockets_allowed(), reason="needs CAP_NET_RAW")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def coturn(tmp_path_factory) -> tuple[str, int]:
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.fail(
            "turnserver not found: install the Debian package coturn "
            "(apt-get install -y --no-install-recommends coturn)"
        )
    workdir = tmp_path_factory.mktemp("coturn")
    config = workdir / "turnserver.conf"
    config.write_text("# empty: everything is on the command line\n")
    port = _free_udp_port()
    log_path = workdir / "turnserver.log"
    argv = [
        binary, "-c", str(config), "--stun-only", "--no-cli", "--no-tls", "--no-dtls",
        "--no-tcp", "--no-rfc5780", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1",
        "--listening-port", str(port), "--log-file", str(log_path), "--simple-log",
        "--pidfile", str(workdir / "turnserver.pid"), "--userdb", str(workdir / "turndb"),
    ]
    with open(workdir / "stdout.log", "wb") as stdout:
        proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = ("127.0.0.1", port)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"turnserver exited with {proc.returncode}:\n{_tail(log_path, workdir)}")
            try:
                stun_client.query(server, None, timeout=0.1, retries=0)
                break
            except StunError:
                if time.monotonic() > deadline:
                    pytest.fail(f"turnserver did not answer within {STARTUP_TIMEOUT}s:\n"
                                f"{_tail(log_path, workdir)}")
        yield server
    finally:
        _stop(proc)


def _tail(log_path, workdir) -> str:
    texts = []
    for path in (log_path, workdir / "stdout.log"):
        if path.exists():
            texts.append(path.read_text(errors="replace")[-3000:])
    return "\n".join(texts)


@pytest.fixture
def responders():
    started = [StunResponder("127.0.0.1", 0), StunResponder("127.0.0.1", 0)]
    try:
        for responder in started:
            responder.start()
        yield [("127.0.0.1", r.bound_port) for r in started]
    finally:
        for responder in started:
            responder.stop()


@pytest.fixture
def held_port():
    """A plain UDP socket on a port, standing in for wireguard-go's (no SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder


def test_coturn_answers_raw_requests_we_can_parse(coturn):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2)
        own = sock.getsockname()
        for fingerprint in (True, False):
            request = stun.build_binding_request(fingerprint=fingerprint)
            sock.sendto(request, coturn)
            data, source = sock.recvfrom(2048)
            assert source == coturn
            assert stun.parse_binding_response(data, stun.transaction_id_of(request)) == own


def test_query_maps_the_given_local_port(coturn):
    port = _free_udp_port()
    assert stun_client.query(coturn, port, timeout=0.5) == ("127.0.0.1", port)
    assert stun_client.query(coturn, port, local_ip="127.0.0.1", timeout=0.5) == ("127.0.0.1", port)


def test_query_fails_clearly_while_the_port_is_held(coturn, held_port):
    port = held_port.getsockname()[1]
    with pytest.raises(StunError, match="held by another socket"):
        stun_client.query(coturn, port, local_ip="127.0.0.1", timeout=0.5)


@needs_raw
def test_query_raw_while_another_socket_holds_the_port(coturn, held_port):
    port = held_port.getsockname()[1]
    assert stun_client.query_raw(coturn, port, timeout=0.5) == ("127.0.0.1", port)
    # The answer really went to the held port: its owner got a copy too.
    held_port.settimeout(2)
    data, source = held_port.recvfrom(2048)
    assert source == coturn
    assert stun.parse_binding_response(data) == ("127.0.0.1", port)


@needs_raw
def test_query_raw_with_explicit_local_ip(coturn, held_port):
    port = held_port.getsockname()[1]
    assert stun_client.query_raw(coturn, port, local_ip="127.0.0.1", timeout=0.5) == ("127.0.0.1", port)


def test_discover_coturn_and_our_responder(coturn, responders):
    port = _free_udp_port()
    found = stun_client.discover([coturn, *responders], port, timeout=0.5)
    assert found.errors == {}
    assert found.endpoint == f"127.0.0.1:{port}"
    assert found.nat_type == "open"
    assert found.local_port == port
    assert list(found.mappings.values()) == [("127.0.0.1", port)] * 3


def test_discover_cone_when_the_mapped_ip_is_not_ours(coturn, responders):
    port = _free_udp_port()
    found = stun_client.discover([coturn, *responders], port, timeout=0.5, is_local=lambda ip: False)
    assert found.nat_type == "cone"


@needs_raw
def test_discover_raw_while_the_port_is_held(coturn, responders, held_port):
    port = held_port.getsockname()[1]
    found = stun_client.discover([coturn, *responders], port, timeout=0.5, raw=True)
    assert found.errors == {}
    assert found.endpoint == f"127.0.0.1:{port}"
    assert found.nat_type == "open"
    assert list(found.mappings.values()) == [("127.0.0.1", port)] * 3

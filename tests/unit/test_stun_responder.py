"""controltower.stun_responder: answers our client, shrugs off garbage, stops cleanly."""
from __future__ import annotations

import socket
import time

import pytest

from aircrew import stun_client
from controltower.stun_responder import StunResponder
from tests.stunvectors import RFC5769_IPV4_RESPONSE, RFC5769_REQUEST, RFC5769_TID
from wire import stun
from wire.errors import InvalidInput


def _free_udp_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _eventually(predicate, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.005)


@pytest.fixture
def responder():
    server = StunResponder("127.0.0.1", 0, software="apex-mesh test")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def udp_client():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    yield sock
    sock.close()


def test_bound_port(responder):
    assert responder.running
    assert responder.bound_port > 0


def test_answers_our_client(responder):
    port = _free_udp_port()
    mapped = stun_client.query(("127.0.0.1", responder.bound_port), port, timeout=0.5, retries=2)
    assert mapped == ("127.0.0.1", port)


def test_answer_carries_both_address_attributes_and_software(responder, udp_client):
    request = stun.build_binding_request()
    udp_client.sendto(request, ("127.0.0.1", responder.bound_port))
    data, _ = udp_client.recvfrom(2048)
    message = stun.parse_message(data)
    own = ("127.0.0.1", udp_client.getsockname()[1])
    assert message.transaction_id == stun.transaction_id_of(request)
    assert message.fingerprint_checked
    assert stun.parse_binding_response(data) == own
    assert stun.decode_address(message.attribute(stun.ATTR_MAPPED_ADDRESS)) == own
    assert message.attribute(stun.ATTR_SOFTWARE) == b"apex-mesh test"


def test_answers_rfc5769_sample_request(responder, udp_client):
    udp_client.sendto(RFC5769_REQUEST, ("127.0.0.1", responder.bound_port))
    data, _ = udp_client.recvfrom(2048)
    assert stun.parse_message(data).transaction_id == RFC5769_TID


GARBAGE = [
    b"",
    b"\x00",
    b"hello, world",
    b"\xff" * 1500,
    bytes(range(256)) * 4,
    RFC5769_IPV4_RESPONSE,                                   # a response, not a request
    stun.build_binding_request()[:-1] + b"\x00",             # bad fingerprint
    stun.build_message(stun.BINDING_INDICATION, bytes(12)),  # an indication
    stun.build_binding_request()[:20],                       # length field lies
    b"\x01\x00\x00\x00" + b"\x00" * 144,                     # a WireGuard handshake shape
]


def test_garbage_is_dropped_silently_and_does_not_kill_it(responder, udp_client):
    address = ("127.0.0.1", responder.bound_port)
    for junk in GARBAGE:
        udp_client.sendto(junk, address)
    udp_client.settimeout(0.3)
    with pytest.raises(TimeoutError):
        udp_client.recvfrom(2048)
    assert responder.running
    mapped = stun_client.query(address, None, timeout=0.5, retries=2)
    assert mapped[0] == "127.0.0.1"
    assert responder.dropped == len(GARBAGE)  # one thread, FIFO: all seen before the query
    _eventually(lambda: responder.answered == 1)  # counted just after the answer is sent


def test_survives_an_unexpected_exception(responder, monkeypatch):
    original = responder._answer
    calls = []

    def explode(*args):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return original(*args)

    monkeypatch.setattr(responder, "_answer", explode)
    address = ("127.0.0.1", responder.bound_port)
    with pytest.raises(stun_client.StunError):
        stun_client.query(address, None, timeout=0.2, retries=0)
    assert responder.running
    assert stun_client.query(address, None, timeout=0.5, retries=2)[0] == "127.0.0.1"


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback here")
def test_ipv6():
    with StunResponder("::1", 0) as server:
        port = _free_udp_port("::1")
        mapped = stun_client.query(("::1", server.bound_port), port, local_ip="::", timeout=0.5)
        assert mapped == ("::1", port)


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback here")
def test_dual_stack_socket_answers_ipv4_clients_with_ipv4():
    with StunResponder("::", 0) as server:
        if server.bound_port == 0:  # pragma: no cover - defensive
            pytest.fail("not bound")
        try:
            mapped = stun_client.query(("127.0.0.1", server.bound_port), None, timeout=0.5)
        except stun_client.StunError:
            pytest.skip("this host's :: socket is IPv6-only (net.ipv6.bindv6only=1)")
        assert mapped[0] == "127.0.0.1"


def test_stop_releases_the_port_and_is_idempotent():
    server = StunResponder("127.0.0.1", 0)
    server.start()
    port = server.bound_port
    thread = server._thread
    server.stop()
    assert not thread.is_alive()
    assert not server.running
    assert server.bound_port == 0
    server.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))  # free again


def test_stop_before_start_is_harmless():
    StunResponder("127.0.0.1", 0).stop()


def test_fixed_port_and_bind_errors():
    port = _free_udp_port()
    with StunResponder("127.0.0.1", port) as server:
        assert server.bound_port == port
        with pytest.raises(OSError):
            StunResponder("127.0.0.1", port).start()


@pytest.mark.parametrize("port", [-1, 65536, "3478", True])
def test_bad_port(port):
    with pytest.raises(InvalidInput):
        StunResponder("127.0.0.1", port)

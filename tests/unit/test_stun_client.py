"""aircrew.stun_client (pure helpers, retransmission, errors), aircrew.nat (NAT
classification) and aircrew.stun_transport (raw UDP helpers)."""
from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest

from aircrew import nat, stun_client, stun_transport
from aircrew.nat import classify_nat
from aircrew.stun_client import StunError, parse_server
from wire import stun
from wire.errors import InvalidInput, MeshError


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


class FakeServer:
    """A loopback UDP server whose answers a test decides: handler(data, source) -> bytes."""

    def __init__(self, handler: Callable[[bytes, tuple[str, int]], bytes | None]) -> None:
        self.handler = handler
        self.received: list[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.address = self.sock.getsockname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            self.received.append(data)
            reply = self.handler(data, source)
            if reply is not None:
                self.sock.sendto(reply, source)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def fake_server():
    servers: list[FakeServer] = []

    def make(handler):
        server = FakeServer(handler)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def _echo_mapping(data: bytes, source: tuple[str, int]) -> bytes:
    return stun.build_binding_success(stun.transaction_id_of(data), source)


def _fixed_mapping(address: tuple[str, int]):
    def handler(data: bytes, _source) -> bytes:
        return stun.build_binding_success(stun.transaction_id_of(data), address)

    return handler


# -- parse_server --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("stun.example:3479", ("stun.example", 3479)),
        ("stun.example", ("stun.example", 3478)),
        ("192.0.2.1", ("192.0.2.1", 3478)),
        ("192.0.2.1:19302", ("192.0.2.1", 19302)),
        ("[2001:db8::1]:5349", ("2001:db8::1", 5349)),
        ("[2001:db8::1]", ("2001:db8::1", 3478)),
        ("2001:db8::1", ("2001:db8::1", 3478)),
        ("  tower.lab:3478 ", ("tower.lab", 3478)),
    ],
)
def test_parse_server(text, expected):
    assert parse_server(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "   ", "host:", "host:0", "host:65536", "host:abc", "host:²", ":3478", "[2001:db8::1",
     "[2001:db8::1]x", "[not-v6]:1", "a:b:c", "ho st:1", "[2001:db8::1]:"],
)
def test_parse_server_rejects(text):
    with pytest.raises(InvalidInput):
        parse_server(text)


def test_format_server():
    assert stun_client.format_server(("203.0.113.5", 3478)) == "203.0.113.5:3478"
    assert stun_client.format_server(("2001:db8::5", 3478)) == "[2001:db8::5]:3478"
    assert stun_client.format_server(("stun.example", 3478)) == "stun.example:3478"


# -- classify_nat --------------------------------------------------------------------

LOCAL = {"192.168.1.10", "127.0.0.1"}.__contains__


@pytest.mark.parametrize(
    "mappings, expected",
    [
        ([], "unknown"),
        ([("203.0.113.5", 40000)], "unknown"),
        ([("203.0.113.5", 40000), ("203.0.113.5", 40000)], "cone"),
        ([("203.0.113.5", 40000)] * 3, "cone"),
        ([("203.0.113.5", 40000), ("203.0.113.5", 40001)], "symmetric"),
        ([("203.0.113.5", 40000), ("203.0.113.6", 40000)], "symmetric"),
        ([("192.168.1.10", 51820)], "open"),
        ([("192.168.1.10", 51820), ("192.168.1.10", 51820)], "open"),
        ([("192.168.1.10", 40000), ("192.168.1.10", 40000)], "cone"),  # local IP, port remapped
        ([("192.168.1.10", 51820), ("203.0.113.5", 51820)], "symmetric"),
    ],
)
def test_classify_nat(mappings, expected):
    assert classify_nat(mappings, 51820, LOCAL) == expected


def test_classify_nat_without_known_local_port():
    assert classify_nat([("192.168.1.10", 51820)] * 2, None, LOCAL) == "cone"


def test_is_local_address():
    assert nat.is_local_address("127.0.0.1")
    assert not nat.is_local_address("192.0.2.123")  # TEST-NET-1, never ours
    assert not nat.is_local_address("not an ip")


# -- raw UDP helpers -----------------------------------------------------------------


def _ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for index in range(0, len(data), 2):
        total += (data[index] << 8) | data[index + 1]
    return total % 0xFFFF or 0xFFFF  # end-around carry, written differently


@pytest.mark.parametrize("payload", [b"", b"x", b"hello!", bytes(range(256))])
def test_udp_checksum_verifies(payload):
    segment = stun_transport.build_udp_segment(("10.1.2.3", 51820), ("192.0.2.9", 3478), payload)
    pseudo = socket.inet_aton("10.1.2.3") + socket.inet_aton("192.0.2.9")
    pseudo += struct.pack("!BBH", 0, 17, len(segment))
    assert _ones_complement_sum(pseudo + segment) == 0xFFFF
    assert segment[8:] == payload
    assert struct.unpack("!HHH", segment[:6]) == (51820, 3478, 8 + len(payload))


@pytest.mark.skipif(not _raw_sockets_allowed(), reason="needs CAP_NET_RAW")
def test_kernel_accepts_our_checksum_and_drops_a_wrong_one():
    # The loopback path verifies UDP checksums of raw-socket packets: a real oracle.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, socket.socket(
        socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP
    ) as raw:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(0.3)
        port = receiver.getsockname()[1]
        good = stun_transport.build_udp_segment(("127.0.0.1", 40001), ("127.0.0.1", port), b"odd")
        bad = good[:6] + bytes([good[6] ^ 0x5A]) + good[7:]
        raw.sendto(bad, ("127.0.0.1", 0))
        raw.sendto(good, ("127.0.0.1", 0))
        assert receiver.recvfrom(64) == (b"odd", ("127.0.0.1", 40001))
        with pytest.raises(TimeoutError):
            receiver.recvfrom(64)


def _ipv4(payload: bytes, *, proto: int = 17, flags_fragment: int = 0, ihl: int = 5) -> bytes:
    options = b"\x00" * ((ihl - 5) * 4)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(options) + len(payload), 1, flags_fragment,
        64, proto, 0, socket.inet_aton("192.0.2.1"), socket.inet_aton("10.0.0.2"),
    )
    return header + options + payload


def test_parse_ipv4_udp():
    segment = struct.pack("!HHHH", 3478, 51820, 11, 0) + b"abc"
    assert stun_transport.parse_ipv4_udp(_ipv4(segment)) == (
        ("192.0.2.1", 3478), ("10.0.0.2", 51820), b"abc"
    )
    assert stun_transport.parse_ipv4_udp(_ipv4(segment, ihl=6))[2] == b"abc"
    assert stun_transport.parse_ipv4_udp(_ipv4(segment + b"pad"))[2] == b"abc"


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x45" + b"\x00" * 10,
        _ipv4(struct.pack("!HHHH", 1, 2, 8, 0), proto=6),            # TCP
        _ipv4(struct.pack("!HHHH", 1, 2, 8, 0), flags_fragment=0x2000),  # more fragments
        _ipv4(struct.pack("!HHHH", 1, 2, 8, 0), flags_fragment=0x0010),  # offset
        _ipv4(struct.pack("!HHHH", 1, 2, 50, 0)),                   # UDP length lies
        _ipv4(struct.pack("!HHHH", 1, 2, 4, 0)),                    # UDP length < 8
        _ipv4(b"\x00\x01"),                                          # truncated UDP header
        b"\x60" + b"\x00" * 47,                                      # IPv6
        b"\x44" + b"\x00" * 40,                                      # IHL < 5
    ],
)
def test_parse_ipv4_udp_refuses(packet):
    assert stun_transport.parse_ipv4_udp(packet) is None


# -- query against fake servers --------------------------------------------------------


def test_query_echo(fake_server):
    server = fake_server(_echo_mapping)
    port = _free_udp_port()
    assert stun_client.query(server.address, port, timeout=0.5) == ("127.0.0.1", port)


def test_query_ephemeral_port(fake_server):
    server = fake_server(_echo_mapping)
    ip, port = stun_client.query(server.address, None, timeout=0.5)
    assert ip == "127.0.0.1" and port > 0


def test_query_retransmits_until_answered(fake_server):
    def answer_third(data, source):
        return _echo_mapping(data, source) if len(server.received) >= 3 else None

    server = fake_server(answer_third)
    started = time.monotonic()
    assert stun_client.query(server.address, None, timeout=0.05, retries=3)[0] == "127.0.0.1"
    assert len(server.received) == 3
    assert len({stun.transaction_id_of(d) for d in server.received}) == 1  # same transaction
    assert time.monotonic() - started >= 0.05 + 0.1  # waited 50 ms, then 100 ms


def test_query_timeout(fake_server):
    server = fake_server(lambda data, source: None)
    started = time.monotonic()
    with pytest.raises(StunError, match=r"no answer from STUN server 127\.0\.0\.1:\d+ after 3 request"):
        stun_client.query(server.address, None, timeout=0.03, retries=2)
    elapsed = time.monotonic() - started
    assert 0.03 * 7 <= elapsed < 1.0
    assert len(server.received) == 3


def test_query_garbage_is_reported(fake_server):
    server = fake_server(lambda data, source: b"\xff" * 40)
    with pytest.raises(StunError, match="garbage instead: not a STUN message"):
        stun_client.query(server.address, None, timeout=0.03, retries=1)


def test_query_ignores_other_transactions_then_accepts_ours(fake_server):
    def stale_then_right(data, source):
        stale = stun.build_binding_success(bytes(12), ("198.51.100.1", 1))
        server.sock.sendto(stale, source)
        return _echo_mapping(data, source)

    server = fake_server(stale_then_right)
    assert stun_client.query(server.address, None, timeout=0.5)[0] == "127.0.0.1"


def test_query_error_response(fake_server):
    def refuse(data, _source):
        value = b"\x00\x00\x04\x00Bad Request"
        return stun.build_message(
            stun.BINDING_ERROR, stun.transaction_id_of(data), [(stun.ATTR_ERROR_CODE, value)]
        )

    server = fake_server(refuse)
    with pytest.raises(StunError, match="error 400 Bad Request"):
        stun_client.query(server.address, None, timeout=0.5)
    assert len(server.received) == 1  # a definite answer: no retransmission


def test_query_invalid_answer_for_our_transaction(fake_server):
    def no_address(data, _source):
        return stun.build_message(stun.BINDING_SUCCESS, stun.transaction_id_of(data))

    server = fake_server(no_address)
    with pytest.raises(StunError, match="invalid answer .* no \\(XOR-\\)MAPPED-ADDRESS"):
        stun_client.query(server.address, None, timeout=0.5)


def test_query_port_held_without_reuseaddr(fake_server):
    server = fake_server(_echo_mapping)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        with pytest.raises(StunError, match="held by another socket"):
            stun_client.query(server.address, port, local_ip="127.0.0.1", timeout=0.2)


def test_stun_error_is_a_mesh_error():
    assert issubclass(StunError, MeshError)


def test_unresolvable_in_family_is_a_stun_error():
    with pytest.raises(StunError, match="cannot resolve STUN server ::1 to an IPv4 address"):
        stun_client.query(("::1", 3478), None, timeout=0.1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server": ("127.0.0.1", 0), "local_port": None},
        {"server": ("127.0.0.1", 70000), "local_port": None},
        {"server": "127.0.0.1:3478", "local_port": None},
        {"server": ("", 3478), "local_port": None},
        {"server": ("127.0.0.1", 3478), "local_port": -1},
        {"server": ("127.0.0.1", 3478), "local_port": 65536},
        {"server": ("127.0.0.1", 3478), "local_port": None, "local_ip": "nope"},
        {"server": ("127.0.0.1", 3478), "local_port": None, "timeout": 0},
        {"server": ("127.0.0.1", 3478), "local_port": None, "timeout": float("nan")},
        {"server": ("127.0.0.1", 3478), "local_port": None, "retries": -1},
        {"server": ("127.0.0.1", 3478), "local_port": None, "retries": 1.5},
    ],
)
def test_query_rejects_bad_arguments(kwargs):
    with pytest.raises(InvalidInput):
        stun_client.query(**kwargs)


def test_query_raw_rejects_ipv6_and_missing_port():
    with pytest.raises(InvalidInput, match="IPv4 only"):
        stun_client.query_raw(("::1", 3478), 51820, local_ip="::")
    with pytest.raises(InvalidInput):
        stun_client.query_raw(("127.0.0.1", 3478), None)


# -- discover ------------------------------------------------------------------------


def test_discover_cone_open_and_unknown(fake_server):
    a, b = fake_server(_echo_mapping), fake_server(_echo_mapping)
    port = _free_udp_port()
    found = stun_client.discover([a.address, b.address], port, timeout=0.5)
    assert found.endpoint == f"127.0.0.1:{port}"
    assert found.nat_type == "open"
    assert found.local_port == port
    assert set(found.mappings.values()) == {("127.0.0.1", port)}
    assert found.errors == {}

    not_local = stun_client.discover([a.address, b.address], port, timeout=0.5, is_local=lambda ip: False)
    assert not_local.nat_type == "cone"
    single = stun_client.discover([a.address], port, timeout=0.5, is_local=lambda ip: False)
    assert single.nat_type == "unknown"
    assert single.endpoint == f"127.0.0.1:{port}"


def test_discover_symmetric(fake_server):
    a = fake_server(_fixed_mapping(("203.0.113.7", 40000)))
    b = fake_server(_fixed_mapping(("203.0.113.7", 40123)))
    found = stun_client.discover([a.address, b.address], None, timeout=0.5)
    assert found.nat_type == "symmetric"
    assert found.endpoint == "203.0.113.7:40000"  # the first server in the list
    assert found.local_port > 0


def test_discover_partial_failure_and_total_failure(fake_server):
    live = fake_server(_echo_mapping)
    dead = fake_server(lambda data, source: None)
    found = stun_client.discover(
        [dead.address, ("::1", 3478), live.address], None, timeout=0.03, retries=1
    )
    assert found.endpoint is not None and found.endpoint.startswith("127.0.0.1:")
    assert found.nat_type == "open"
    assert set(found.errors) == {f"127.0.0.1:{dead.address[1]}", "[::1]:3478"}
    assert "no answer" in found.errors[f"127.0.0.1:{dead.address[1]}"]

    nothing = stun_client.discover([dead.address], None, timeout=0.03, retries=0)
    assert (nothing.endpoint, nothing.nat_type) == (None, "unknown")
    empty = stun_client.discover([], 51820)
    assert (empty.endpoint, empty.nat_type, empty.local_port) == (None, "unknown", 51820)


def test_discover_sends_one_request_per_server_from_one_port(fake_server):
    seen: list[tuple[str, int]] = []

    def record(data, source):
        seen.append(source)
        return _echo_mapping(data, source)

    servers = [fake_server(record) for _ in range(3)]
    port = _free_udp_port()
    stun_client.discover([s.address for s in servers], port, timeout=0.5)
    assert seen == [("127.0.0.1", port)] * 3


def test_discover_port_held_is_reported_not_raised(fake_server):
    server = fake_server(_echo_mapping)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        found = stun_client.discover([server.address], port, local_ip="127.0.0.1", timeout=0.2)
    assert found.endpoint is None
    assert "held by another socket" in found.errors[f"127.0.0.1:{server.address[1]}"]

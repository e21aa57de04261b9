"""STUN client: learn how the world reaches this node's WireGuard listen port.

Three entry points (docs/stun.md explains when each is used):

* :func:`query` binds a UDP socket to the listen port itself and asks one server. Used
  before wireguard-go / the kernel device holds the port.
* :func:`query_raw` sends from the listen port through a raw socket while the WireGuard
  device holds it (periodic re-check). IPv4 only; needs CAP_NET_RAW.
* :func:`discover` asks several servers from the same port at once and classifies the
  NAT (:func:`aircrew.nat.classify_nat`, a pure function).

The sockets are in ``aircrew.stun_transport``, the STUN messages in ``wire.stun``; this
module runs the transactions (requests, retransmissions, matching answers).

Requests are retransmitted RFC 5389 style: the wait starts at ``timeout`` and doubles
after each transmission; at most ``retries`` retransmissions follow the first request,
so the worst case is ``timeout * (2 ** (retries + 1) - 1)`` seconds. Answers are matched
by transaction id. Bad arguments raise :class:`wire.errors.InvalidInput`; resolution,
socket, timeout and garbage problems raise :class:`StunError`.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from wire import stun
from wire.errors import InvalidInput
from wire.messages import format_endpoint

from .nat import classify_nat, is_local_address
from .stun_transport import (Address, RawTransport, StunError, Transport, UdpTransport,
                             bind_udp, family_of)

__all__ = ["DEFAULT_PORT", "Discovery", "StunError", "discover", "format_server",
           "parse_server", "query", "query_raw"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 3478


@dataclass(frozen=True)
class Discovery:
    """The outcome of :func:`discover`.

    ``endpoint`` is the mapping reported by the first server (in the order given) that
    answered, as ``ip:port`` (``[ip]:port`` for IPv6), or None when none answered.
    ``mappings`` and ``errors`` are keyed by the server as ``host:port``.
    """

    endpoint: str | None
    nat_type: str
    local_port: int
    mappings: dict[str, Address] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


# -- small pure helpers -------------------------------------------------------------


def parse_server(text: str, default_port: int = DEFAULT_PORT) -> Address:
    """``"stun.example:3478"`` -> ``("stun.example", 3478)``.

    Accepts ``host``, ``host:port``, ``ip``, ``[ipv6]``, ``[ipv6]:port`` and a bare IPv6
    address (which then gets the default port).
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("empty STUN server address")
    text = text.strip()
    port_text: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise InvalidInput(f"STUN server {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise InvalidInput(f"STUN server {text!r}: expected ':port' after ']'")
            port_text = rest[1:]
        _check_ipv6_literal(host, text)
    elif text.count(":") > 1:
        host = text
        _check_ipv6_literal(host, text)
    elif ":" in text:
        host, port_text = text.split(":")
    else:
        host = text
    if not host or any(ch.isspace() for ch in host):
        raise InvalidInput(f"STUN server {text!r}: invalid host")
    port = default_port if port_text is None else _parse_port(port_text, text)
    return host, port


def format_server(server: Address) -> str:
    """``("::1", 3478)`` -> ``"[::1]:3478"``; ``("stun.example", 3478)`` -> as is."""
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- public queries -----------------------------------------------------------------


def query(
    server: Address,
    local_port: int | None,
    local_ip: str = "0.0.0.0",
    timeout: float = 1.0,
    retries: int = 3,
) -> Address:
    """The ``(ip, port)`` ``server`` sees for UDP ``local_ip:local_port``.

    The socket is bound with SO_REUSEADDR to ``local_port`` (None: an ephemeral port),
    so the answer is the mapping of that very port. The address family follows
    ``local_ip`` (pass ``"::"`` for IPv6). Fails with StunError when the port is held
    by a socket without SO_REUSEADDR (e.g. wireguard-go): use :func:`query_raw` then.
    """
    _check_timing(timeout, retries)
    _check_port(local_port, allow_none=True)
    family = family_of(local_ip)
    target = _resolve(server, family)
    transaction = _Transaction.create(target, format_server(server))
    with bind_udp(family, local_ip, local_port) as sock:
        _exchange(UdpTransport(sock), [transaction], timeout, retries)
    return transaction.outcome()


def query_raw(
    server: Address,
    local_port: int,
    local_ip: str = "0.0.0.0",
    timeout: float = 1.0,
    retries: int = 3,
) -> Address:
    """Like :func:`query`, but works while another socket holds ``local_port``.

    The request leaves through a raw IPPROTO_UDP socket with a UDP header built here
    (source port ``local_port``; the kernel adds the IP header and applies NAT as for
    any packet of that flow), and the answer is picked from the copies of incoming UDP
    datagrams a raw socket receives, filtered on the server's address and port, the
    destination port and the transaction id. IPv4 only; needs CAP_NET_RAW.
    """
    _check_timing(timeout, retries)
    _check_port(local_port, allow_none=False)
    if family_of(local_ip) != socket.AF_INET:
        raise InvalidInput("query_raw supports IPv4 only")
    target = _resolve(server, socket.AF_INET)
    transaction = _Transaction.create(target, format_server(server))
    with RawTransport(local_ip, local_port, {target}) as transport:
        _exchange(transport, [transaction], timeout, retries)
    return transaction.outcome()


def discover(
    servers: Sequence[Address],
    local_port: int | None,
    local_ip: str = "0.0.0.0",
    timeout: float = 1.0,
    retries: int = 3,
    *,
    raw: bool = False,
    is_local: Callable[[str], bool] = is_local_address,
) -> Discovery:
    """Ask every server, in parallel from the same local port, and classify the NAT.

    ``raw=True`` uses the raw-socket path of :func:`query_raw` (IPv4, CAP_NET_RAW), for
    re-checks while the WireGuard device holds the port. Never raises StunError: the
    failures are in ``Discovery.errors``.
    """
    _check_timing(timeout, retries)
    _check_port(local_port, allow_none=not raw)
    family = family_of(local_ip)
    if raw and family != socket.AF_INET:
        raise InvalidInput("raw discovery supports IPv4 only")
    errors: dict[str, str] = {}
    transactions: list[_Transaction] = []
    for server in servers:
        label = format_server(server)
        try:
            transactions.append(_Transaction.create(_resolve(server, family), label))
        except StunError as exc:
            errors[label] = str(exc)
    port_used = local_port or 0
    if transactions:
        try:
            if raw:
                targets = {t.server for t in transactions}
                with RawTransport(local_ip, port_used, targets) as transport:
                    _exchange(transport, transactions, timeout, retries)
            else:
                with bind_udp(family, local_ip, local_port) as sock:
                    port_used = sock.getsockname()[1]
                    _exchange(UdpTransport(sock), transactions, timeout, retries)
        except StunError as exc:
            for transaction in transactions:
                transaction.fail(str(exc))
    mappings: dict[str, Address] = {}
    answered: list[Address] = []
    for transaction in transactions:
        if transaction.result is not None:
            mappings[transaction.label] = transaction.result
            answered.append(transaction.result)
        else:
            errors[transaction.label] = transaction.error or "no answer"
    nat_type = classify_nat(answered, port_used, is_local)
    endpoint = format_endpoint(*answered[0]) if answered else None
    log.info(
        "STUN discovery from port %s: endpoint %s, NAT %s (%d of %d servers answered)",
        port_used, endpoint, nat_type, len(answered), len(servers),
    )
    for label, message in errors.items():
        log.warning("STUN server %s: %s", label, message)
    return Discovery(endpoint, nat_type, port_used, mappings, errors)


# -- transactions -------------------------------------------------------------------


@dataclass
class _Transaction:
    server: Address  # resolved (ip, port)
    label: str
    transaction_id: bytes
    request: bytes
    sent: int = 0
    result: Address | None = None
    error: str | None = None
    last_invalid: str | None = None

    @classmethod
    def create(cls, server: Address, label: str) -> _Transaction:
        transaction_id = stun.new_transaction_id()
        return cls(server, label, transaction_id, stun.build_binding_request(transaction_id))

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def fail(self, message: str) -> None:
        if not self.done:
            self.error = message

    def outcome(self) -> Address:
        if self.result is None:
            raise StunError(self.error or f"no answer from STUN server {self.label}")
        return self.result


def _exchange(
    transport: Transport, transactions: list[_Transaction], timeout: float, retries: int
) -> None:
    """Run all transactions to completion (answer, error or timeout) over one transport."""
    by_id = {t.transaction_id: t for t in transactions}
    started = time.monotonic()
    wait = timeout
    for _attempt in range(retries + 1):
        open_now = [t for t in transactions if not t.done]
        if not open_now:
            break
        for transaction in open_now:
            try:
                transport.send(transaction.request, transaction.server)
                transaction.sent += 1
            except OSError as exc:
                transaction.fail(f"cannot send to {transaction.label}: {exc.strerror or exc}")
        deadline = time.monotonic() + wait
        while not all(t.done for t in transactions):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                received = transport.receive(remaining)
            except OSError as exc:
                raise StunError(f"STUN receive failed: {exc.strerror or exc}") from exc
            if received is not None:
                _handle_datagram(by_id, transactions, *received)
        wait *= 2
    elapsed = time.monotonic() - started
    for transaction in transactions:
        if not transaction.done:
            message = (
                f"no answer from STUN server {transaction.label} "
                f"after {transaction.sent} request(s) in {elapsed:.1f}s"
            )
            if transaction.last_invalid:
                message += f"; it sent garbage instead: {transaction.last_invalid}"
            transaction.fail(message)


def _handle_datagram(
    by_id: dict[bytes, _Transaction],
    transactions: Iterable[_Transaction],
    data: bytes,
    source: Address,
) -> None:
    transaction = by_id.get(data[8:20]) if len(data) >= stun.HEADER_LENGTH else None
    if transaction is None or transaction.done:
        reason = _describe_unmatched(data)
        log.debug("ignoring a datagram from %s: %s", format_server(source), reason)
        for candidate in transactions:
            if candidate.server == source and not candidate.done:
                candidate.last_invalid = reason
        return
    if source != transaction.server:
        log.debug("STUN answer for %s came from %s", transaction.label, format_server(source))
    try:
        transaction.result = stun.parse_binding_response(data, transaction.transaction_id)
    except InvalidInput as exc:
        transaction.fail(f"invalid answer from STUN server {transaction.label}: {exc}")


def _describe_unmatched(data: bytes) -> str:
    try:
        stun.parse_message(data)
    except InvalidInput as exc:
        return str(exc)
    return "a STUN message for another transaction"


# -- argument checks ----------------------------------------------------------------


def _resolve(server: Address, family: int) -> Address:
    host, port = _check_server(server)
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    except (OSError, UnicodeError) as exc:
        kind = "IPv4" if family == socket.AF_INET else "IPv6"
        raise StunError(f"cannot resolve STUN server {host} to an {kind} address: {exc}") from exc
    sockaddr = infos[0][4]
    return str(sockaddr[0]), int(sockaddr[1])


def _check_server(server: object) -> Address:
    if not (isinstance(server, tuple) and len(server) == 2 and isinstance(server[0], str)):
        raise InvalidInput(f"a STUN server is a (host, port) tuple, not {server!r}")
    host, port = server
    if not host:
        raise InvalidInput("empty STUN server host")
    _check_port(port, allow_none=False)
    return host, port


def _check_port(port: object, *, allow_none: bool) -> None:
    """A UDP port 1..65535; with ``allow_none``, None or 0 (an ephemeral port) too."""
    if allow_none and (port is None or (type(port) is int and port == 0)):
        return
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidInput(f"invalid UDP port {port!r}")


def _check_timing(timeout: float, retries: int) -> None:
    if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise InvalidInput(f"STUN timeout must be a positive number of seconds, not {timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
        raise InvalidInput(f"STUN retries must be an integer from 0 to 10, not {retries!r}")


def _parse_port(text: str, original: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise InvalidInput(f"STUN server {original!r}: invalid port {text!r}")
    return int(text)


def _check_ipv6_literal(host: str, original: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise InvalidInput(f"STUN server {original!r}: {host!r} is not an IPv6 address") from None

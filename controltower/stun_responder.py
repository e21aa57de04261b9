"""A small UDP STUN responder: answers Binding Requests with the observed source address.

It runs in one daemon thread. Anything that is not a well-formed RFC 5389 Binding
Request is dropped silently (logged at debug level); no packet can stop the loop.
Deliberately minimal (see docs/stun.md): no RFC 3489 (cookie-less) clients, no
CHANGE-REQUEST / RFC 5780 behaviour discovery, no authentication, and no SOFTWARE
attribute unless asked for (it only enlarges answers and tells scanners our version).
"""
from __future__ import annotations

import ipaddress
import logging
import selectors
import socket
import threading

from wire import stun
from wire.errors import InvalidInput

log = logging.getLogger(__name__)

MAX_DATAGRAM = 65535


class StunResponder:
    """``StunResponder("0.0.0.0", 3478).start()``; port 0 binds an ephemeral port."""

    def __init__(self, host: str = "0.0.0.0", port: int = 3478, *, software: str | None = None) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidInput(f"invalid STUN port {port!r}")
        if software is not None:
            stun.build_binding_success(bytes(12), ("127.0.0.1", 1), software=software)  # validates
        self.host = host
        self.port = port
        self.software = software
        self._sock: socket.socket | None = None
        self._wake_read: socket.socket | None = None
        self._wake_write: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.answered = 0
        self.dropped = 0

    @property
    def bound_port(self) -> int:
        """The UDP port actually bound (useful with port 0); 0 before start()."""
        return self._sock.getsockname()[1] if self._sock is not None else 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind the socket (errors raise here, in the caller) and start the thread."""
        if self._thread is not None:
            raise RuntimeError("StunResponder already started")
        self._sock = self._bind()
        self._wake_read, self._wake_write = socket.socketpair()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="stun-responder", daemon=True)
        self._thread.start()
        log.info("STUN responder listening on udp %s port %d", self.host, self.bound_port)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close the socket. Safe to call twice or before start()."""
        thread = self._thread
        if thread is not None:
            self._stopping.set()
            if self._wake_write is not None:
                try:
                    self._wake_write.send(b"x")
                except OSError:
                    pass
            thread.join(timeout)
            if thread.is_alive():
                log.warning("STUN responder thread did not stop within %.1fs", timeout)
        for sock in (self._sock, self._wake_read, self._wake_write):
            if sock is not None:
                sock.close()
        self._sock = self._wake_read = self._wake_write = None
        self._thread = None

    def __enter__(self) -> StunResponder:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------

    def _bind(self) -> socket.socket:
        infos = socket.getaddrinfo(
            self.host, self.port, socket.AF_UNSPEC, socket.SOCK_DGRAM, 0, socket.AI_PASSIVE
        )
        family, _type, _proto, _name, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(sockaddr)
        except OSError:
            sock.close()
            raise
        return sock

    def _serve(self) -> None:
        sock, wake = self._sock, self._wake_read
        if sock is None or wake is None:
            return
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not self._stopping.is_set():
                try:
                    ready = [key.fileobj for key, _ in selector.select()]
                    if wake in ready or self._stopping.is_set():
                        break
                    data, source = sock.recvfrom(MAX_DATAGRAM)
                    self._answer(sock, data, source)
                except Exception:  # noqa: BLE001 - the responder must outlive any packet
                    if self._stopping.is_set():
                        break
                    log.exception("STUN responder: unexpected error, continuing")
        log.debug("STUN responder thread exits")

    def _answer(self, sock: socket.socket, data: bytes, source: tuple) -> None:
        peer = _observed_address(source)
        try:
            message = stun.parse_message(data)
        except InvalidInput as exc:
            self.dropped += 1
            log.debug("dropping %d bytes from %s: %s", len(data), peer, exc)
            return
        if message.message_type != stun.BINDING_REQUEST:
            self.dropped += 1
            log.debug("dropping STUN type %#06x from %s", message.message_type, peer)
            return
        reply = stun.build_binding_success(message.transaction_id, peer, software=self.software)
        try:
            sock.sendto(reply, source)
        except OSError as exc:
            log.debug("cannot answer %s: %s", peer, exc)
            return
        self.answered += 1


def _observed_address(source: tuple) -> tuple[str, int]:
    """The client's (ip, port); IPv4-mapped IPv6 sources (``::ffff:a.b.c.d``) as IPv4."""
    ip, port = source[0], source[1]
    parsed = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped), port
    return str(parsed), port

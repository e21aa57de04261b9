"""Reachability probes that run inside a lab host (through ``Host.worker()``): TCP
listeners, one connection attempt, and a watch that times when a connection's outcome
flips (CLOCK_MONOTONIC is one clock for every namespace of the machine, so the test
compares it with its own)."""
from __future__ import annotations

import errno
import socket
import threading
import time

OPEN, REFUSED, RESET, FILTERED, SILENT = "open", "refused", "reset", "filtered", "silent"


class Listeners:
    """TCP servers on ``ports`` (every address) that accept and close; stop() ends them."""

    def __init__(self, ports: list[int]) -> None:
        self.socks = []
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", port))
            sock.listen(64)
            self.socks.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    @staticmethod
    def _serve(sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    def stop(self) -> None:
        for sock in self.socks:
            sock.close()


def tcp(address: str, port: int, timeout: float = 1.0) -> str:
    """open (connected), refused (a reset answered the SYN), reset (connected, then cut: the
    SYN got in under rules that a change revoked before the ACK), filtered (an ICMP error),
    silent (no answer)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return OPEN
    except ConnectionRefusedError:
        return REFUSED
    except ConnectionResetError:
        return RESET
    except socket.timeout:
        return SILENT
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM):
            return FILTERED
        raise


class Prober:
    def tcp(self, address: str, port: int, timeout: float = 1.0) -> str:
        return tcp(address, port, timeout)

    def now(self) -> float:
        return time.monotonic()

    def watch(self, address: str, port: int, want: str, timeout: float = 10.0,
              settle: float = 1.0, interval: float = 0.01) -> dict:
        """Try every ``interval`` until the outcome is ``want``; then keep trying for
        ``settle`` seconds. Returns when it first was (monotonic, None: never) and every
        other outcome seen after that (a stale allow would be one)."""
        deadline = time.monotonic() + timeout
        flipped = None
        after: list[str] = []
        while time.monotonic() < deadline:
            outcome = tcp(address, port, timeout=0.5)
            now = time.monotonic()
            if flipped is None and outcome == want:
                flipped = now
                deadline = now + settle
            elif flipped is not None and outcome != want:
                after.append(outcome)
            time.sleep(interval)
        return {"at": flipped, "after": after}

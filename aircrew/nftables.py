"""Running nft text as one transaction: libnftables through ctypes (in process: 0.2 ms for
a set-element change at 1,000-10,000 elements) or the ``nft -f -`` command (a process per
transaction: ~16 ms). Either applies the whole text or, on any error, none of it."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import subprocess
import threading
from typing import Protocol

log = logging.getLogger(__name__)

MAX_ERROR = 400           # characters of nft's error kept


class NftError(Exception):
    """nft refused a transaction (nothing of it was applied)."""


class Nft(Protocol):
    def run(self, text: str) -> None:
        """Apply ``text`` as one transaction; NftError when nft refuses it."""

    def list_table(self, family: str, name: str) -> str:
        """``nft -j list table`` output ('' when the table is not there)."""


class LibNftables:
    """libnftables (``libnftables.so.1``) in process, one context, serialised."""

    def __init__(self, path: str | None = None) -> None:
        found = path or ctypes.util.find_library("nftables") or "libnftables.so.1"
        lib = ctypes.CDLL(found)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_int
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        self._lib = lib
        self._ctx = lib.nft_ctx_new(0)
        if not self._ctx:
            raise OSError("libnftables: no context")
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)
        self._lock = threading.Lock()

    def _cmd(self, text: str) -> tuple[int, str, str]:
        with self._lock:
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, text.encode())
            out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode(errors="replace")
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace")
        return rc, out, err

    def run(self, text: str) -> None:
        rc, _, err = self._cmd(text)
        if rc != 0:
            raise NftError(err.strip()[:MAX_ERROR] or f"nft failed ({rc})")

    def list_table(self, family: str, name: str) -> str:
        with self._lock:
            self._lib.nft_ctx_output_set_flags(self._ctx, 1 << 4)       # NFT_CTX_OUTPUT_JSON
            try:
                rc = self._lib.nft_run_cmd_from_buffer(
                    self._ctx, f"list table {family} {name}".encode())
                out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
                self._lib.nft_ctx_get_error_buffer(self._ctx)
            finally:
                self._lib.nft_ctx_output_set_flags(self._ctx, 0)
        return out if rc == 0 else ""


class NftCommand:
    """The ``nft`` program (``command``: its path), one process per transaction."""

    def __init__(self, command: str = "nft", timeout: float = 30.0) -> None:
        self.command = command
        self.timeout = timeout

    def run(self, text: str) -> None:
        try:
            done = subprocess.run([self.command, "-f", "-"], input=text, capture_output=True,
                                  text=True, timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NftError(f"cannot run {self.command}: {exc}") from None
        if done.returncode != 0:
            raise NftError(done.stderr.strip()[:MAX_ERROR] or f"nft exited {done.returncode}")

    def list_table(self, family: str, name: str) -> str:
        try:
            done = subprocess.run([self.command, "-j", "list", "table", family, name],
                                  capture_output=True, text=True, timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout if done.returncode == 0 else ""


class AutoNft:
    """libnftables, loaded at the first transaction (a zone without a policy never
    loads it: +2 MB), or the ``nft`` command where the library is missing."""

    def __init__(self) -> None:
        self._impl: Nft | None = None

    def _nft(self) -> Nft:
        if self._impl is None:
            try:
                self._impl = LibNftables()
            except (OSError, AttributeError) as exc:
                log.info("libnftables unavailable (%s): using the nft command", exc)
                self._impl = NftCommand()
        return self._impl

    def run(self, text: str) -> None:
        self._nft().run(text)

    def list_table(self, family: str, name: str) -> str:
        return self._nft().list_table(family, name)


def open_nft(command: str | None = None) -> Nft:
    """``command`` given: that program; else libnftables (or ``nft`` when it is missing)."""
    return NftCommand(command) if command else AutoNft()

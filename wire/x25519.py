"""X25519 (RFC 7748) through OpenSSL's libcrypto: the copy Python's own hashlib loaded.

Constant-time and vetted like any OpenSSL primitive, and it costs the agent nothing: the
library is already mapped, while the ``cryptography`` package adds about 8 MB resident.
Needs OpenSSL 1.1.1 or later (raw X25519 keys in the EVP API).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

from .errors import InvalidInput

NID_X25519 = 1034
KEY_SIZE = 32


class X25519Error(InvalidInput, ValueError):
    """OpenSSL refused a key or an exchange (for instance a low-order public point)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        _lib.ERR_clear_error()    # leave no stale error for Python's ssl module to find


def _load() -> ctypes.CDLL:
    __import__("_hashlib")        # maps the libcrypto Python itself was built with
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "/libcrypto" in line:
                return ctypes.CDLL(line.split()[-1])
    found = ctypes.util.find_library("crypto")
    if found is None:
        raise ImportError("OpenSSL's libcrypto is not available")
    return ctypes.CDLL(found)


_lib = _load()
_p, _size = ctypes.c_void_p, ctypes.c_size_t
for _name, _restype, _argtypes in (
        ("EVP_PKEY_new_raw_private_key", _p, (ctypes.c_int, _p, ctypes.c_char_p, _size)),
        ("EVP_PKEY_new_raw_public_key", _p, (ctypes.c_int, _p, ctypes.c_char_p, _size)),
        ("EVP_PKEY_get_raw_public_key", ctypes.c_int, (_p, ctypes.c_char_p, ctypes.POINTER(_size))),
        ("EVP_PKEY_free", None, (_p,)),
        ("EVP_PKEY_CTX_new", _p, (_p, _p)),
        ("EVP_PKEY_CTX_free", None, (_p,)),
        ("EVP_PKEY_derive_init", ctypes.c_int, (_p,)),
        ("EVP_PKEY_derive_set_peer", ctypes.c_int, (_p, _p)),
        ("EVP_PKEY_derive", ctypes.c_int, (_p, ctypes.c_char_p, ctypes.POINTER(_size))),
        ("ERR_clear_error", None, ())):
    _function = getattr(_lib, _name)
    _function.restype, _function.argtypes = _restype, _argtypes


def generate_private_key() -> bytes:
    """32 random bytes, clamped as ``wg genkey`` does."""
    key = bytearray(os.urandom(KEY_SIZE))
    key[0] &= 248
    key[31] = (key[31] & 127) | 64
    return bytes(key)


def _pkey(raw: bytes, private: bool) -> int:
    if len(raw) != KEY_SIZE:
        raise X25519Error("an X25519 key is 32 bytes")
    new = _lib.EVP_PKEY_new_raw_private_key if private else _lib.EVP_PKEY_new_raw_public_key
    pkey = new(NID_X25519, None, raw, KEY_SIZE)
    if not pkey:
        raise X25519Error("OpenSSL refused the key")
    return pkey


def public_key(private: bytes) -> bytes:
    pkey = _pkey(private, True)
    try:
        out = ctypes.create_string_buffer(KEY_SIZE)
        size = _size(KEY_SIZE)
        if _lib.EVP_PKEY_get_raw_public_key(pkey, out, ctypes.byref(size)) != 1:
            raise X25519Error("OpenSSL could not derive the public key")
        return out.raw[:size.value]
    finally:
        _lib.EVP_PKEY_free(pkey)


def exchange(private: bytes, public: bytes) -> bytes:
    """The shared secret; X25519Error for a low-order point (an all-zero result)."""
    own = _pkey(private, True)
    try:
        peer = _pkey(public, False)
        try:
            return _derive(own, peer)
        finally:
            _lib.EVP_PKEY_free(peer)
    finally:
        _lib.EVP_PKEY_free(own)


def _derive(own: int, peer: int) -> bytes:
    ctx = _lib.EVP_PKEY_CTX_new(own, None)
    if not ctx:
        raise X25519Error("OpenSSL could not start the exchange")
    try:
        out = ctypes.create_string_buffer(KEY_SIZE)
        size = _size(KEY_SIZE)
        if (_lib.EVP_PKEY_derive_init(ctx) != 1 or _lib.EVP_PKEY_derive_set_peer(ctx, peer) != 1
                or _lib.EVP_PKEY_derive(ctx, out, ctypes.byref(size)) != 1):
            raise X25519Error("the exchange failed (a low-order public key?)")
        return out.raw[:size.value]
    finally:
        _lib.EVP_PKEY_CTX_free(ctx)

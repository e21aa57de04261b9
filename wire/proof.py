"""Proof of possession of a WireGuard private key.

WireGuard keys are X25519. The tower publishes its own X25519 public key; a node MACs
each request with a key derived from X25519(node private, tower public); the tower
checks it with X25519(tower private, node public). Only the holder of the node's
private key (or the tower) can produce a valid MAC for that public key.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac

from . import x25519
from .errors import InvalidInput

_CONTEXT = b"apex-mesh request mac v1"


def decode_key(text: str, what: str = "key") -> bytes:
    """Decode a base64 WireGuard key (32 bytes) or raise InvalidInput."""
    if not isinstance(text, str) or len(text) != 44 or not text.endswith("="):
        raise InvalidInput(f"{what} is not a WireGuard key (44 base64 characters)")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what} is not valid base64") from None
    if len(raw) != 32:
        raise InvalidInput(f"{what} does not decode to 32 bytes")
    return raw


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def decode_private_key(text: str, what: str = "private key") -> bytes:
    """A private key: as ``decode_key``, and not all zero (WireGuard reads a zero private
    key as "no key": the device would have none, and every node derived from it the same)."""
    raw = decode_key(text, what)
    if not any(raw):
        raise InvalidInput(f"{what} is all zero: make a new one with `aircrew keygen`")
    return raw


def generate_private_key() -> str:
    return encode_key(x25519.generate_private_key())


def public_key_of(private_key: str) -> str:
    return encode_key(x25519.public_key(decode_private_key(private_key)))


@functools.lru_cache(maxsize=16384)
def mac_key(own_private: str, other_public: str) -> bytes:
    """The symmetric MAC key shared by a node and the tower (kept: a node signs every
    request with the same one, and an X25519 exchange costs ~0.1 ms)."""
    private = decode_key(own_private, "private key")
    public = decode_key(other_public, "public key")
    try:
        shared = x25519.exchange(private, public)
    except x25519.X25519Error:  # low-order point: the exchange yields all zeros
        raise InvalidInput("public key is not a usable X25519 point") from None
    return hashlib.sha256(_CONTEXT + shared).digest()


def sign(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def verify(key: bytes, payload: bytes, mac: str) -> bool:
    if not isinstance(mac, str) or not mac.isascii():
        return False
    return hmac.compare_digest(sign(key, payload), mac)

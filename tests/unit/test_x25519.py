"""wire.x25519 (OpenSSL through ctypes) against RFC 7748 and the cryptography package."""
from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from wire import proof, x25519
from wire.errors import InvalidInput

# RFC 7748, section 6.1
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIVATE = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")

RAW = serialization.Encoding.Raw


def test_rfc7748_vectors():
    assert x25519.public_key(ALICE_PRIVATE) == ALICE_PUBLIC
    assert x25519.public_key(BOB_PRIVATE) == BOB_PUBLIC
    assert x25519.exchange(ALICE_PRIVATE, BOB_PUBLIC) == SHARED
    assert x25519.exchange(BOB_PRIVATE, ALICE_PUBLIC) == SHARED


def test_agrees_with_cryptography_on_random_keys():
    for _ in range(100):
        own, other = os.urandom(32), os.urandom(32)
        theirs = X25519PrivateKey.from_private_bytes(own)
        other_public = X25519PrivateKey.from_private_bytes(other).public_key()
        assert x25519.public_key(own) == theirs.public_key().public_bytes(
            RAW, serialization.PublicFormat.Raw)
        assert x25519.exchange(own, other_public.public_bytes(
            RAW, serialization.PublicFormat.Raw)) == theirs.exchange(other_public)


def test_generated_keys_are_clamped_and_distinct():
    keys = {x25519.generate_private_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert len(key) == 32 and key[0] & 7 == 0 and key[31] & 0x80 == 0 and key[31] & 0x40


@pytest.mark.parametrize("point", [
    bytes(32),                                     # 0
    (1).to_bytes(32, "little"),                    # 1
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
], ids=["zero", "one", "order-8", "order-8-other"])
def test_low_order_points_are_refused(point):
    with pytest.raises(x25519.X25519Error):
        x25519.exchange(ALICE_PRIVATE, point)
    assert x25519._lib.ERR_peek_error() == 0      # nothing left for Python's ssl to find
    assert x25519.exchange(ALICE_PRIVATE, BOB_PUBLIC) == SHARED
    with pytest.raises(ValueError):                # cryptography refuses the same points
        X25519PrivateKey.from_private_bytes(ALICE_PRIVATE).exchange(
            X25519PublicKey.from_public_bytes(point))


@pytest.mark.parametrize("size", [0, 31, 33])
def test_wrong_key_sizes_are_refused(size):
    with pytest.raises(x25519.X25519Error, match="32 bytes"):
        x25519.public_key(bytes(size))
    with pytest.raises(x25519.X25519Error, match="32 bytes"):
        x25519.exchange(ALICE_PRIVATE, bytes(size))


def test_proof_mac_key_is_symmetric_and_refuses_low_order_points():
    node, tower = proof.generate_private_key(), proof.generate_private_key()
    assert (proof.mac_key(node, proof.public_key_of(tower))
            == proof.mac_key(tower, proof.public_key_of(node)))
    with pytest.raises(InvalidInput, match="not a usable X25519 point"):
        proof.mac_key(node, proof.encode_key(bytes(32)))

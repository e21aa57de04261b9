"""WireGuard-shaped messages with real mac1 values, for relay tests and ``bench relaymem``
(no Noise: mac1 needs public keys only)."""
from __future__ import annotations

import hashlib
import os
import struct

from wire import relaymsg as rm


def initiation(sender: bytes, responder_pub: bytes) -> bytes:
    body = bytes([1, 0, 0, 0]) + sender + os.urandom(108)
    mac1 = hashlib.blake2s(body, key=rm.mac1_key(responder_pub), digest_size=16).digest()
    return body + mac1 + bytes(16)


def response(sender: bytes, receiver: bytes, initiator_pub: bytes) -> bytes:
    body = bytes([2, 0, 0, 0]) + sender + receiver + os.urandom(48)
    mac1 = hashlib.blake2s(body, key=rm.mac1_key(initiator_pub), digest_size=16).digest()
    return body + mac1 + bytes(16)


def cookie(receiver: bytes) -> bytes:
    return bytes([3, 0, 0, 0]) + receiver + os.urandom(56)


def transport(receiver: bytes, size: int = 64) -> bytes:
    return bytes([4, 0, 0, 0]) + receiver + struct.pack("<Q", 1) + os.urandom(size - 16)

"""Datagrams of the relay and the path probes, and the WireGuard header facts the relay
reads (pure: bytes in, values out; no I/O).

Our datagrams start with ``MAGIC`` (``ff 41 58 01``): never a WireGuard message (byte 0
is its type 1-4 and bytes 1-3 are zero) nor STUN (the first two bits of STUN are zero),
so they can share the WireGuard port. Every layout is fixed; a MAC is HMAC-SHA256 cut
to 16 bytes over everything before it.

    bind          node -> relay   txid(8) ts_ms(8) key(32) zone_len(1) zone mac(16)
    bind-ok       relay -> node   txid(8) address boot(8) mac(16)
    bind-refused  relay -> node   txid(8) code(1)
    probe         node -> node    txid(8) from(32) to(32) claim(1) mac(16)
    probe-ack     node -> node    txid(8) from(32) to(32) address claim(1) mac(16)

``address`` is family(1: 4 or 6) ip(4 or 16) port(2). The bind MAC key comes from
X25519(node, relay); the probe MAC key from X25519(node, peer) (both ends compute it).
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass
from typing import Union

from .errors import InvalidInput

MAGIC = b"\xffAX\x01"
MAC_LEN = 16
TXID_LEN = 8
KEY_LEN = 32
MAX_ZONE = 63

BIND, BIND_OK, BIND_REFUSED, PROBE, PROBE_ACK = 0x01, 0x02, 0x03, 0x10, 0x11

# bind-refused codes
REFUSALS = {1: "forged", 2: "expired", 3: "foreign", 4: "limit", 5: "unknown-zone"}
REFUSAL_CODES = {name: code for code, name in REFUSALS.items()}

# claims a probe carries: the sender's current path towards the receiver
CLAIMS = {0: None, 1: "direct", 2: "relayed"}
CLAIM_CODES = {name: code for code, name in CLAIMS.items()}

# WireGuard message types and sizes (the whitepaper, section 5.4)
WG_INITIATION, WG_RESPONSE, WG_COOKIE, WG_TRANSPORT = 1, 2, 3, 4
WG_SIZES = {WG_INITIATION: 148, WG_RESPONSE: 92, WG_COOKIE: 64}
WG_TRANSPORT_MIN = 32            # header 16 + the empty payload's 16-byte tag
_MAC1_OFFSET = {WG_INITIATION: 116, WG_RESPONSE: 60}
_LABEL_MAC1 = b"mac1----"

Address = tuple[str, int]


# -- WireGuard headers ----------------------------------------------------------------

def wg_type(data: bytes) -> int | None:
    """The WireGuard message type of a datagram, or None if it cannot be one."""
    if len(data) < 4 or data[1:4] != b"\0\0\0":
        return None
    kind = data[0]
    if kind in WG_SIZES:
        return kind if len(data) == WG_SIZES[kind] else None
    if kind == WG_TRANSPORT:
        return kind if len(data) >= WG_TRANSPORT_MIN and len(data) % 16 == 0 else None
    return None


def sender_index(data: bytes) -> bytes:
    """Initiation and response: the sender's index (4 bytes, as on the wire)."""
    return bytes(data[4:8])


def receiver_index(data: bytes) -> bytes:
    """Response: bytes 8-11; cookie reply and transport: bytes 4-7."""
    return bytes(data[8:12]) if data[0] == WG_RESPONSE else bytes(data[4:8])


def mac1_key(public_key: bytes) -> bytes:
    """The key of ``mac1`` for messages *to* the holder of ``public_key``."""
    return hashlib.blake2s(_LABEL_MAC1 + public_key).digest()


def mac1_valid(data: bytes, key: bytes) -> bool:
    """True when an initiation's or response's mac1 was made with ``key`` (mac1_key)."""
    offset = _MAC1_OFFSET[data[0]]
    expected = hashlib.blake2s(data[:offset], key=key, digest_size=16).digest()
    return hmac.compare_digest(expected, data[offset:offset + 16])


# -- our datagrams ----------------------------------------------------------------------

@dataclass(frozen=True)
class Bind:
    txid: bytes
    ts_ms: int
    key: bytes
    zone: str


@dataclass(frozen=True)
class BindOk:
    txid: bytes
    address: Address
    boot: bytes


@dataclass(frozen=True)
class BindRefused:
    txid: bytes
    reason: str


@dataclass(frozen=True)
class Probe:
    txid: bytes
    sender: bytes
    receiver: bytes
    claim: str | None


@dataclass(frozen=True)
class ProbeAck:
    txid: bytes
    sender: bytes
    receiver: bytes
    address: Address       # where the acknowledged probe came from, as the acker saw it
    claim: str | None


Message = Union[Bind, BindOk, BindRefused, Probe, ProbeAck]


def message_type(data: bytes) -> int | None:
    return data[4] if len(data) > 4 and data[:4] == MAGIC else None


def sign(key: bytes, body: bytes) -> bytes:
    return body + hmac.new(key, body, hashlib.sha256).digest()[:MAC_LEN]


def mac_valid(key: bytes, data: bytes) -> bool:
    if len(data) < MAC_LEN:
        return False
    expected = hmac.new(key, data[:-MAC_LEN], hashlib.sha256).digest()[:MAC_LEN]
    return hmac.compare_digest(expected, data[-MAC_LEN:])


def encode_address(address: Address) -> bytes:
    ip = ipaddress.ip_address(address[0])
    if not 0 <= address[1] <= 0xFFFF:
        raise InvalidInput(f"port {address[1]} out of range")
    return bytes([ip.version]) + ip.packed + struct.pack("!H", address[1])


def _decode_address(data: bytes, at: int) -> tuple[Address, int]:
    if at >= len(data) or data[at] not in (4, 6):
        raise InvalidInput("bad address family")
    size = 4 if data[at] == 4 else 16
    end = at + 1 + size + 2
    if end > len(data):
        raise InvalidInput("address truncated")
    ip = ipaddress.ip_address(bytes(data[at + 1:at + 1 + size]))
    (port,) = struct.unpack_from("!H", data, at + 1 + size)
    return (str(ip), port), end


def encode_bind(mac_key: bytes, bind: Bind) -> bytes:
    zone = bind.zone.encode()
    if len(bind.txid) != TXID_LEN or len(bind.key) != KEY_LEN or not 0 < len(zone) <= MAX_ZONE:
        raise InvalidInput("bind fields out of range")
    body = (MAGIC + bytes([BIND]) + bind.txid + struct.pack("!Q", bind.ts_ms) + bind.key
            + bytes([len(zone)]) + zone)
    return sign(mac_key, body)


def encode_bind_ok(mac_key: bytes, ok: BindOk) -> bytes:
    return sign(mac_key, MAGIC + bytes([BIND_OK]) + ok.txid + encode_address(ok.address)
                + ok.boot)


def encode_bind_refused(refused: BindRefused) -> bytes:
    return MAGIC + bytes([BIND_REFUSED]) + refused.txid + bytes([REFUSAL_CODES[refused.reason]])


def encode_probe(mac_key: bytes, probe: Probe) -> bytes:
    return sign(mac_key, MAGIC + bytes([PROBE]) + probe.txid + probe.sender + probe.receiver
                + bytes([CLAIM_CODES[probe.claim]]))


def encode_probe_ack(mac_key: bytes, ack: ProbeAck) -> bytes:
    return sign(mac_key, MAGIC + bytes([PROBE_ACK]) + ack.txid + ack.sender + ack.receiver
                + encode_address(ack.address) + bytes([CLAIM_CODES[ack.claim]]))


def decode(data: bytes) -> Message:
    """Parse one of our datagrams (the MAC is checked by the caller, which knows the key).
    Raises InvalidInput on anything malformed."""
    kind = message_type(data)
    if kind is None:
        raise InvalidInput("not a relay or probe datagram")
    at = 5
    txid = bytes(data[at:at + TXID_LEN])
    at += TXID_LEN
    if len(txid) != TXID_LEN:
        raise InvalidInput("truncated")
    if kind == BIND:
        if len(data) < at + 8 + KEY_LEN + 1 + MAC_LEN:
            raise InvalidInput("bind truncated")
        (ts_ms,) = struct.unpack_from("!Q", data, at)
        key = bytes(data[at + 8:at + 8 + KEY_LEN])
        size = data[at + 8 + KEY_LEN]
        start = at + 8 + KEY_LEN + 1
        if not 0 < size <= MAX_ZONE or len(data) != start + size + MAC_LEN:
            raise InvalidInput("bind zone malformed")
        try:
            zone = bytes(data[start:start + size]).decode("ascii")
        except UnicodeDecodeError:
            raise InvalidInput("bind zone is not ASCII") from None
        return Bind(txid, ts_ms, key, zone)
    if kind == BIND_OK:
        address, at = _decode_address(data, at)
        if len(data) != at + 8 + MAC_LEN:
            raise InvalidInput("bind-ok malformed")
        return BindOk(txid, address, bytes(data[at:at + 8]))
    if kind == BIND_REFUSED:
        if len(data) != at + 1 or data[at] not in REFUSALS:
            raise InvalidInput("bind-refused malformed")
        return BindRefused(txid, REFUSALS[data[at]])
    if kind in (PROBE, PROBE_ACK):
        if len(data) < at + 2 * KEY_LEN:
            raise InvalidInput("probe truncated")
        sender, receiver = bytes(data[at:at + KEY_LEN]), bytes(data[at + KEY_LEN:at + 2 * KEY_LEN])
        at += 2 * KEY_LEN
        address = None
        if kind == PROBE_ACK:
            address, at = _decode_address(data, at)
        if len(data) != at + 1 + MAC_LEN or data[at] not in CLAIMS:
            raise InvalidInput("probe malformed")
        claim = CLAIMS[data[at]]
        if kind == PROBE:
            return Probe(txid, sender, receiver, claim)
        return ProbeAck(txid, sender, receiver, address, claim)
    raise InvalidInput(f"unknown relay datagram type {kind}")


def derived_key(context: bytes, shared: bytes) -> bytes:
    """A MAC key from an X25519 shared secret, bound to its purpose."""
    return hashlib.sha256(context + shared).digest()


RELAY_CONTEXT = b"apex-mesh relay v1"
PATH_CONTEXT = b"apex-mesh path v1"

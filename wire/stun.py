"""STUN (RFC 5389) Binding messages: a pure bytes-in / bytes-out codec.

Only what endpoint discovery needs: build a Binding Request, build a Binding Success
Response for an observed address, parse a Binding response (XOR-MAPPED-ADDRESS
preferred, MAPPED-ADDRESS as fallback, IPv4 and IPv6), and FINGERPRINT (RFC 5389
section 15.5) on both sides. No I/O happens here; transports live in
``aircrew.stun_client`` and ``controltower.stun_responder``.

Every parser raises :class:`wire.errors.InvalidInput` on malformed input and nothing
else. Deliberate leniencies (documented in docs/stun.md):

* unknown attributes, comprehension-required or not, are skipped: a Binding answer is
  only read for its address attributes, so refusing a response over an attribute we do
  not use would only make discovery fail against some servers;
* MESSAGE-INTEGRITY is not verified (discovery uses no credentials);
* only the first occurrence of an attribute counts (RFC 5389 section 15).
"""
from __future__ import annotations

import binascii
import ipaddress
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InvalidInput

MAGIC_COOKIE = 0x2112A442
HEADER_LENGTH = 20
TRANSACTION_ID_LENGTH = 12
FINGERPRINT_XOR = 0x5354554E

# Message types (method Binding = 0x001, combined with the class bits).
BINDING_REQUEST = 0x0001
BINDING_INDICATION = 0x0011
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111

# Attribute types.
ATTR_MAPPED_ADDRESS = 0x0001
ATTR_ERROR_CODE = 0x0009
ATTR_MESSAGE_INTEGRITY = 0x0008
ATTR_XOR_MAPPED_ADDRESS = 0x0020
# Pre-RFC 5389 drafts used 0x8020 for XOR-MAPPED-ADDRESS; a few old servers still do.
ATTR_XOR_MAPPED_ADDRESS_OLD = 0x8020
ATTR_SOFTWARE = 0x8022
ATTR_FINGERPRINT = 0x8028

FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02

MAX_SOFTWARE_CHARS = 127  # RFC 5389 section 15.10: fewer than 128 characters
MAX_SOFTWARE_BYTES = 763

_HEADER = struct.Struct("!HHI12s")
_ATTR_HEADER = struct.Struct("!HH")
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")

Address = tuple[str, int]


@dataclass(frozen=True)
class Message:
    """A parsed STUN message: header fields and the raw attributes, in order.

    ``fingerprint_checked`` is True when a FINGERPRINT attribute was present and
    matched (a mismatch never gets this far: it raises InvalidInput).
    """

    message_type: int
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...]
    fingerprint_checked: bool = False

    def attribute(self, attr_type: int) -> bytes | None:
        """The value of the first attribute of ``attr_type``, or None."""
        for current, value in self.attributes:
            if current == attr_type:
                return value
        return None


# -- building -----------------------------------------------------------------------


def new_transaction_id() -> bytes:
    """A fresh, cryptographically random 96-bit transaction id."""
    return secrets.token_bytes(TRANSACTION_ID_LENGTH)


def build_message(
    message_type: int,
    transaction_id: bytes,
    attributes: Sequence[tuple[int, bytes]] = (),
    *,
    fingerprint: bool = True,
) -> bytes:
    """Encode a STUN message; attributes are (type, value) pairs, padded here."""
    if isinstance(message_type, bool) or not isinstance(message_type, int) or not 0 <= message_type <= 0x3FFF:
        raise InvalidInput(f"STUN message type {message_type!r} out of range (14 bits)")
    _check_transaction_id(transaction_id)
    body = bytearray()
    for attr_type, value in attributes:
        if isinstance(attr_type, bool) or not isinstance(attr_type, int) or not 0 <= attr_type <= 0xFFFF:
            raise InvalidInput(f"STUN attribute type {attr_type!r} out of range")
        if not isinstance(value, (bytes, bytearray)):
            raise InvalidInput(f"STUN attribute {attr_type:#06x} value must be bytes")
        if len(value) > 0xFFFF:
            raise InvalidInput(f"STUN attribute {attr_type:#06x} value too long: {len(value)} bytes")
        body += _ATTR_HEADER.pack(attr_type, len(value)) + bytes(value) + _padding(len(value))
    length = len(body) + (8 if fingerprint else 0)
    if length > 0xFFFF:
        raise InvalidInput(f"STUN message too long: {length} bytes of attributes")
    message = bytearray(_HEADER.pack(message_type, length, MAGIC_COOKIE, bytes(transaction_id)))
    message += body
    if fingerprint:
        crc = _fingerprint(bytes(message))
        message += _ATTR_HEADER.pack(ATTR_FINGERPRINT, 4) + crc.to_bytes(4, "big")
    return bytes(message)


def build_binding_request(
    transaction_id: bytes | None = None, *, fingerprint: bool = True
) -> bytes:
    """A Binding Request; a random transaction id is drawn when none is given.

    The id is bytes 8..20 of the result (see :func:`transaction_id_of`).
    """
    tid = new_transaction_id() if transaction_id is None else transaction_id
    return build_message(BINDING_REQUEST, tid, fingerprint=fingerprint)


def build_binding_success(
    transaction_id: bytes,
    address: Address,
    *,
    software: str | None = None,
    fingerprint: bool = True,
) -> bytes:
    """A Binding Success Response telling the client its observed ``(ip, port)``.

    It carries XOR-MAPPED-ADDRESS and, for RFC 3489 era clients, MAPPED-ADDRESS.
    """
    _check_transaction_id(transaction_id)
    ip, port = address
    attributes = [
        (ATTR_XOR_MAPPED_ADDRESS, encode_xor_address(ip, port, transaction_id)),
        (ATTR_MAPPED_ADDRESS, encode_address(ip, port)),
    ]
    if software is not None:
        attributes.append((ATTR_SOFTWARE, _encode_software(software)))
    return build_message(BINDING_SUCCESS, transaction_id, attributes, fingerprint=fingerprint)


def encode_address(ip: str, port: int) -> bytes:
    """The value of a MAPPED-ADDRESS attribute."""
    packed, family = _pack_ip(ip)
    _check_port(port)
    return struct.pack("!BBH", 0, family, port) + packed


def encode_xor_address(ip: str, port: int, transaction_id: bytes) -> bytes:
    """The value of an XOR-MAPPED-ADDRESS attribute."""
    _check_transaction_id(transaction_id)
    packed, family = _pack_ip(ip)
    _check_port(port)
    key = _COOKIE_BYTES + bytes(transaction_id)
    xored = bytes(a ^ b for a, b in zip(packed, key))
    return struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + xored


# -- parsing ------------------------------------------------------------------------


def parse_message(data: bytes) -> Message:
    """Decode a STUN message (RFC 5389 header, attributes, FINGERPRINT if present)."""
    data = _as_bytes(data)
    if len(data) < HEADER_LENGTH:
        raise InvalidInput(
            f"STUN message too short: {len(data)} bytes (a header is {HEADER_LENGTH})"
        )
    message_type, length, cookie, transaction_id = _HEADER.unpack_from(data)
    if message_type & 0xC000:
        raise InvalidInput("not a STUN message: the two leading bits are not zero")
    if cookie != MAGIC_COOKIE:
        raise InvalidInput(f"not an RFC 5389 STUN message: magic cookie {cookie:#010x}")
    if length % 4:
        raise InvalidInput(f"STUN message length {length} is not a multiple of 4")
    if HEADER_LENGTH + length != len(data):
        raise InvalidInput(
            f"STUN message length field says {length} bytes of attributes, "
            f"{len(data) - HEADER_LENGTH} follow the header"
        )
    attributes: list[tuple[int, bytes]] = []
    fingerprint_checked = False
    offset = HEADER_LENGTH
    while offset < len(data):
        if len(data) - offset < _ATTR_HEADER.size:
            raise InvalidInput(f"truncated STUN attribute header at byte {offset}")
        attr_type, attr_length = _ATTR_HEADER.unpack_from(data, offset)
        start = offset + _ATTR_HEADER.size
        end = start + attr_length
        if end > len(data):
            raise InvalidInput(
                f"STUN attribute {attr_type:#06x} at byte {offset} claims {attr_length} bytes, "
                f"only {len(data) - start} remain"
            )
        value = data[start:end]
        next_offset = end + len(_padding(attr_length))
        if attr_type == ATTR_FINGERPRINT:
            if next_offset != len(data):
                raise InvalidInput("STUN FINGERPRINT is not the last attribute")
            _verify_fingerprint(data, offset, value)
            fingerprint_checked = True
        attributes.append((attr_type, value))
        offset = next_offset
    return Message(message_type, transaction_id, tuple(attributes), fingerprint_checked)


def transaction_id_of(data: bytes) -> bytes:
    """The transaction id of a message (header checks only; no attribute parsing)."""
    data = _as_bytes(data)
    if len(data) < HEADER_LENGTH:
        raise InvalidInput(f"STUN message too short: {len(data)} bytes")
    return data[8:HEADER_LENGTH]


def is_binding_request(data: bytes) -> bool:
    """True when ``data`` is a well-formed RFC 5389 Binding Request. Never raises."""
    try:
        return parse_message(data).message_type == BINDING_REQUEST
    except InvalidInput:
        return False


def parse_binding_response(data: bytes, transaction_id: bytes | None = None) -> Address:
    """The mapped ``(ip, port)`` a Binding Success Response reports.

    With ``transaction_id`` given, an answer to another transaction is refused. A Binding
    Error Response raises InvalidInput carrying the server's error code and reason.
    """
    message = parse_message(data)
    if transaction_id is not None and message.transaction_id != transaction_id:
        raise InvalidInput("STUN response answers another transaction")
    if message.message_type == BINDING_ERROR:
        raise InvalidInput(f"STUN server refused the binding: {_describe_error(message)}")
    if message.message_type != BINDING_SUCCESS:
        raise InvalidInput(
            f"not a Binding Success Response: message type {message.message_type:#06x}"
        )
    for attr_type in (ATTR_XOR_MAPPED_ADDRESS, ATTR_XOR_MAPPED_ADDRESS_OLD):
        value = message.attribute(attr_type)
        if value is not None:
            return decode_xor_address(value, message.transaction_id)
    value = message.attribute(ATTR_MAPPED_ADDRESS)
    if value is not None:
        return decode_address(value)
    raise InvalidInput("STUN Binding response carries no (XOR-)MAPPED-ADDRESS")


def decode_address(value: bytes) -> Address:
    """Decode a MAPPED-ADDRESS value to ``(ip, port)``."""
    family, port, packed = _split_address(value)
    return _unpack_ip(family, packed), port


def decode_xor_address(value: bytes, transaction_id: bytes) -> Address:
    """Decode an XOR-MAPPED-ADDRESS value to ``(ip, port)``."""
    _check_transaction_id(transaction_id)
    family, port, packed = _split_address(value)
    key = _COOKIE_BYTES + bytes(transaction_id)
    plain = bytes(a ^ b for a, b in zip(packed, key))
    return _unpack_ip(family, plain), port ^ (MAGIC_COOKIE >> 16)


# -- helpers ------------------------------------------------------------------------


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise InvalidInput(f"a STUN message must be bytes, not {type(data).__name__}")


def _padding(length: int) -> bytes:
    return b"\x00" * (-length % 4)


def _check_transaction_id(transaction_id: object) -> None:
    if not isinstance(transaction_id, (bytes, bytearray)) or len(transaction_id) != TRANSACTION_ID_LENGTH:
        raise InvalidInput(f"a STUN transaction id is {TRANSACTION_ID_LENGTH} bytes")


def _check_port(port: object) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise InvalidInput(f"invalid UDP port {port!r}")


def _pack_ip(ip: str) -> tuple[bytes, int]:
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        raise InvalidInput(f"invalid IP address {ip!r}") from None
    family = FAMILY_IPV4 if parsed.version == 4 else FAMILY_IPV6
    return parsed.packed, family


def _split_address(value: bytes) -> tuple[int, int, bytes]:
    if len(value) < 4:
        raise InvalidInput(f"STUN address attribute too short: {len(value)} bytes")
    _reserved, family, port = struct.unpack_from("!BBH", value)
    expected = {FAMILY_IPV4: 8, FAMILY_IPV6: 20}.get(family)
    if expected is None:
        raise InvalidInput(f"STUN address attribute has unknown family {family:#04x}")
    if len(value) != expected:
        raise InvalidInput(
            f"STUN address attribute for family {family:#04x} is {len(value)} bytes, "
            f"expected {expected}"
        )
    return family, port, value[4:]


def _unpack_ip(family: int, packed: bytes) -> str:
    if family == FAMILY_IPV4:
        return str(ipaddress.IPv4Address(packed))
    return str(ipaddress.IPv6Address(packed))


def _encode_software(software: str) -> bytes:
    if len(software) > MAX_SOFTWARE_CHARS:
        raise InvalidInput(f"STUN SOFTWARE must be under {MAX_SOFTWARE_CHARS + 1} characters")
    encoded = software.encode("utf-8")
    if len(encoded) > MAX_SOFTWARE_BYTES:
        raise InvalidInput(f"STUN SOFTWARE must be at most {MAX_SOFTWARE_BYTES} bytes")
    return encoded


def _fingerprint(message_so_far: bytes) -> int:
    """CRC-32 of everything before FINGERPRINT, XORed with 0x5354554e (RFC 5389 15.5).

    The header length must already count the 8-byte FINGERPRINT attribute.
    """
    return (binascii.crc32(message_so_far) ^ FINGERPRINT_XOR) & 0xFFFFFFFF


def _verify_fingerprint(data: bytes, attr_offset: int, value: bytes) -> None:
    if len(value) != 4:
        raise InvalidInput(f"STUN FINGERPRINT must be 4 bytes, got {len(value)}")
    if int.from_bytes(value, "big") != _fingerprint(data[:attr_offset]):
        raise InvalidInput("STUN FINGERPRINT does not match the message (corrupted?)")


def _describe_error(message: Message) -> str:
    value = message.attribute(ATTR_ERROR_CODE)
    if value is None or len(value) < 4:
        return "error response without a usable ERROR-CODE"
    code = (value[2] & 0x07) * 100 + value[3]
    reason = value[4:].decode("utf-8", errors="replace").strip()
    return f"error {code} {reason}".rstrip()

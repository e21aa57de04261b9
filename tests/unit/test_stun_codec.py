"""wire.stun: RFC 5769 golden vectors, round trips, malformed input, fuzzing."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.stunvectors import (RFC5769_IPV4_RESPONSE, RFC5769_IPV6_RESPONSE, RFC5769_REQUEST,
                               RFC5769_TID)
from wire import stun
from wire.errors import InvalidInput

TID = bytes(range(12))


# -- RFC 5769 ----------------------------------------------------------------------


def test_rfc5769_ipv4_response():
    assert stun.parse_binding_response(RFC5769_IPV4_RESPONSE) == ("192.0.2.1", 32853)
    message = stun.parse_message(RFC5769_IPV4_RESPONSE)
    assert message.fingerprint_checked
    assert message.transaction_id == RFC5769_TID
    assert message.attribute(stun.ATTR_SOFTWARE) == b"test vector"


def test_rfc5769_ipv6_response():
    assert stun.parse_binding_response(RFC5769_IPV6_RESPONSE, RFC5769_TID) == (
        "2001:db8:1234:5678:11:2233:4455:6677",
        32853,
    )
    assert stun.parse_message(RFC5769_IPV6_RESPONSE).fingerprint_checked


def test_rfc5769_request():
    assert stun.is_binding_request(RFC5769_REQUEST)
    message = stun.parse_message(RFC5769_REQUEST)
    assert message.fingerprint_checked
    assert message.attribute(0x0006) == b"evtj:h6vY"  # USERNAME, unpadded
    assert not stun.is_binding_request(RFC5769_IPV4_RESPONSE)


@pytest.mark.parametrize(
    "vector",
    [RFC5769_REQUEST, RFC5769_IPV4_RESPONSE, RFC5769_IPV6_RESPONSE],
    ids=["request", "ipv4-response", "ipv6-response"],
)
def test_rfc5769_any_flipped_bit_before_fingerprint_is_caught(vector):
    # Every byte the CRC covers, except the FINGERPRINT attribute header itself (a flipped
    # type there turns it into an unknown attribute, which is legitimately skipped).
    for index in range(len(vector) - 8):
        corrupted = bytearray(vector)
        corrupted[index] ^= 0x01
        with pytest.raises(InvalidInput):
            stun.parse_message(bytes(corrupted))


def test_rfc5769_fingerprint_mismatch_message():
    corrupted = bytearray(RFC5769_IPV4_RESPONSE)
    corrupted[-1] ^= 0xFF
    with pytest.raises(InvalidInput, match="FINGERPRINT does not match"):
        stun.parse_binding_response(bytes(corrupted))


# -- building and round trips ------------------------------------------------------


def test_binding_request_layout():
    request = stun.build_binding_request()
    message_type, length, cookie = struct.unpack_from("!HHI", request)
    assert (message_type, length, cookie) == (stun.BINDING_REQUEST, 8, stun.MAGIC_COOKIE)
    assert len(request) == 28
    assert stun.is_binding_request(request)
    assert stun.parse_message(request).fingerprint_checked
    assert len(stun.transaction_id_of(request)) == 12


def test_binding_request_ids_are_random():
    ids = {stun.transaction_id_of(stun.build_binding_request()) for _ in range(50)}
    assert len(ids) == 50


def test_binding_request_without_fingerprint():
    request = stun.build_binding_request(TID, fingerprint=False)
    assert request == bytes.fromhex("000100002112a442") + TID
    assert stun.is_binding_request(request)
    assert not stun.parse_message(request).fingerprint_checked


@pytest.mark.parametrize(
    "address",
    [("192.0.2.1", 32853), ("0.0.0.0", 0), ("255.255.255.255", 65535),
     ("2001:db8:1234:5678:11:2233:4455:6677", 32853), ("::1", 1)],
)
def test_success_round_trip(address):
    response = stun.build_binding_success(TID, address, software="apex-mesh")
    assert stun.parse_binding_response(response, TID) == address
    message = stun.parse_message(response)
    assert message.fingerprint_checked
    assert stun.decode_address(message.attribute(stun.ATTR_MAPPED_ADDRESS)) == address
    assert message.attribute(stun.ATTR_SOFTWARE) == b"apex-mesh"
    assert message.attributes[-1][0] == stun.ATTR_FINGERPRINT


def test_success_matches_rfc5769_address_encoding():
    # Same transaction id and address as RFC 5769 2.2 -> the same XOR-MAPPED-ADDRESS bytes.
    response = stun.build_binding_success(RFC5769_TID, ("192.0.2.1", 32853))
    assert bytes.fromhex("002000080001a147e112a643") in response
    response6 = stun.build_binding_success(
        RFC5769_TID, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)
    )
    assert bytes.fromhex("002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9") in response6


def test_mapped_address_fallback():
    response = stun.build_message(
        stun.BINDING_SUCCESS, TID, [(stun.ATTR_MAPPED_ADDRESS, stun.encode_address("198.51.100.7", 4500))]
    )
    assert stun.parse_binding_response(response) == ("198.51.100.7", 4500)


def test_xor_mapped_preferred_over_mapped():
    response = stun.build_message(
        stun.BINDING_SUCCESS,
        TID,
        [
            (stun.ATTR_MAPPED_ADDRESS, stun.encode_address("10.0.0.1", 1)),
            (stun.ATTR_XOR_MAPPED_ADDRESS, stun.encode_xor_address("203.0.113.9", 51820, TID)),
        ],
    )
    assert stun.parse_binding_response(response) == ("203.0.113.9", 51820)


def test_unknown_attributes_are_skipped():
    response = stun.build_message(
        stun.BINDING_SUCCESS,
        TID,
        [(0x7FFF, b"abc"), (0x802B, b"12345"),
         (stun.ATTR_XOR_MAPPED_ADDRESS, stun.encode_xor_address("203.0.113.9", 7, TID))],
    )
    assert stun.parse_binding_response(response) == ("203.0.113.9", 7)


def test_padding_is_applied():
    message = stun.build_message(stun.BINDING_REQUEST, TID, [(stun.ATTR_SOFTWARE, b"x")], fingerprint=False)
    assert len(message) == 20 + 8
    assert stun.parse_message(message).attribute(stun.ATTR_SOFTWARE) == b"x"


# -- malformed input -----------------------------------------------------------------


def _header(message_type=stun.BINDING_SUCCESS, length=0, cookie=stun.MAGIC_COOKIE, tid=TID):
    return struct.pack("!HHI", message_type, length, cookie) + tid


MALFORMED = {
    "empty": b"",
    "short": b"\x01\x01\x00\x00",
    "leading bits": _header(message_type=0xC101),
    "bad cookie": _header(cookie=0xDEADBEEF),
    "length not multiple of 4": _header(length=2) + b"\x00\x00",
    "length too long": _header(length=8),
    "trailing bytes": _header(length=0) + b"\x00" * 4,
    "truncated attribute header": _header(length=4) + b"\x00\x20\x00\x08",
    "attribute overruns": _header(length=8) + b"\x00\x20\x00\x08\x00\x01\x00\x00",
    "fingerprint not last": (
        _header(length=16) + b"\x80\x28\x00\x04\x00\x00\x00\x00" + b"\x80\x22\x00\x04abcd"
    ),
    "fingerprint wrong size": _header(length=8) + b"\x80\x28\x00\x02\x00\x00\x00\x00",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_messages(name):
    data = MALFORMED[name]
    with pytest.raises(InvalidInput):
        stun.parse_message(data)
    with pytest.raises(InvalidInput):
        stun.parse_binding_response(data)
    assert stun.is_binding_request(data) is False


def _success_with(attr_type, value):
    return stun.build_message(stun.BINDING_SUCCESS, TID, [(attr_type, value)])


@pytest.mark.parametrize(
    "value, pattern",
    [
        (b"\x00\x01\x00", "too short"),
        (b"\x00\x03\x00\x01\x01\x02\x03\x04", "unknown family"),
        (b"\x00\x01\x00\x01\x01\x02\x03", "expected 8"),
        (b"\x00\x02\x00\x01" + b"\x00" * 4, "expected 20"),
    ],
)
def test_bad_address_attributes(value, pattern):
    for attr_type in (stun.ATTR_XOR_MAPPED_ADDRESS, stun.ATTR_MAPPED_ADDRESS):
        with pytest.raises(InvalidInput, match=pattern):
            stun.parse_binding_response(_success_with(attr_type, value))


def test_response_without_address():
    with pytest.raises(InvalidInput, match="no \\(XOR-\\)MAPPED-ADDRESS"):
        stun.parse_binding_response(stun.build_message(stun.BINDING_SUCCESS, TID))


def test_error_response_reports_code_and_reason():
    error_code = b"\x00\x00\x04\x00" + b"Bad Request"
    response = stun.build_message(stun.BINDING_ERROR, TID, [(stun.ATTR_ERROR_CODE, error_code)])
    with pytest.raises(InvalidInput, match="error 400 Bad Request"):
        stun.parse_binding_response(response)


def test_request_is_not_a_response():
    with pytest.raises(InvalidInput, match="not a Binding Success Response"):
        stun.parse_binding_response(stun.build_binding_request())


def test_transaction_mismatch():
    response = stun.build_binding_success(TID, ("192.0.2.1", 1))
    with pytest.raises(InvalidInput, match="another transaction"):
        stun.parse_binding_response(response, bytes(12))


@pytest.mark.parametrize("data", ["a string", None, 42, [1, 2]])
def test_non_bytes_input(data):
    with pytest.raises(InvalidInput, match="must be bytes"):
        stun.parse_message(data)
    assert stun.is_binding_request(data) is False


def test_bytearray_and_memoryview_accepted():
    assert stun.parse_binding_response(bytearray(RFC5769_IPV4_RESPONSE))[0] == "192.0.2.1"
    assert stun.parse_binding_response(memoryview(RFC5769_IPV4_RESPONSE))[0] == "192.0.2.1"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"transaction_id": b"short", "address": ("192.0.2.1", 1)},
        {"transaction_id": TID, "address": ("not-an-ip", 1)},
        {"transaction_id": TID, "address": ("192.0.2.1", 70000)},
        {"transaction_id": TID, "address": ("192.0.2.1", -1)},
        {"transaction_id": TID, "address": ("192.0.2.1", True)},
        {"transaction_id": TID, "address": ("192.0.2.1", 1), "software": "x" * 128},
    ],
)
def test_build_success_rejects_bad_arguments(kwargs):
    with pytest.raises(InvalidInput):
        stun.build_binding_success(**kwargs)


def test_build_message_rejects_bad_arguments():
    with pytest.raises(InvalidInput):
        stun.build_message(0x4001, TID)
    with pytest.raises(InvalidInput):
        stun.build_message(stun.BINDING_REQUEST, TID, [(0x10000, b"")])
    with pytest.raises(InvalidInput):
        stun.build_message(stun.BINDING_REQUEST, TID, [(1, b"x" * 70000)])
    with pytest.raises(InvalidInput):
        stun.build_binding_request(b"\x00" * 11)
    with pytest.raises(InvalidInput):
        stun.build_message(stun.BINDING_REQUEST, TID, [(1, "not bytes")])
    with pytest.raises(InvalidInput):
        stun.build_message("1", TID)


# -- fuzzing -------------------------------------------------------------------------


def _parse_everything(data: bytes) -> None:
    """No parser raises anything but InvalidInput, and is_binding_request agrees with the
    full parse: a well-formed message of type Binding Request, with its header on the wire."""
    for parse in (stun.parse_binding_response, stun.transaction_id_of):
        try:
            parse(data)
        except InvalidInput:
            pass
    try:
        message = stun.parse_message(data)
    except InvalidInput:
        message = None
    expected = message is not None and message.message_type == stun.BINDING_REQUEST
    assert stun.is_binding_request(data) is expected
    if expected:
        assert data[:2] == b"\x00\x01" and data[4:8] == struct.pack("!I", stun.MAGIC_COOKIE)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data):
    _parse_everything(data)


@settings(max_examples=200, deadline=None)
@given(tid=st.binary(min_size=12, max_size=12), fingerprint=st.booleans(),
       other=st.sampled_from([stun.BINDING_INDICATION, stun.BINDING_SUCCESS,
                              stun.BINDING_ERROR, 0x0002]))
def test_binding_requests_are_told_from_other_messages(tid, fingerprint, other):
    request = stun.build_binding_request(tid, fingerprint=fingerprint)
    assert stun.is_binding_request(request) is True
    assert stun.is_binding_request(struct.pack("!H", other) + request[2:]) is False
    assert stun.is_binding_request(request[:-1]) is False            # cut short
    assert stun.is_binding_request(request[:4] + b"\x00" * 4 + request[8:]) is False  # cookie
    _parse_everything(request)


@settings(max_examples=300, deadline=None)
@given(
    message_type=st.sampled_from([stun.BINDING_REQUEST, stun.BINDING_SUCCESS, stun.BINDING_ERROR]),
    body=st.binary(max_size=120),
)
def test_fuzz_valid_header_random_attributes(message_type, body):
    # A correct header gets the fuzzer past the cheap checks into the attribute walk.
    body += b"\x00" * (-len(body) % 4)
    _parse_everything(_header(message_type=message_type, length=len(body)) + body)


@settings(max_examples=300, deadline=None)
@given(
    attrs=st.lists(
        st.tuples(
            st.sampled_from([stun.ATTR_MAPPED_ADDRESS, stun.ATTR_XOR_MAPPED_ADDRESS,
                             stun.ATTR_XOR_MAPPED_ADDRESS_OLD, stun.ATTR_ERROR_CODE,
                             stun.ATTR_SOFTWARE, stun.ATTR_FINGERPRINT, 0x1234]),
            st.binary(max_size=24),
        ),
        max_size=5,
    ),
    message_type=st.sampled_from([stun.BINDING_SUCCESS, stun.BINDING_ERROR]),
    fingerprint=st.booleans(),
)
def test_fuzz_well_framed_random_attribute_values(attrs, message_type, fingerprint):
    _parse_everything(stun.build_message(message_type, TID, attrs, fingerprint=fingerprint))


@settings(max_examples=300, deadline=None)
@given(
    vector=st.sampled_from([RFC5769_IPV4_RESPONSE, RFC5769_IPV6_RESPONSE, RFC5769_REQUEST]),
    edits=st.lists(st.tuples(st.integers(0, 107), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 108),
)
def test_fuzz_mutated_vectors(vector, edits, cut):
    data = bytearray(vector)
    for index, value in edits:
        if index < len(data):
            data[index] = value
    _parse_everything(bytes(data[: max(cut, 0)] if cut < len(data) else data))

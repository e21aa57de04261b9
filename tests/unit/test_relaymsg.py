"""The relay and probe datagrams: round trips, MACs, and malformed input refused."""
import os
import random

import pytest

from testbed import wgfake
from wire import relaymsg as rm
from wire.errors import InvalidInput

KEY = os.urandom(32)


def samples():
    a, b = os.urandom(32), os.urandom(32)
    yield rm.encode_bind(KEY, rm.Bind(os.urandom(8), 1_700_000_000_123, a, "zone-blue")), \
        rm.Bind
    yield rm.encode_bind_ok(KEY, rm.BindOk(os.urandom(8), ("198.51.100.7", 4242), b"bootboot")), \
        rm.BindOk
    yield rm.encode_bind_ok(KEY, rm.BindOk(os.urandom(8), ("2001:db8::1", 1), b"bootboot")), \
        rm.BindOk
    yield rm.encode_bind_refused(rm.BindRefused(os.urandom(8), "foreign")), rm.BindRefused
    yield rm.encode_probe(KEY, rm.Probe(os.urandom(8), a, b, "direct")), rm.Probe
    yield rm.encode_probe_ack(KEY, rm.ProbeAck(os.urandom(8), a, b, ("192.0.2.1", 9), None)), \
        rm.ProbeAck


@pytest.mark.parametrize("data,kind", list(samples()))
def test_round_trip_and_mac(data, kind):
    message = rm.decode(data)
    assert isinstance(message, kind)
    if kind is not rm.BindRefused:
        assert rm.mac_valid(KEY, data) and not rm.mac_valid(os.urandom(32), data)
        tampered = bytearray(data)
        tampered[6] ^= 1
        assert not rm.mac_valid(KEY, bytes(tampered))


def test_fields_survive():
    txid, a = os.urandom(8), os.urandom(32)
    bind = rm.decode(rm.encode_bind(KEY, rm.Bind(txid, 42, a, "z")))
    assert (bind.txid, bind.ts_ms, bind.key, bind.zone) == (txid, 42, a, "z")
    ack = rm.decode(rm.encode_probe_ack(KEY, rm.ProbeAck(txid, a, a, ("2001:db8::5", 51820),
                                                          "relayed")))
    assert ack.address == ("2001:db8::5", 51820) and ack.claim == "relayed"


def test_never_taken_for_wireguard_or_stun():
    for data, _ in samples():
        assert rm.wg_type(data) is None and data[0] & 0xC0
    assert rm.message_type(wgfake.transport(b"abcd")) is None


def test_wireguard_types_and_mac1():
    pub = os.urandom(32)
    init = wgfake.initiation(b"\1\2\3\4", pub)
    assert rm.wg_type(init) == rm.WG_INITIATION and rm.sender_index(init) == b"\1\2\3\4"
    assert rm.mac1_valid(init, rm.mac1_key(pub)) and not rm.mac1_valid(init, rm.mac1_key(os.urandom(32)))
    resp = wgfake.response(b"aaaa", b"bbbb", pub)
    assert rm.wg_type(resp) == rm.WG_RESPONSE and rm.receiver_index(resp) == b"bbbb"
    assert rm.receiver_index(wgfake.transport(b"cccc")) == b"cccc"
    assert rm.wg_type(init[:-1]) is None and rm.wg_type(b"\x04\0\0\0" + bytes(27)) is None
    assert rm.wg_type(b"\x01\0\0\1" + bytes(144)) is None


def test_garbage_raises_invalid_input_only():
    rnd = random.Random(7)
    seeds = [d for d, _ in samples()]
    for _ in range(20_000):
        data = bytearray(rnd.choice(seeds))
        if rnd.random() < 0.5:
            data = data[:rnd.randint(0, len(data))]
        else:
            for _ in range(rnd.randint(1, 3)):
                data[rnd.randrange(len(data))] = rnd.randrange(256)
        try:
            rm.decode(bytes(data))
        except InvalidInput:
            pass


def test_encoders_refuse_out_of_range():
    with pytest.raises(InvalidInput):
        rm.encode_bind(KEY, rm.Bind(b"short", 1, os.urandom(32), "z"))
    with pytest.raises(InvalidInput):
        rm.encode_bind(KEY, rm.Bind(os.urandom(8), 1, os.urandom(32), "z" * 64))

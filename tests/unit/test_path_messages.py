"""Path reports on heartbeats and the home relay in endpoint updates and peer records."""
import pytest

from wire import messages as m
from wire.errors import InvalidInput

REPORT = {"relay": "tower-0a1b2c3d", "relays": ["tower-0a1b2c3d"],
          "paths": [["10.0.0.2", "r", 0, 12], ["10.0.0.3", "d", None, 3], ["10.0.0.4", "x", None, None]]}


def test_heartbeat_report_validated():
    assert m._BODY_VALIDATORS["heartbeat"]({}) == {}
    assert m._BODY_VALIDATORS["heartbeat"](REPORT)["paths"][0] == ["10.0.0.2", "r", 0, 12]


@pytest.mark.parametrize("bad", [
    {"paths": [["10.0.0.2", "q", None, 1]]},
    {"paths": [["10.0.0.2", "r", 3, 1]], "relays": []},
    {"paths": [["not-an-ip", "d", None, 1]]},
    {"paths": [["10.0.0.2", "d", None, -1]]},
    {"paths": [["10.0.0.2", "d", None]]},
    {"paths": [["10.0.0.2", "d", None, 1]] * (m.MAX_PATH_REPORT + 1)},
    {"relays": ["Bad Id"]},
    {"extra": 1},
])
def test_heartbeat_report_refused(bad):
    with pytest.raises(InvalidInput):
        m._BODY_VALIDATORS["heartbeat"](bad)


def test_report_fits_a_message():
    big = {"relay": "tower-0a1b2c3d", "relays": ["tower-0a1b2c3d"] * 16,
           "paths": [[f"10.140.{i // 250}.{i % 250}", "r", 15, 179] for i in range(m.MAX_PATH_REPORT)]}
    request = m.Request("heartbeat", "zone-blue", "A" * 43 + "=", big)
    assert len(request.to_json()) < m.MAX_MESSAGE_BYTES


def test_peer_relay_round_trip_and_endpoint_update():
    peer = m.Peer("A" * 43 + "=", "10.0.0.1", relay="eu-1-0123abcd")
    assert m.parse_peer(peer.to_json()).relay == "eu-1-0123abcd"
    assert "relay" not in m.Peer("A" * 43 + "=", "10.0.0.1").to_dict()
    assert m.parse_peer('{"key":"' + "A" * 43 + '=","address":"10.0.0.1","relay":"x y"}').relay is None
    body = m._BODY_VALIDATORS["endpoint-update"]({"endpoint": "192.0.2.1:5", "nat_type": "cone",
                                                  "relay": "eu-1-0123abcd"})
    assert body["relay"] == "eu-1-0123abcd"
    assert "relay" not in m._BODY_VALIDATORS["endpoint-update"]({"endpoint": "192.0.2.1:5",
                                                                 "nat_type": None})


def test_largest_report_fits_a_message():
    """512 peers with IPv6 addresses and old handshakes would make 32 KB: the agent keeps
    the report under the 16 KiB message limit (the gate suspends a sender over it)."""
    from aircrew.pathkeeper import bounded
    relays = [f"region-{i}-0a1b2c3d" for i in range(m.MAX_REPORT_RELAYS)]
    entries = [[f"fd12:3456:789a:bcde:f012:3456:789a:{i:04x}", "x", 15, 2**31 - 1]
               for i in range(m.MAX_PATH_REPORT)]
    paths = bounded(entries)
    assert 150 < len(paths) < len(entries) and paths == entries[:len(paths)]
    body = {"relay": relays[0], "relays": relays, "paths": paths}
    request = m.Request("heartbeat", "z" * 63, "A" * 43 + "=", body)
    payload = request.to_json()
    assert len(payload) < m.MAX_MESSAGE_BYTES
    assert len(m.parse_request(payload).body["paths"]) == len(paths)   # and it validates
    small = [["10.0.0.2", "d", None, 3]] * 10
    assert bounded(small) == small

"""A heartbeat's path report is stored per node; an endpoint update carries the home relay."""
import json

from wire import messages


def test_heartbeat_stores_report_and_endpoint_update_sets_relay(store, redis_client):
    key = "B" * 43 + "="
    store.register("default", key, session="s", endpoint="192.0.2.1:51820", listen_port=51820)
    report = {"relay": "tower-0a1b2c3d", "relays": ["tower-0a1b2c3d"],
              "paths": [["10.0.0.9", "r", 0, 4]]}
    store.heartbeat_call("default", key, "s", report=report)
    store.run(store.heartbeat_call("default", key, "s", now=1000.0, report=report))
    stored = json.loads(redis_client.hget(store.keys.paths("default"), key))
    assert stored["paths"] == [["10.0.0.9", "r", 0, 4]] and stored["ts"] == 1000.0
    store.update_endpoint("default", key, "s", "192.0.2.1:51820", "cone")
    record = messages.parse_peer(redis_client.hget(store.keys.peers("default"), key))
    assert record.relay is None
    store.run(store.endpoint_call("default", key, "s", "192.0.2.1:51820", "cone",
                                  relay="tower-0a1b2c3d"))
    record = messages.parse_peer(redis_client.hget(store.keys.peers("default"), key))
    assert record.relay == "tower-0a1b2c3d"

"""GET /zones/<zone>/paths, `controltower zone paths` and the paths gauge, from reports
stored the way heartbeats store them."""
import json
import time

from controltower import admin
from controltower.pathmatrix import reported
from wire.proof import generate_private_key, public_key_of


def _keys(n):
    return sorted(public_key_of(generate_private_key()) for _ in range(n))


def test_matrix_from_reports(app, client, store, capsys):
    a, b, c = _keys(3)
    addresses = {}
    for key, name in ((a, "alpha"), (b, None), (c, None)):
        addresses[key] = store.register("default", key, session="s", endpoint=None,
                                        listen_port=51820, name=name).address
    relays = ["tower-0a1b2c3d"]
    now = time.time()
    store.run(store.heartbeat_call("default", a, "s", report={
        "relay": relays[0], "relays": relays,
        "paths": [[addresses[b], "r", 0, 4], [addresses[c], "d", None, 2]]}))
    store.run(store.heartbeat_call("default", b, "s", report={
        "relay": relays[0], "relays": relays,
        "paths": [[addresses[a], "r", 0, 5], [addresses[c], "x", None, None]]}))
    store.run(store.heartbeat_call("default", c, "s", report={
        "relay": None, "relays": [], "paths": [[addresses[a], "r", None, 1]]}))
    answer = client.get("/zones/default/paths")
    assert answer.status_code == 200
    data = answer.get_json()
    pairs = {(p["A"], p["B"]): p for p in data["Pairs"]}
    assert pairs[(a, b)]["Path"] == "relayed" and pairs[(a, b)]["Relay"] == relays[0]
    assert pairs[(a, c)]["Path"] == "mixed"
    assert pairs[(b, c)]["Path"] == "down" and pairs[(b, c)]["BView"] is None
    assert data["Counts"]["relayed"] == 1 and len(data["Nodes"]) == 3
    only = client.get("/zones/default/paths", query_string={"node": c}).get_json()
    assert len(only["Pairs"]) == 2
    named = client.get("/zones/default/paths", query_string={"node": "alpha"}).get_json()
    assert {(p["A"], p["B"]) for p in named["Pairs"]} == {(a, b), (a, c)}
    assert client.get("/zones/nope/paths").status_code == 404
    assert client.get("/zones/default/paths", query_string={"node": "x"}).status_code == 400
    counts = reported(list(store.redis.hvals(store.keys.paths("default"))), time.time())
    assert counts == {"direct": 1, "relayed": 3, "down": 1}
    # the CLI's text form: a matrix with the relay named
    admin._print_paths(data)
    text = capsys.readouterr().out
    assert "alpha" in text and "r1" in text and "r1 = relayed via tower-0a1b2c3d" in text and "~" in text
    assert json.dumps(data)
    # a removed node's report goes with the next read of the matrix
    store.remove_peer("default", c, "deleted")
    assert len(client.get("/zones/default/paths").get_json()["Pairs"]) == 1
    assert store.redis.hexists(store.keys.paths("default"), c) == 0

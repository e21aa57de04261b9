"""GET /peers under the production server: `controltower serve` with its gunicorn workers,
each holding its own peer cache. After every change, every worker answers the new set."""
from __future__ import annotations

import http.client
import json

from testbed.tower import TowerProcess
from wire.proof import generate_private_key, public_key_of

ASKS = 12          # fresh connections per check: gunicorn's 2 workers share the accepts


def get(tower: TowerProcess, path: str, headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", tower.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def answers(tower: TowerProcess, zone: str = "default") -> set[frozenset[str]]:
    """The distinct peer sets of ASKS requests on fresh connections."""
    out = set()
    for _ in range(ASKS):
        status, _, body = get(tower, f"/peers?zone={zone}")
        assert status == 200
        out.add(frozenset(p["PublicKey"] for p in json.loads(body)))
    return out


def test_every_worker_answers_the_current_set(store, tower_proc):
    tower = tower_proc
    keys: list[str] = []
    for i in range(6):
        key = public_key_of(generate_private_key())
        store.register("default", key, listen_port=51820, session=str(i))
        keys.append(key)
        assert answers(tower) == {frozenset(keys)}
    store.update_endpoint("default", keys[0], "0", "198.51.100.1:7", "cone")
    for _ in range(ASKS):
        rows = json.loads(get(tower, "/peers?zone=default")[2])
        assert {r["PublicKey"]: r["EndpointIP"] for r in rows}[keys[0]] == "198.51.100.1:7"
    for key in keys[:3]:
        store.remove_peer("default", key, "deleted")
    assert answers(tower) == {frozenset(keys[3:])}
    store.delete_zone("default", force=True)
    assert {get(tower, "/peers?zone=default")[0] for _ in range(ASKS)} == {404}


def test_not_modified_through_gunicorn(store, tower_proc):
    tower = tower_proc
    store.register("default", public_key_of(generate_private_key()), listen_port=51820,
                   session="s")
    status, headers, body = get(tower, "/peers?zone=default")
    assert status == 200 and len(json.loads(body)) == 1
    etag = headers["ETag"]
    for _ in range(ASKS):      # both workers: the ETag is the body's, not the process's
        status, headers, body = get(tower, "/peers?zone=default", {"If-None-Match": etag})
        assert (status, body, headers["ETag"]) == (304, b"", etag)

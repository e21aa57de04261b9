"""What a refused request must leave alone in Redis: every key's value and every Redis
user (tests of bad REST input compare it before and after), and the check itself."""
from __future__ import annotations

import json


def state(client_redis) -> dict:
    """Every key's value and every Redis user: what a refused request must leave alone."""
    read = {"string": client_redis.get,
            "hash": lambda k: {f: _value(v) for f, v in client_redis.hgetall(k).items()},
            "set": client_redis.smembers, "stream": client_redis.xrange,
            "zset": lambda k: client_redis.zrange(k, 0, -1, withscores=True)}
    keys = sorted(k for k in client_redis.keys("*") if not k.endswith(":credlock"))
    return {"keys": {k: read[client_redis.type(k)](k) for k in keys},
            "users": sorted(client_redis.execute_command("ACL", "LIST"))}


def _value(text: str):
    """A record as data: the scripts' JSON (cjson: {} for an empty list) and Python's
    differ in form only."""
    try:
        data = json.loads(text)
    except ValueError:
        return text
    return {k: ([] if v == {} else v) for k, v in data.items()} if isinstance(data, dict) else data


def refused_unchanged(client, client_redis, method: str, path: str, body: str, words: str):
    """Send ``body`` (surrogates kept) to ``path``: a 4xx whose error says ``words``, and
    Redis exactly as it was. The answer, for further checks."""
    before = state(client_redis)
    answer = client.open(path, method=method, data=body.encode("utf-8", "surrogatepass"),
                         content_type="application/json")
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.get_data(as_text=True))
    assert words in answer.get_json()["error"]
    assert state(client_redis) == before
    return answer

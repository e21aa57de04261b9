"""What a refused request must leave alone in Redis: every key's value and every Redis
user (tests of bad REST input compare it before and after)."""
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

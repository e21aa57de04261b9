"""Connecting to Redis from a URL (redis://, rediss://, unix://)."""
from __future__ import annotations

import redis

from wire.errors import InvalidInput


def connect(url: str, **kwargs) -> redis.Redis:
    """A client with string responses; raises InvalidInput on a malformed URL."""
    try:
        return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30,
                                    socket_keepalive=True, **kwargs)
    except ValueError as exc:
        raise InvalidInput(f"bad Redis URL: {exc}") from None

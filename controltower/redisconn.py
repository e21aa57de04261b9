"""Connecting to Redis from a URL (redis://, rediss:// with TLS files, unix://)."""
from __future__ import annotations

from dataclasses import dataclass

import redis

from wire.errors import InvalidInput


@dataclass(frozen=True)
class RedisTLS:
    """Files for rediss:// URLs: the CA that signed the server, and a client certificate."""
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def kwargs(self, url: str) -> dict[str, str]:
        if not url.startswith("rediss://"):
            if self.ca or self.cert or self.key:
                raise InvalidInput("Redis TLS files need a rediss:// URL")
            return {}
        out = {}
        for name, value in (("ssl_ca_certs", self.ca), ("ssl_certfile", self.cert),
                            ("ssl_keyfile", self.key)):
            if value:
                out[name] = value
        return out


def connect(url: str, tls: RedisTLS = RedisTLS(), **kwargs) -> redis.Redis:
    """A client with string responses; raises InvalidInput on a malformed URL."""
    try:
        return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30,
                                    socket_keepalive=True, **tls.kwargs(url), **kwargs)
    except ValueError as exc:
        raise InvalidInput(f"bad Redis URL: {exc}") from None

"""Connecting to Redis from a URL (redis://, rediss:// with TLS files, unix://, and
redis+sentinel:// for a Sentinel-managed primary), for the tower (``connect``, blocking)
and the agent (``connect_async``, asyncio) alike.

    redis+sentinel://[user:password@]host1:26379,host2:26379/<master-name>[/db]
        [?sentinel_username=...&sentinel_password=...]

``user:password`` authenticate to the Redis primary (and, after a failover, the replica
that replaces it); the Sentinels themselves are asked without credentials unless the
query gives some. A host without a port means 26379. Only the redis-py client and the
standard library are used, so the agent (``--controller``) parses the same form.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

from .errors import InvalidInput

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
# Asking a Sentinel is quick or that Sentinel is gone: do not wait long on one.
SENTINEL_TIMEOUT = 2.0


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


@dataclass(frozen=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    def master_kwargs(self) -> dict[str, Any]:
        """Connection options for the primary (redis-py ``master_for``)."""
        return {"db": self.db, "username": self.username, "password": self.password}

    def sentinel_kwargs(self) -> dict[str, Any]:
        """Connection options for the Sentinels."""
        out: dict[str, Any] = {"socket_connect_timeout": SENTINEL_TIMEOUT,
                               "socket_timeout": SENTINEL_TIMEOUT}
        if self.sentinel_password:
            out.update(username=self.sentinel_username, password=self.sentinel_password)
        return out


def is_sentinel_url(url: str) -> bool:
    return url.startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse the redis+sentinel:// form; errors never repeat the URL (it may hold a password)."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise InvalidInput(f"a Sentinel URL starts with {SENTINEL_SCHEME}://")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, has_password, password = userinfo.partition(":")
    sentinels = tuple(_host_port(h) for h in hosts.split(",") if h.strip())
    if not sentinels:
        raise InvalidInput("a Sentinel URL needs at least one host[:port]")
    path = [p for p in parts.path.split("/") if p]
    if not 1 <= len(path) <= 2:
        raise InvalidInput("a Sentinel URL ends with /<master-name> or /<master-name>/<db>")
    if len(path) == 2 and not path[1].isdigit():
        raise InvalidInput("the database in a Sentinel URL must be a number")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"sentinel_username", "sentinel_password"}
    if unknown:
        raise InvalidInput(f"unknown Sentinel URL parameter(s): {', '.join(sorted(unknown))}")
    return SentinelURL(sentinels, unquote(path[0]), int(path[1]) if len(path) == 2 else 0,
                       unquote(user) or None, unquote(password) if has_password else None,
                       query.get("sentinel_username", [None])[0],
                       query.get("sentinel_password", [None])[0])


def _host_port(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    if not host:
        raise InvalidInput("empty host in a Sentinel URL")
    if not port:
        return host, SENTINEL_PORT
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidInput("a port in a Sentinel URL must be 1-65535")
    return host, int(port)


def connect(url: str, tls: RedisTLS = RedisTLS(), **kwargs) -> redis.Redis:
    """A client with string responses; raises InvalidInput on a malformed URL.

    With a Sentinel URL the client follows the primary: after a failover its next
    connection goes to whichever server the Sentinels name.
    """
    options = dict(decode_responses=True, encoding_errors="replace", health_check_interval=30, socket_keepalive=True,
                   **tls.kwargs(url), **kwargs)
    if is_sentinel_url(url):
        target = parse_sentinel_url(url)
        sentinel = Sentinel(target.sentinels, sentinel_kwargs=target.sentinel_kwargs())
        return sentinel.master_for(target.master, **options, **target.master_kwargs())
    try:
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise InvalidInput(f"bad Redis URL: {exc}") from None


def never_evicted(connection: Any) -> None:
    """``redis_connect_func`` of the tower's connections: the usual hand-shake, then
    ``CLIENT NO-EVICT on``, so that Redis's client eviction (``maxmemory-clients``),
    which bounds what any agent can make Redis hold, never picks the tower's own
    connections (under a flood its subscriber is the biggest client). Servers before
    7.0 have no such command: ignored."""
    connection.on_connect()
    try:
        connection.send_command("CLIENT", "NO-EVICT", "on")
        connection.read_response()
    except redis.exceptions.ResponseError:
        pass


class _SentinelClient(aioredis.Redis):
    """A client of a Sentinel-managed primary that closes its Sentinel connections too."""
    sentinel: AsyncSentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel is not None:
            await self.sentinel.aclose()


def connect_async(url: str, tls: Mapping[str, str] | None = None,
                  **options: Any) -> aioredis.Redis:
    """An asyncio client for a redis://, rediss:// (``tls``: redis-py's ``ssl_*`` options,
    used with rediss:// only), unix:// or redis+sentinel:// URL (the primary the
    Sentinels name, followed across failovers). ``options`` go to every connection."""
    if is_sentinel_url(url):
        target = parse_sentinel_url(url)
        sentinel = AsyncSentinel(target.sentinels, sentinel_kwargs=target.sentinel_kwargs())
        client = sentinel.master_for(target.master, redis_class=_SentinelClient, **options,
                                     **target.master_kwargs())
        client.sentinel = sentinel
        return client
    if url.startswith("rediss://"):
        options.update(tls or {})
    return aioredis.Redis.from_url(url, **options)

"""Connecting to Redis from a URL (redis://, rediss:// with TLS files, unix://,
redis+sentinel:// for a Sentinel-managed primary and redis+cluster:// for a Redis
Cluster), for the tower (``connect``, blocking) and the agent (``connect_async``,
asyncio) alike.

    redis+cluster://[user:password@]host1:port1[,host2:port2...]

names some nodes of a cluster (any of them; the clients learn the rest). The tower talks
to it through redis-py's ``RedisCluster``. The agent does not: it needs one shard only
(every key and channel of its zone is in one slot), follows the ``MOVED`` its zone's
keys answer and connects to that node with a plain client (``node_url``); its Redis user
needs no ``CLUSTER`` rights for that.

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
from urllib.parse import parse_qs, quote, unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from .errors import InvalidInput

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
CLUSTER_SCHEME = "redis+cluster"
REDIS_PORT = 6379
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


@dataclass(frozen=True)
class ClusterURL:
    nodes: tuple[tuple[str, int], ...]      # seeds: any nodes of the cluster
    username: str | None = None
    password: str | None = None

    def node_url(self, host: str, port: int) -> str:
        """A redis:// URL of one node with these credentials (the agent's shard)."""
        auth = ""
        if self.username or self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password or '', safe='')}@"
        return f"redis://{auth}{_bracket(host)}:{port}/0"


def is_cluster_url(url: str) -> bool:
    return url.startswith(f"{CLUSTER_SCHEME}://") or url.startswith("rediss+cluster://")


def parse_cluster_url(url: str) -> ClusterURL:
    """Parse the redis+cluster:// form; errors never repeat the URL (it may hold a password)."""
    parts = urlsplit(url)
    if parts.scheme == "rediss+cluster":
        raise InvalidInput("TLS to a Redis Cluster (rediss+cluster://) is not supported yet")
    if parts.scheme != CLUSTER_SCHEME:
        raise InvalidInput(f"a cluster URL starts with {CLUSTER_SCHEME}://")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, has_password, password = userinfo.partition(":")
    nodes = tuple(_host_port(h, "cluster", REDIS_PORT) for h in hosts.split(",") if h.strip())
    if not nodes:
        raise InvalidInput("a cluster URL needs at least one host:port")
    if parts.path not in ("", "/", "/0"):
        raise InvalidInput("a Redis Cluster has database 0 only: a cluster URL has no path")
    if parts.query:
        raise InvalidInput("a cluster URL takes no parameters")
    return ClusterURL(nodes, unquote(user) or None, unquote(password) if has_password else None)


def check_url(url: str) -> str:
    """``url`` if it has the form of a URL ``connect`` takes (the command lines' check,
    before anything connects); InvalidInput otherwise. "" passes (no URL given). Errors
    never repeat the URL (it may hold a password)."""
    if not url:
        return url
    if is_sentinel_url(url):
        parse_sentinel_url(url)
    elif is_cluster_url(url):
        parse_cluster_url(url)
    else:
        try:
            scheme = urlsplit(url).scheme
        except ValueError:
            raise InvalidInput("malformed Redis URL") from None
        if scheme not in ("redis", "rediss", "unix"):
            raise InvalidInput("a Redis URL starts with redis://, rediss://, unix://, "
                               f"{SENTINEL_SCHEME}:// or {CLUSTER_SCHEME}://")
    return url


def is_cluster(client: Any) -> bool:
    """A client of a Redis Cluster (redis-py's ``RedisCluster``)? The tower's messages
    to agents then travel on sharded pub/sub (``publish``)."""
    return isinstance(client, RedisCluster)


class ClusterNodes:
    """Plain clients of every node of a Redis Cluster, primaries and replicas (what
    redis-py's ``RedisCluster`` routes to is the primaries): ACL users live per node,
    and a replica promoted must have them already. Nodes come from ``CLUSTER NODES``,
    so a primary without slots and a node that joined since are found too; nodes the
    cluster marks failing are left out."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self._clients: dict[str, redis.Redis] = {}

    def ids(self) -> dict[str, str]:
        """address ("host:port") -> node id of every node not marked failing."""
        nodes = self.cluster.cluster_nodes()
        return {address: info["node_id"] for address, info in nodes.items()
                if "fail" not in info["flags"] and "noaddr" not in info["flags"]}

    def client(self, address: str) -> redis.Redis:
        client = self._clients.get(address)
        if client is None:
            host, _, port = address.rpartition(":")
            kwargs = self.cluster.get_nodes()[0].redis_connection.connection_pool.connection_kwargs
            client = self._clients[address] = redis.Redis(
                host=host.strip("[]"), port=int(port), username=kwargs.get("username"),
                password=kwargs.get("password"), decode_responses=True, socket_timeout=5,
                socket_connect_timeout=5)
        return client

    def clients(self) -> list[redis.Redis]:
        return [self.client(address) for address in self.ids()]


def publish_command(sharded: bool) -> str:
    """``SPUBLISH`` on a Redis Cluster: a message reaches the shard of its channel's slot
    only, not every node of the cluster (``PUBLISH`` does that, over the cluster bus)."""
    return "SPUBLISH" if sharded else "PUBLISH"


def publish(target: Any, channel: str, message: str | bytes, sharded: bool) -> Any:
    """Publish on a client or pipeline, sharded (``SPUBLISH``) or classic."""
    return (target.spublish if sharded else target.publish)(channel, message)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _host_port(text: str, kind: str = "Sentinel", default: int = SENTINEL_PORT) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    if not host:
        raise InvalidInput(f"empty host in a {kind} URL")
    if not port:
        return host, default
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidInput(f"a port in a {kind} URL must be 1-65535")
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
    if is_cluster_url(url):
        cluster = parse_cluster_url(url)
        # RedisCluster sets up each node's connection itself (its own connect function).
        options.pop("redis_connect_func", None)
        try:
            return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in cluster.nodes],
                                username=cluster.username, password=cluster.password,
                                **options)
        except redis.exceptions.RedisClusterException as exc:
            raise redis.exceptions.ConnectionError(f"no node of the Redis Cluster answered "
                                                   f"({exc})") from None
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
    Sentinels name, followed across failovers). ``options`` go to every connection.
    A redis+cluster:// URL gives a client of its first node: the agent follows the
    MOVED of its zone's keys from there (``ClusterURL.node_url``)."""
    if is_cluster_url(url):
        cluster = parse_cluster_url(url)
        return aioredis.Redis.from_url(cluster.node_url(*cluster.nodes[0]), **options)
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

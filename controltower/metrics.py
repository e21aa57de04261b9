"""Prometheus metrics of the ControlTower, served at ``GET /metrics`` by the API.

A replica is one ``serve`` process (the request worker) plus its gunicorn workers (the
API). ``serve`` points all of them at one fresh prometheus-client multiprocess
directory, so a scrape of ``/metrics``, whichever gunicorn worker answers it, sums the
counters and histograms of the whole replica: registrations and publish latency from
the request worker, API latency from every API worker. Zone gauges (peers, online
nodes, request-stream lag and pending entries) are read from Redis at scrape time and
are the same on every replica. Without ``serve`` (tests, an embedded app) metrics are
per process, in the default registry.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import redis
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter,
                               Histogram, generate_latest, values)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ipam.store import ZoneStore
from wire.keys import REQUEST_GROUP

from . import pathmatrix

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REGISTRATION_RESULTS = ("ok", "invalid", "not-found", "conflict", "forbidden", "error")
_M = TypeVar("_M")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def use_directory(path: Path) -> None:
    """Write this process's metrics to ``path`` (prometheus-client multiprocess mode);
    children started afterwards inherit it. Call before the first metric is created."""
    if _created:
        raise RuntimeError("metrics were created before the multiprocess directory was set")
    os.environ[MULTIPROC_ENV] = str(path)
    values.ValueClass = values.get_value_class()


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class WorkerMetrics:
    """Counted by the request worker."""

    def __init__(self) -> None:
        self.registrations = Counter(
            "controltower_registrations", "Register requests handled, by result "
            "(ok, or the refusal code)", ["result"])
        for result in REGISTRATION_RESULTS:
            self.registrations.labels(result)
        self.publish_latency = Histogram(
            "controltower_publish_latency_seconds", "From a zone change being logged to "
            "its publication on the zone channel", buckets=LATENCY_BUCKETS)
        self.unreplicated = Counter(
            "controltower_unreplicated_replies", "Redis Cluster: chunks of replies sent "
            "although no replica confirmed their writes (WAIT) within 2 s")


class GateMetrics:
    """Counted by the gate (controltower/gate.py)."""

    def __init__(self) -> None:
        self.admitted = Counter("controltower_gate_admitted", "Requests the gate admitted "
                                "into a zone's request stream")
        self.dropped = Counter("controltower_gate_dropped", "Messages the gate did not admit, "
                               "by why (drop: over the rate, suspend: flood, invalid, refused)",
                               ["reason"])
        self.suspensions = Counter("controltower_gate_suspensions", "Senders suspended for "
                                   "flooding the tower")
        self.enrollments = Counter("controltower_enrollments", "Enrollment requests, by result",
                                   ["result"])


class ApiMetrics:
    """Counted by the Flask app, per route template."""

    def __init__(self) -> None:
        self.requests = Counter("controltower_http_requests", "REST API requests",
                                ["method", "endpoint", "status"])
        self.latency = Histogram("controltower_http_request_duration_seconds",
                                 "REST API request latency", ["method", "endpoint"])


class RelayMetrics:
    """Counted by a relay (in ``serve`` or ``controltower relay``)."""

    def __init__(self) -> None:
        from prometheus_client import Gauge
        self.packets = Counter("controltower_relay_packets", "WireGuard datagrams relayed, "
                               "by data path (kernel, python)", ["datapath"])
        self.bytes = Counter("controltower_relay_bytes", "Bytes of WireGuard datagrams "
                             "relayed, by data path", ["datapath"])
        self.handshakes = Counter("controltower_relay_handshakes", "WireGuard handshakes the "
                                  "relay checked and routed")
        self.refused = Counter("controltower_relay_refused", "Datagrams the relay refused or "
                               "dropped, by reason", ["reason"])
        self.bindings = Gauge("controltower_relay_bindings", "Nodes bound to the relay",
                              multiprocess_mode="livesum")
        self.pairs = Gauge("controltower_relay_pairs", "Pairs with live routes through the "
                           "relay", multiprocess_mode="livesum")
        for path in ("kernel", "python"):
            self.packets.labels(path)
            self.bytes.labels(path)


_created: dict[type, object] = {}


def _once(cls: type[_M]) -> _M:
    """The process's one instance of a metrics group (created at first use)."""
    if cls not in _created:
        _created[cls] = cls()
    return _created[cls]  # type: ignore[return-value]


def relay() -> RelayMetrics:
    return _once(RelayMetrics)


def gate() -> GateMetrics:
    return _once(GateMetrics)


def worker() -> WorkerMetrics:
    return _once(WorkerMetrics)


def api() -> ApiMetrics:
    return _once(ApiMetrics)


class ZoneCollector(Collector):
    """Per-zone gauges read from Redis at scrape time."""

    def __init__(self, store: ZoneStore, offline_after: float) -> None:
        self.store = store
        self.offline_after = offline_after

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("controltower_redis_up", "1 when the zone store answered "
                               "this scrape")
        try:
            families = self._zones()
        except redis.exceptions.RedisError as exc:
            log.warning("metrics: cannot read the zones from Redis: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _zones(self) -> list[Metric]:
        keys = self.store.keys
        zones = self.store.zone_names()
        now = time.time()
        with self.store.redis.pipeline(transaction=False) as pipe:
            for zone in zones:
                pipe.hlen(keys.peers(zone))
                pipe.zcount(keys.seen(zone), now - self.offline_after, "+inf")
                pipe.xinfo_groups(keys.requests(zone))
                pipe.hvals(keys.paths(zone))
                pipe.get(keys.policy(zone))
                pipe.hvals(keys.fwstate(zone))
            results = pipe.execute(raise_on_error=False)
        peers = GaugeMetricFamily("controltower_zone_peers", "Peers registered in the zone",
                                  labels=["zone"])
        online = GaugeMetricFamily("controltower_zone_online_nodes", "Peers heard from "
                                   "within --offline-after", labels=["zone"])
        lag = GaugeMetricFamily("controltower_request_stream_lag", "Requests in the zone's "
                                "stream not yet delivered to any replica", labels=["zone"])
        pending = GaugeMetricFamily("controltower_request_stream_pending", "Requests "
                                    "delivered to a replica and not yet acknowledged",
                                    labels=["zone"])
        paths = GaugeMetricFamily("controltower_zone_paths", "Peer paths the zone's nodes "
                                  "reported within 60 s, by path (direct, relayed, down); a "
                                  "pair counts once per side that reported it",
                                  labels=["zone", "path"])
        policy_nodes = GaugeMetricFamily(
            "controltower_policy_nodes", "Nodes by the state of their policy rules, as their "
            "heartbeats said (behind: applied, but an older policy)", labels=["zone", "state"])
        for i, zone in enumerate(zones):
            n_peers, n_online, groups, reports, policy, states = results[6 * i:6 * i + 6]
            if isinstance(reports, list):
                for path, n in pathmatrix.reported(reports, now).items():
                    paths.add_metric([zone, path], n)
            for state, count in _policy_states(policy, states).items():
                policy_nodes.add_metric([zone, state], count)
            if isinstance(n_peers, int):
                peers.add_metric([zone], n_peers)
            if isinstance(n_online, int):
                online.add_metric([zone], n_online)
            group = _group(groups)
            if group is not None:
                pending.add_metric([zone], group.get("pending") or 0)
                if group.get("lag") is not None:   # unknown after some stream deletions
                    lag.add_metric([zone], group["lag"])
        return [peers, online, lag, pending, paths, policy_nodes]


def _policy_states(policy: object, states: object) -> dict[str, int]:
    """Counts of the nodes' reported policy states; 'behind': applied below the zone's
    policy revision."""
    if not isinstance(states, list):
        return {}
    try:
        rev = json.loads(policy)["rev"] if isinstance(policy, str) else None
    except (ValueError, KeyError, TypeError):
        rev = None
    counts = {"applied": 0, "behind": 0, "failed": 0, "closed": 0, "none": 0}
    for raw in states:
        try:
            state = json.loads(raw)
        except (ValueError, TypeError):
            continue
        name = state.get("state")
        if name == "applied" and rev is not None and (state.get("rev") or 0) < rev:
            name = "behind"
        if name in counts:
            counts[name] += 1
    return counts




def _group(groups: object) -> dict | None:
    if isinstance(groups, Exception) or not isinstance(groups, list):
        return None
    return next((g for g in groups if g.get("name") == REQUEST_GROUP), None)


class _Registered(Collector):
    """Everything in one existing registry (this process's metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def exposition(store: ZoneStore, offline_after: float) -> tuple[bytes, str]:
    """The text exposition of this replica (or process) plus the zone gauges."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess():
        MultiProcessCollector(registry)
    else:
        registry.register(_Registered(REGISTRY))
    registry.register(ZoneCollector(store, offline_after))
    return generate_latest(registry), CONTENT_TYPE_LATEST

"""The agent's optional Prometheus endpoint (``--metrics-port``).

Values are read at scrape time: the zone from the agent's mirror, the peers' handshakes
and byte counters from the device. Device calls run on the agent's device thread (see
``Agent.read_device``), never on the HTTP server's.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger(__name__)


class AgentCollector(Collector):
    def __init__(self, agent: "Agent", device_timeout: float = 5.0) -> None:
        self.agent = agent
        self.device_timeout = device_timeout

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        zone_peers = GaugeMetricFamily("aircrew_zone_peers", "Other nodes in the zone, as "
                                       "this agent knows it")
        zone_peers.add_metric([], sum(1 for key in list(agent.mirror.peers)
                                      if key != agent.public_key))
        yield zone_peers
        revision = GaugeMetricFamily("aircrew_zone_revision", "Zone revision applied")
        revision.add_metric([], agent.mirror.rev)
        yield revision
        resyncs = CounterMetricFamily("aircrew_resyncs", "Zone snapshots read (the first "
                                      "one at start included)")
        resyncs.add_metric([], agent.resyncs)
        yield resyncs
        up = GaugeMetricFamily("aircrew_device_up", "1 when the WireGuard device could be read")
        try:
            state = agent.read_device(self.device_timeout)
        except Exception as exc:  # noqa: BLE001 - no device yet, or it is gone
            log.debug("metrics: cannot read the device: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        peers = GaugeMetricFamily("aircrew_device_peers", "Peers configured on the device")
        peers.add_metric([], len(state.peers))
        yield peers
        age = GaugeMetricFamily("aircrew_peer_handshake_age_seconds", "Seconds since the "
                                "last handshake with a peer (peers never met are left out)",
                                labels=["peer"])
        rx = CounterMetricFamily("aircrew_peer_receive_bytes", "Bytes received from a peer",
                                 labels=["peer"])
        tx = CounterMetricFamily("aircrew_peer_transmit_bytes", "Bytes sent to a peer",
                                 labels=["peer"])
        now = time.time()
        for key in sorted(state.peers):
            stats = state.stats.get(key)
            if stats is None:
                continue
            if stats.last_handshake:
                age.add_metric([key], max(0.0, now - stats.last_handshake))
            rx.add_metric([key], stats.rx_bytes)
            tx.add_metric([key], stats.tx_bytes)
        yield age
        yield rx
        yield tx


def serve(agent: "Agent", port: int, host: str = "127.0.0.1"):
    """Start the endpoint in a daemon thread; returns the server (``shutdown()`` stops it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    server, _thread = start_http_server(port, host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", f"[{host}]" if ":" in host else host,
             server.server_port)
    return server

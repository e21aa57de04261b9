"""``controltower relay``: a relay alone on a public host, announced in the towers' Redis."""
from __future__ import annotations

import logging
import re
import signal
import threading
from pathlib import Path

from wire.errors import InvalidInput
from wire.keys import Keys
from wire.messages import zone_name
from wire.redisconn import connect

from .server import make_relay, relay_key

log = logging.getLogger(__name__)

_REGION_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidInput(f"--listen {text!r} is not address:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_zones(text: str) -> tuple[str, ...]:
    if text.strip() == "*":
        return ("*",)
    zones = tuple(zone_name(z.strip()) for z in text.split(",") if z.strip())
    if not zones:
        raise InvalidInput("--zones names no zone")
    return zones


def run_relay(*, region: str, redis_url: str, listen: str, public_address: str | None,
              zones: str, data_dir: Path, datapath: str, metrics_port: int,
              key_prefix: str) -> int:
    if not _REGION_RE.match(region):
        raise InvalidInput("--region must be 1-32 lower-case letters, digits or '-'")
    host, port = parse_listen(listen)
    served = parse_zones(zones)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    metrics = None
    if metrics_port:
        from prometheus_client import start_http_server
        from .. import metrics as tower_metrics
        metrics = tower_metrics.relay()
        start_http_server(metrics_port)
    announced = public_address or (None if host in ("0.0.0.0", "::") else host)
    if announced is None:
        raise InvalidInput("give --public-address: agents must know where this relay is")
    relay = make_relay(connect(redis_url), Keys(key_prefix), relay_key(data_dir),
                       region=region, host=announced, listen=host, port=port, zones=served,
                       datapath=datapath, metrics=metrics)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    relay.start()
    log.info("relay %s serving %s", relay.directory.record.id, ", ".join(served))
    try:
        stop.wait()
    finally:
        relay.stop()
    return 0

"""What a running worker and tower log under hostile or ordinary events: bounded, one
line each, with time, level and logger (issue 15, item 10)."""
from __future__ import annotations

import logging
import re
import threading
import time

import pytest

from controltower.worker import RequestWorker
from ipam.store import ZoneStore
from wire.keys import REQUEST_GROUP


@pytest.fixture
def running_worker(redis_client):
    store = ZoneStore(redis_client)
    store.ensure_default_zone()
    worker = RequestWorker(store, zone_refresh=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    yield store, worker
    stop.set()
    thread.join(10)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_50000_junk_requests_cost_a_few_log_lines(running_worker, redis_client, caplog):
    caplog.set_level(logging.INFO)
    store, worker = running_worker
    stream = store.keys.requests("default")
    with redis_client.pipeline(transaction=False) as pipe:
        for n in range(50_000):
            pipe.xadd(stream, {"m": f"junk{n}"})
        pipe.execute()
    wait_until(lambda: redis_client.xlen(stream) == 0, 120, "the worker to drop the junk")
    worker.throttle.flush()
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("controltower"))
    assert len(text) < 20_000, text[:2000]
    assert "more malformed requests dropped on zone default" in text


def test_deleting_zones_under_a_blocked_read_is_no_error(running_worker, caplog):
    caplog.set_level(logging.INFO)
    store, worker = running_worker
    for n in range(5):
        store.create_zone(f"gone{n}", "10.9.0.0/24")
        time.sleep(0.5)                           # the worker blocks on its stream now
        store.delete_zone(f"gone{n}")
        time.sleep(0.3)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                  r"[\w.]+: ")


def test_every_line_of_the_tower_and_its_api_workers_has_time_level_and_logger(tower_proc):
    tower_proc.request("POST", "/zones", {"Name": "fmt", "CIDR": "10.9.0.0/24"})
    tower_proc.stop()
    lines = [line for line in tower_proc.log_text().splitlines() if line.strip()]
    assert any("gunicorn.error: Booting worker" in line for line in lines)
    bad = [line for line in lines if not LINE.match(line)]
    assert bad == [], bad[:5]


def test_refusals_of_the_gate_from_many_senders_cost_a_few_log_lines(redis_client, caplog):
    """Requests with a wrong proof from 500 node ids (each its own sender, under the
    gate's per-sender rate): a few lines and a summary, not 500."""
    from controltower import towerkey
    from controltower.gate import Gate
    from wire import messages
    from wire.keys import node_id
    from wire.proof import generate_private_key, public_key_of

    caplog.set_level(logging.INFO)
    store = ZoneStore(redis_client)
    store.ensure_default_zone()
    private, _ = towerkey.load_or_create(redis_client, store.keys)
    gate = Gate(store, lambda: redis_client, private, None)
    batch = []
    for _ in range(500):
        key = public_key_of(generate_private_key())
        request = messages.Request("heartbeat", "default", key)
        batch.append({"channel": store.keys.request_channel("default", node_id(key)),
                      "data": request.packed(generate_private_key(), public_key_of(private))})
    gate.handle(batch)
    gate.throttle.flush()
    lines = [r.getMessage() for r in caplog.records if r.name == "controltower.gate"]
    assert 10 <= len(lines) <= 12, lines[:3]
    assert "... and 490 more" in lines[-1]

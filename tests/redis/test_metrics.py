"""/ready, the tower's /metrics (in process and across a replica's processes) and the
agent's metrics endpoint."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from aircrew import metrics as agent_metrics
from aircrew.agent import Agent, AgentSettings
from aircrew.device import PeerConfig, PeerStats, RecordingDevice
from aircrew.endpoint import StaticEndpoint
from aircrew.session import TowerRefused, TowerSession
from aircrew.state import StateFiles
from controltower.app import create_app
from controltower.serve import new_run_dir
from controltower.worker import RequestWorker
from testbed.redisserver import free_port
from testbed.tower import TowerProcess
from wire.proof import generate_private_key, public_key_of

REGISTER = {"listen_port": 51820, "endpoint": "203.0.113.7:51820"}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def worker(app):
    worker = RequestWorker(app.extensions["zone_store"], publish_window=0.005,
                           zone_refresh=0.2, heartbeat_ttl=2.0)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    assert worker.running.wait(10)
    yield worker
    stop.set()
    thread.join(10)


async def register(port: int, bodies: list[dict]) -> list:
    client = aioredis.Redis(port=port, decode_responses=True)
    out = []
    try:
        for body in bodies:
            session = TowerSession(client, "default", generate_private_key())
            await session.open()
            try:
                out.append(await session.request("register", body, timeout=5))
            except TowerRefused as exc:
                out.append(exc)
            finally:
                await session.close()
    finally:
        await client.aclose()
    return out


def test_ready_follows_the_worker_heartbeat(app, redis_proc):
    client = app.test_client()
    assert client.get("/health").status_code == 200
    r = client.get("/ready")
    assert r.status_code == 503 and r.json == {"error": "no request worker is running"}
    worker = RequestWorker(app.extensions["zone_store"], zone_refresh=0.2, heartbeat_ttl=2.0)
    app.config["WORKER_ID"] = worker.consumer
    assert client.get("/ready").json == {
        "error": "the request worker of this replica is not running"}
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert worker.running.wait(10)
        assert client.get("/ready").status_code == 200
        assert client.get("/ready").json == {"status": "ready"}
        del app.config["WORKER_ID"]                      # any worker will do
        assert client.get("/ready").status_code == 200
        app.config["WORKER_ID"] = "another-replica"
        assert client.get("/ready").status_code == 503
        app.config["WORKER_ID"] = worker.consumer
    finally:
        stop.set()
        thread.join(10)
    assert client.get("/ready").status_code == 503        # a stopping worker says so


def test_a_silent_worker_is_not_ready_after_its_ttl(app, redis_client):
    worker = RequestWorker(app.extensions["zone_store"], heartbeat_ttl=2.0, zone_refresh=0.1)
    app.config["WORKER_ID"] = worker.consumer
    worker.step()                                        # one beat, then silence (hung)
    client = app.test_client()
    assert client.get("/ready").status_code == 200
    deadline = time.monotonic() + 6
    while client.get("/ready").status_code == 200:
        assert time.monotonic() < deadline, "the heartbeat did not expire"
        time.sleep(0.1)
    assert redis_client.ttl(f"ct:tower:worker:{worker.consumer}") == -2


def test_metrics_count_registrations_zones_and_api_latency(app, worker, redis_proc):
    client = app.test_client()
    before = client.get("/metrics").get_data(as_text=True)
    replies = asyncio.run(register(redis_proc.port, [
        dict(REGISTER, request_ip="10.200.0.9"), REGISTER, dict(REGISTER, request_ip="10.200.0.9"),
        {"listen_port": "x"}]))
    assert [type(r).__name__ for r in replies] == ["dict", "dict", "TowerRefused", "TowerRefused"]
    client.get("/zones")
    client.get("/zones/nope")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.content_type.startswith("text/plain")
    after = r.get_data(as_text=True)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("controltower_registrations_total", result="ok") == 2
    assert delta("controltower_registrations_total", result="conflict") == 1
    assert delta("controltower_registrations_total", result="invalid") == 1
    assert delta("controltower_publish_latency_seconds_count") >= 1
    assert value(after, "controltower_redis_up") == 1
    assert value(after, "controltower_zone_peers", zone="default") == 2
    assert value(after, "controltower_zone_online_nodes", zone="default") == 2
    assert value(after, "controltower_request_stream_pending", zone="default") == 0
    assert value(after, "controltower_request_stream_lag", zone="default") == 0
    assert delta("controltower_http_request_duration_seconds_count",
                 method="GET", endpoint="/zones") == 1
    assert delta("controltower_http_requests_total", method="GET",
                 endpoint="/zones/<name>", status="404") == 1


def test_stream_lag_and_pending_show_requests_nobody_handled(app, redis_client):
    from wire.keys import REQUEST_GROUP
    store = app.extensions["zone_store"]
    stream = store.keys.requests("default")
    for _ in range(3):
        redis_client.xadd(stream, {"m": "{}"})
    redis_client.xreadgroup(REQUEST_GROUP, "stuck-replica", {stream: ">"}, count=1)
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert value(text, "controltower_request_stream_lag", zone="default") == 2
    assert value(text, "controltower_request_stream_pending", zone="default") == 1


def test_metrics_and_ready_without_redis():
    app = create_app({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "TESTING": True,
                      "INSECURE_OPEN_API": True})
    client = app.test_client()
    r = client.get("/metrics")
    assert r.status_code == 200
    assert value(r.get_data(as_text=True), "controltower_redis_up") == 0
    r = client.get("/ready")
    assert r.status_code == 503 and "unreachable" in r.json["error"]
    assert client.get("/health").status_code == 503


@pytest.mark.slow
def test_a_replica_metrics_sum_its_processes(redis_proc, tmp_path):
    """Registrations are counted in the serve process, API calls in two gunicorn
    workers: every scrape, whichever worker answers it, reports the whole replica."""
    tower = TowerProcess(redis_proc.url, tmp_path / "tower", extra=["--stun-port", "0"]).start()
    try:
        deadline = time.monotonic() + 10
        while tower.get("/ready")[0] != 200:
            assert time.monotonic() < deadline, tower.log_text()[-2000:]
            time.sleep(0.1)
        replies = asyncio.run(register(redis_proc.port, [REGISTER] * 3))
        assert all(isinstance(r, dict) for r in replies)
        for _ in range(12):
            assert tower.get("/zones")[0] == 200
        for _ in range(6):
            with urllib.request.urlopen(tower.api + "/metrics", timeout=10) as resp:
                text = resp.read().decode()
            assert value(text, "controltower_registrations_total", result="ok") == 3
            assert value(text, "controltower_http_requests_total", method="GET",
                         endpoint="/zones", status="200") == 12
            assert value(text, "controltower_zone_peers", zone="default") == 3
    finally:
        tower.stop()
    assert "Traceback" not in tower.log_text(), tower.log_text()[-3000:]


class _Links:
    def set_address(self, address: str, prefix_len: int) -> None: ...
    def up(self) -> None: ...
    def routes(self) -> set[str]:
        return set()
    def add_route(self, prefix: str) -> None: ...
    def remove_route(self, prefix: str) -> None: ...


class _ThreadCheckingDevice(RecordingDevice):
    def __init__(self) -> None:
        super().__init__()
        self.read_threads: set[str] = set()

    def read(self):
        self.read_threads.add(threading.current_thread().name)
        return super().read()


def test_agent_metrics_endpoint(tmp_path):
    settings = AgentSettings(zone="default", private_key=generate_private_key(),
                             controller_urls=["redis://127.0.0.1:1/0"])
    device = _ThreadCheckingDevice()
    agent = Agent(settings, device, _Links(), StaticEndpoint("198.51.100.1", 51820),
                  StateFiles(tmp_path, "wg0"))
    met, never = public_key_of(generate_private_key()), public_key_of(generate_private_key())
    device.create()
    for key in (met, never):
        device.state.peers[key] = PeerConfig(key, None, ("10.200.0.2/32",))
    device.state.stats[met] = PeerStats(time.time() - 42, rx_bytes=1000, tx_bytes=2000)
    device.state.stats[never] = PeerStats()
    agent.resyncs = 3
    server = agent_metrics.serve(agent, 0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        device.created = False                            # the device is gone
        device.read = lambda: (_ for _ in ()).throw(OSError("no such device"))
        with urllib.request.urlopen(url, timeout=10) as resp:
            gone = resp.read().decode()
    finally:
        server.shutdown()
        agent._device_thread.shutdown(wait=False)
    assert value(text, "aircrew_device_up") == 1
    assert value(text, "aircrew_device_peers") == 2
    assert 41 <= value(text, "aircrew_peer_handshake_age_seconds", peer=met) < 60
    assert ("aircrew_peer_handshake_age_seconds", (("peer", never),)) not in samples(text)
    assert value(text, "aircrew_peer_receive_bytes_total", peer=met) == 1000
    assert value(text, "aircrew_peer_transmit_bytes_total", peer=met) == 2000
    assert value(text, "aircrew_resyncs_total") == 3
    assert device.read_threads and all(n.startswith("device") for n in device.read_threads)
    assert value(gone, "aircrew_device_up") == 0 and value(gone, "aircrew_resyncs_total") == 3


def test_run_dirs_of_dead_towers_are_swept():
    dead = subprocess.Popen(["true"])
    dead.wait()
    tmp = Path(tempfile.gettempdir())
    stale = tmp / f"controltower-{dead.pid}-test"
    live = tmp / "controltower-1-test"                     # pid 1 is always there
    made = []
    try:
        for d in (stale, live):
            (d / "metrics").mkdir(parents=True)
        made = [new_run_dir()]
        assert not stale.exists() and live.exists()
        assert made[0].name.startswith(f"controltower-{os.getpid()}-")
    finally:
        for d in (stale, live, *made):
            shutil.rmtree(d, ignore_errors=True)

"""The agent against a controller that is not one, or a zone whose request stream is
broken: one line and an exit, or one line per retry while tunnels stay up; never a
traceback (issue 15, item 8)."""
from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

from testbed.redisserver import free_port
from wire.proof import generate_private_key


def agent(tmp_path, controller: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    key = tmp_path / "private.key"
    key.write_text(generate_private_key() + "\n")
    key.chmod(0o600)
    argv = [sys.executable, "-m", "aircrew", "--controller", controller,
            "--private-key-file", str(key), "--local-endpoint-ip", "192.0.2.5",
            "--state-dir", str(tmp_path / "state"), "--interface", f"wgt{os.getpid() % 10000}",
            "--listen-port", str(free_port()), *extra]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})


def test_an_http_port_as_controller_is_one_line(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        proc = agent(tmp_path, f"127.0.0.1:{server.server_address[1]}")
        out, _ = proc.communicate(timeout=60)
    finally:
        server.shutdown()
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    assert "does not speak the Redis protocol" in out and "HTTP port" in out
    assert len(out.splitlines()) <= 3, out


def test_a_broken_request_stream_is_retried_with_one_line_each(tmp_path, tower_proc, redis_proc):
    client = redis_proc.client()
    client.xadd("ct:{default}:requests", {"m": "x"},
                id="18446744073709551615-18446744073709551615")
    secret = (tower_proc.data_dir / "default-zone-secret").read_text().strip()
    proc = agent(tmp_path, f"127.0.0.1:{redis_proc.port}",
                 env={"AIRCREW_CONTROLLER_PASSWORD": secret})
    time.sleep(8)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert "Traceback" not in out, out[-3000:]
    assert "request stream refuses requests" in out
    assert proc.returncode == 0, out[-2000:]


def test_a_node_restarted_in_an_outage_waits_for_the_tower_to_apply_its_users(tmp_path, redis_proc):
    """A tower that has just started refuses every node user until it has applied them. A
    node holding a credential the tower issued keeps retrying then; it does not stop."""
    state = tmp_path / "state"
    state.mkdir()
    credential = state / f"wgt{os.getpid() % 10000}-credential.json"
    credential.write_text(json.dumps({"zone": "default", "user": "ct-node-unknown",
                                      "password": "not-applied-yet"}))
    credential.chmod(0o600)
    redis_proc.client().config_set("requirepass", "only-the-tower-knows")   # no users yet
    proc = agent(tmp_path, f"127.0.0.1:{redis_proc.port}",
                 env={"AIRCREW_CONTROLLER_PASSWORD": "zone-secret-not-applied-yet"})
    try:
        proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        pass
    running = proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert running, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    assert "a tower starting up does so until it has applied its users" in out, out[-2000:]
    assert proc.returncode == 0, out[-2000:]

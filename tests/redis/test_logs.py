"""Log formats, and the request id that follows a registration from agent to tower."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import time

import pytest

from aircrew.agent import Agent, AgentSettings
from aircrew.device import RecordingDevice
from aircrew.endpoint import StaticEndpoint
from aircrew.state import StateFiles
from testbed.tower import TowerProcess
from wire import logs
from wire.proof import generate_private_key, public_key_of


def record(message: str, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("controltower.worker", logging.INFO, __file__, 1, message, (), None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_the_request_id_when_known():
    fmt = logs.JsonFormatter()
    plain = json.loads(fmt.format(record("hello \"world\"\nsecond line")))
    assert set(plain) == {"time", "level", "logger", "message"}
    assert (plain["level"], plain["logger"]) == ("INFO", "controltower.worker")
    assert plain["message"] == "hello \"world\"\nsecond line"
    assert plain["time"].endswith("+00:00")
    assert json.loads(fmt.format(record("x", request_id="r1")))["request_id"] == "r1"
    token = logs.request_id.set("r2")
    try:
        assert json.loads(fmt.format(record("x")))["request_id"] == "r2"
    finally:
        logs.request_id.reset(token)
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record("failed")
        rec.exc_info = sys.exc_info()
    line = fmt.format(rec)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exception"]


def test_agent_cli_json_logs(tmp_path):
    """The agent's own log lines are JSON with --log-format json (it stops early on a
    mismatching --public-key, after warning that the key was given on the command line)."""
    key = generate_private_key()
    proc = subprocess.run(
        [sys.executable, "-m", "aircrew", "--log-format", "json", "--private-key", key,
         "--public-key", public_key_of(generate_private_key()), "--controller", "127.0.0.1:1",
         "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert lines and lines[0]["level"] == "WARNING" and lines[0]["logger"] == "aircrew.config"
    assert key not in proc.stderr + proc.stdout


class _Links:
    def set_address(self, address: str, prefix_len: int) -> None: ...
    def up(self) -> None: ...
    def routes(self) -> set[str]:
        return set()
    def add_route(self, prefix: str) -> None: ...
    def remove_route(self, prefix: str) -> None: ...


@pytest.mark.slow
def test_request_id_follows_a_registration_from_agent_to_tower(redis_proc, tmp_path):
    tower = TowerProcess(redis_proc.url, tmp_path / "tower",
                         extra=["--stun-port", "0", "--log-format", "json"]).start()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    agent_log = logging.getLogger("aircrew")
    old_level = agent_log.level
    agent_log.addHandler(handler)
    agent_log.setLevel(logging.INFO)
    settings = AgentSettings(zone="default", private_key=generate_private_key(),
                             controller_urls=[redis_proc.url], hostname="logtest")
    agent = Agent(settings, RecordingDevice(), _Links(), StaticEndpoint("198.51.100.9", 51820),
                  StateFiles(tmp_path / "agent", "wg0"))

    async def run_until_registered() -> None:
        task = asyncio.create_task(agent.run())
        try:
            deadline = time.monotonic() + 20
            while agent.assignment is None or agent.resyncs == 0:
                assert not task.done(), task.exception()
                assert time.monotonic() < deadline, "the agent did not register"
                await asyncio.sleep(0.05)
        finally:
            agent.stop.set()
            await asyncio.wait_for(task, 10)

    try:
        asyncio.run(run_until_registered())
    finally:
        agent_log.removeHandler(handler)
        agent_log.setLevel(old_level)
        agent._device_thread.shutdown(wait=False)
        tower.stop()
    agent_lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    registered = [line for line in agent_lines if line["message"].startswith("registered in zone")]
    assert len(registered) == 1, agent_lines
    request_id = registered[0]["request_id"]
    assert f"(request {request_id})" in registered[0]["message"]
    tower_lines = [json.loads(line) for line in tower.log_text().splitlines() if line.startswith("{")]
    assert tower_lines and all({"time", "level", "logger", "message"} <= set(line)
                               for line in tower_lines)
    handled = [line for line in tower_lines if line.get("request_id") == request_id]
    assert [line["logger"] for line in handled] == ["controltower.worker"], tower_lines
    assert handled[0]["message"] == (f"registered {agent.public_key} in zone default at "
                                     f"{agent.assignment['address']} (request {request_id})")
    assert settings.private_key not in tower.log_text() + stream.getvalue()

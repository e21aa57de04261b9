"""`controltower serve` starting up: refused with one line when its set-up is unsafe or
impossible, never open by accident (issue 15: items 1, 6, 7, 11, 12, 15 and the start-up
failures found beside them)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from testbed.redisserver import free_port
from testbed.tower import TowerProcess


def serve(data_dir: Path, *args: str, timeout: float = 40, env: dict | None = None
          ) -> subprocess.CompletedProcess[str]:
    """Run `controltower serve` to its end (the cases here make it exit at start)."""
    argv = [sys.executable, "-m", "controltower", "serve", "--listen", "127.0.0.1",
            "--port", str(free_port()), "--redis-port", str(free_port()), "--stun-port", "0",
            "--data-dir", str(data_dir), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """The last line of stderr, which must be the error; no traceback anywhere."""
    assert result.returncode != 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), result.stderr[-2000:]
    for word in words:
        assert word in last, last
    return last


# -- item 1: an empty secret file is never "no secret" ---------------------------------------

@pytest.mark.parametrize("content", ["", "\n", "   \n\t\n"])
def test_an_empty_admin_token_file_is_refused(tmp_path, content):
    token = tmp_path / "token"
    token.write_text(content)
    result = serve(tmp_path / "data", "--admin-token-file", str(token))
    one_line_error(result, str(token), "is empty")
    assert "gunicorn" not in result.stderr.lower()         # no API worker was started


@pytest.mark.parametrize("name, what", [("redis-password", "Redis password file"),
                                        ("default-zone-secret", "default zone secret file")])
def test_an_empty_private_redis_or_zone_secret_file_is_refused(tmp_path, name, what):
    data = tmp_path / "data"
    data.mkdir()
    (data / name).write_text("")
    one_line_error(serve(data), what, "is empty")


def test_a_binary_admin_token_file_is_one_line(tmp_path):
    token = tmp_path / "token"
    token.write_bytes(b"\xff\xfe\x00secret")
    one_line_error(serve(tmp_path / "data", "--admin-token-file", str(token)),
                   "admin token file", "not UTF-8")


def test_the_admin_commands_token_variable_does_not_reach_the_api(tmp_path):
    """CONTROLTOWER_ADMIN_TOKEN (read by the admin commands) in serve's environment must
    not replace the token file of the API."""
    tower = TowerProcess(data_dir=tmp_path / "data",
                         extra=["--redis-port", str(free_port()), "--stun-port", "0"],
                         env={"CONTROLTOWER_ADMIN_TOKEN": "from-the-environment"}).start()
    try:
        status, _ = tower.request("DELETE", "/zones/default?force=true", auth=False,
                                  headers={"Authorization": "Bearer from-the-environment"})
        assert status == 403
        assert tower.request("GET", "/zones")[0] == 200          # the file's token works
    finally:
        tower.stop()

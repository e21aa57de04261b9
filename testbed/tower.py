"""A real ``controltower serve`` process on loopback, for tests and benchmarks.

Given a Redis URL it uses that Redis; without one the tower starts its own private
redis-server, as in production. The API listens on a free port; ``request`` calls it with
the tower's admin token.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .redisserver import free_port


class TowerProcess:
    def __init__(self, redis_url: str | None = None, data_dir: Path | None = None,
                 extra: list[str] | None = None, env: dict[str, str] | None = None,
                 ssl_context=None) -> None:
        self.redis_url = redis_url
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="ct-tower-"))
        self.port = free_port()
        self.extra = extra or []
        self.env = env or {}
        self.log_path = self.data_dir / "tower.log"
        self.proc: subprocess.Popen | None = None
        self.ssl_context = ssl_context  # given: the API is HTTPS, checked with this context

    @property
    def api(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "TowerProcess":
        argv = [sys.executable, "-m", "controltower", "serve", "--listen", "127.0.0.1",
                "--port", str(self.port), "--data-dir", str(self.data_dir), *self.extra]
        if "--relay-port" not in self.extra:
            argv += ["--relay-port", "0"]     # replicas on one host: no fixed UDP port
        if self.redis_url:
            argv += ["--redis-url", self.redis_url]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controltower exited: {self.log_text()[-2000:]}")
            try:
                if self.get("/health")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"controltower did not answer: {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def request(self, method: str, path: str, body=None, headers=None, auth: bool = True):
        data = None if body is None else json.dumps(body).encode()
        base = {"Content-Type": "application/json"}
        if auth:
            base["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.api + path, data=data, method=method,
                                     headers={**base, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl_context) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def get(self, path: str):
        return self.request("GET", path)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc:
            self.log.close()

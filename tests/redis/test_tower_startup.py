"""`controltower serve` starting up: refused with one line when its set-up is unsafe or
impossible, never open by accident (issue 15: items 1, 6, 7, 11, 12, 15 and the start-up
failures found beside them)."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from testbed.redisserver import free_port
from testbed.tower import TowerProcess
from tests.certs import CA
from wire.keys import Keys


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


# -- a running tower of the test's own (private Redis, any listen address) -----------------

class Tower:
    """`controltower serve` with a private Redis on ``listen``, for the tests below."""

    def __init__(self, data_dir: Path, listen: str = "127.0.0.1", *args: str) -> None:
        self.data_dir = data_dir
        self.host = listen
        self.port, self.redis_port = free_port(), free_port()
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.argv = [sys.executable, "-m", "controltower", "serve", "--listen", listen,
                     "--port", str(self.port), "--redis-port", str(self.redis_port),
                     "--stun-port", "0", "--data-dir", str(data_dir), *args]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> "Tower":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_health(200, timeout)
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def health(self) -> int:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def wait_health(self, status: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.health() != status:
            if self.proc.poll() is not None:
                raise AssertionError(f"the tower exited: {self.log_text()[-3000:]}")
            assert time.monotonic() < deadline, f"no /health {status}: {self.log_text()[-3000:]}"
            time.sleep(0.2)

    def redis(self, user: str = "ct-tower", password: str | None = None) -> redis.Redis:
        password = password or (self.data_dir / "redis-password").read_text().strip()
        return redis.Redis(host=self.host, port=self.redis_port, username=user,
                           password=password, decode_responses=True, socket_timeout=5)

    def redis_child(self) -> int:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        for pid in children.split():
            if "redis-server" in Path(f"/proc/{pid}/cmdline").read_text():
                return int(pid)
        raise AssertionError("no redis-server child")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def towers():
    started: list[Tower] = []

    def make(data_dir: Path, listen: str = "127.0.0.1", *args: str) -> Tower:
        tower = Tower(data_dir, listen, *args)
        started.append(tower)
        return tower.start()
    yield make
    for tower in started:
        tower.stop()


# -- item 6: the private Redis on the address the tower listens on ---------------------------

@pytest.mark.parametrize("listen", ["127.0.0.2", "::1"])
def test_the_private_redis_follows_listen(tmp_path, towers, listen):
    tower = towers(tmp_path / "data", listen)
    secret = (tower.data_dir / "default-zone-secret").read_text().strip()
    agent = tower.redis("ct:agent:default", secret)     # the zone secret: enrollment only
    assert len(agent.get(Keys().tower_public)) == 44


def test_listen_takes_an_ip_address(tmp_path):
    result = serve(tmp_path / "data", "--listen", "tower.example")
    assert result.returncode == 2 and "is not an IP address" in result.stderr
    assert "Traceback" not in result.stderr


# -- item 7: the private Redis is restarted, or the tower exits -------------------------------

def test_a_killed_private_redis_is_restarted(tmp_path, towers):
    tower = towers(tmp_path / "data")
    token = (tower.data_dir / "admin-token").read_text().strip()
    request = urllib.request.Request(tower.url + "/zones", method="POST",
                                     data=json.dumps({"Name": "kept", "CIDR": "10.9.0.0/24"}).encode(),
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        secret = json.loads(resp.read())["AgentSecret"]
    os.kill(tower.redis_child(), signal.SIGKILL)
    tower.wait_health(503, 10)
    tower.wait_health(200, 60)
    assert "the private Redis exited with status" in tower.log_text()
    client = tower.redis()
    assert client.hget("ct:{kept}:zone", "cidr") == "10.9.0.0/24"        # from the AOF
    assert tower.redis("ct:agent:kept", secret).ping()                    # its agent user too


def test_a_private_redis_that_cannot_come_back_ends_the_tower(tmp_path, towers, monkeypatch):
    tower = towers(tmp_path / "data", "127.0.0.1")
    pid = tower.redis_child()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    holder = None
    while holder is None:       # hold the port before the tower restarts its Redis
        try:
            holder = socket.create_server(("127.0.0.1", tower.redis_port))
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    try:
        assert tower.proc.wait(90) == 1
    finally:
        holder.close()
    text = tower.log_text()
    assert "keeps exiting" in text and "Traceback" not in text


# -- item 11: file modes --------------------------------------------------------------------

def test_files_holding_secrets_stay_private(tmp_path, towers):
    tower = towers(tmp_path / "data")
    token = (tower.data_dir / "admin-token").read_text().strip()
    request = urllib.request.Request(tower.url + "/zones", method="POST",
                                     data=json.dumps({"Name": "z1", "CIDR": "10.9.0.0/24"}).encode(),
                                     headers={"Authorization": f"Bearer {token}"})
    urllib.request.urlopen(request, timeout=10).close()          # ACL SAVE rewrites users.acl
    assert stat.S_IMODE(tower.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((tower.data_dir / "users.acl").stat().st_mode) == 0o600
    for path in (tower.data_dir / "redis").rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_an_open_data_dir_is_named_in_a_warning(tmp_path, towers):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    tower = towers(data)
    assert f"the data directory {data} can be entered by other users" in tower.log_text()


# -- item 12, 15 and other start-up failures: one line ------------------------------------------

def test_no_agent_acl_needs_a_redis_url(tmp_path):
    result = serve(tmp_path / "data", "--no-agent-acl")
    assert result.returncode == 2 and "--no-agent-acl needs --redis-url" in result.stderr


def test_the_relay_port_is_no_stun_port(tmp_path):
    result = serve(tmp_path / "data", "--stun-port", "4000", "--relay-port", "4001")
    assert result.returncode == 2 and "--relay-port 4001 is a STUN port" in result.stderr


def test_a_port_held_by_another_redis_is_said_plainly(tmp_path, redis_proc):
    result = serve(tmp_path / "data", "--redis-port", str(redis_proc.port), timeout=20)
    one_line_error(result, f"port {redis_proc.port}", "in use by a Redis",
                   "systemctl disable --now redis-server")


def test_an_unreachable_redis_url_is_one_line(tmp_path):
    port = free_port()
    result = serve(tmp_path / "data", "--redis-url", f"redis://:hunter2secret@127.0.0.1:{port}/0",
                   env={"CONTROLTOWER_REDIS_WAIT": "1"}, timeout=60)
    last = one_line_error(result, "cannot reach Redis")
    assert "hunter2secret" not in result.stderr and "***" in last


def test_an_unusable_data_dir_or_stun_port_is_one_line(tmp_path):
    one_line_error(serve(Path("/proc/no/such/dir")), "cannot start the tower")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        result = serve(tmp_path / "data", "--stun-port", str(port))
    one_line_error(result, f"cannot answer STUN on udp 127.0.0.1:{port}")


def test_the_private_redis_serves_agents_over_tls(tmp_path, towers):
    """Roaming laptops reach the private Redis over TLS (--private-redis-tls-port)."""
    ca = CA(tmp_path)
    cert, key = ca.issue("tower", server=True)
    tls_port = free_port()
    tower = towers(tmp_path / "data", "127.0.0.1", "--private-redis-tls-port", str(tls_port),
                   "--private-redis-tls-cert", str(cert), "--private-redis-tls-key", str(key))
    secret = (tower.data_dir / "default-zone-secret").read_text().strip()
    agent = redis.Redis.from_url(f"rediss://127.0.0.1:{tls_port}/0", username="ct:agent:default",
                                 password=secret, ssl_ca_certs=str(ca.path),
                                 decode_responses=True, socket_timeout=5)
    assert len(agent.get(Keys().tower_public)) == 44
    agent.close()
    plain = serve(tmp_path / "other", "--private-redis-tls-port", str(free_port()))
    assert plain.returncode == 2 and "go together" in plain.stderr


# -- item 5: a rotation of the default zone's secret survives restarts ---------------------------

def agent_login(tower: Tower, secret: str) -> bool:
    try:
        return tower.redis("ct:agent:default", secret).ping()
    except redis.exceptions.AuthenticationError:
        return False


def rotate_default(tower: Tower) -> str:
    token = (tower.data_dir / "admin-token").read_text().strip()
    request = urllib.request.Request(tower.url + "/zones/default/rotate-secret", method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())["AgentSecret"]


def restart(tower: Tower) -> Tower:
    tower.stop()
    again = Tower(tower.data_dir, tower.host)
    again.port, again.redis_port = tower.port, tower.redis_port
    again.argv = tower.argv
    return again.start()


def test_a_rotated_default_secret_survives_a_restart(tmp_path, towers):
    tower = towers(tmp_path / "data")
    secret_file = tower.data_dir / "default-zone-secret"
    old = secret_file.read_text().strip()
    new = rotate_default(tower)
    assert secret_file.read_text().strip() == new                    # the file follows
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    tower = restart(tower)
    try:
        assert agent_login(tower, new) and not agent_login(tower, old)
        # An operator's own new secret in the file is applied at the next start.
        mine = "operator-chosen-secret-0123456789"
        secret_file.write_text(mine + "\n")
        tower = restart(tower)
        assert agent_login(tower, mine) and not agent_login(tower, new)
    finally:
        tower.stop()


def test_a_replica_with_an_older_file_keeps_the_rotation(tmp_path, towers):
    """Two replicas on one Redis: rotated through A; B restarts with its copy of the old
    file: the rotation stays, B says its file is old."""
    a = towers(tmp_path / "a")
    redis_url = f"redis://ct-tower:{(a.data_dir / 'redis-password').read_text().strip()}@127.0.0.1:{a.redis_port}/0"
    b_dir = tmp_path / "b"
    b_dir.mkdir(mode=0o700)
    (b_dir / "default-zone-secret").write_text((a.data_dir / "default-zone-secret").read_text())
    (b_dir / "default-zone-secret").chmod(0o600)
    b = towers(b_dir, "127.0.0.1", "--redis-url", redis_url)
    new = rotate_default(a)
    b = restart(b)
    try:
        assert agent_login(a, new)
        assert "holds an older secret than zone default's" in b.log_text()
    finally:
        b.stop()

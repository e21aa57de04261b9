"""docker-compose.yml and the Dockerfiles, checked without a Docker engine.

`docker compose config` runs when the client has the compose plugin. Otherwise (and in
any case) the YAML is parsed and every referenced file, port, variable and command is
checked against the repository and the real click commands. The Redis start script and
the tower's command line then run here, outside containers, as the containers run them.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
import yaml

from tests.clicheck import envvars_of, parse_command, roots
from tests import composecheck
from tests.composecheck import as_env, as_list, env_file, variable_uses
from testbed.redisserver import free_port
from testbed.tower import TowerProcess

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"
DOCKERFILES = {"controltower": ROOT / "deploy" / "Dockerfile.controltower",
               "aircrew": ROOT / "deploy" / "Dockerfile.aircrew"}

SERVICE_KEYS = {"build", "image", "command", "entrypoint", "environment", "env_file", "volumes",
                "ports", "depends_on", "healthcheck", "restart", "profiles", "cap_add",
                "devices", "user", "working_dir", "networks", "network_mode", "sysctls",
                "read_only", "tmpfs", "security_opt", "stop_grace_period", "logging", "ulimits"}
DOCKERFILE_INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY",
                           "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD",
                           "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
# Variables a container's program reads that are not options of our click commands.
OTHER_VARIABLES = {"REDIS_PASSWORD", "REDISCLI_AUTH", "CONTROLLER_PASSWORD_FILE",
                   "WG_QUICK_USERSPACE_IMPLEMENTATION"}


# -- helpers ---------------------------------------------------------------------------

def rendered(env: dict[str, str] | None = None) -> dict:
    """The compose file with variables filled from the example env file."""
    return composecheck.rendered(COMPOSE, env if env is not None else env_file(ENV_EXAMPLE))


def port_spec(spec: str) -> tuple[int, int, str]:
    """'HOST:CONTAINER/proto' -> (host, container, proto)."""
    spec, _, proto = str(spec).partition("/")
    host, _, container = spec.rpartition(":")
    return int(host), int(container), proto or "tcp"


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word, rest.strip()))
    assert not pending, f"{path.name}: ends inside a continued line"
    return out


# -- docker compose itself, when the client has it -----------------------------------

def test_docker_compose_config_when_available(tmp_path):
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                        timeout=30).returncode != 0:
        pytest.skip("this docker client has no compose plugin; the checks below stand in")
    result = subprocess.run(
        [docker, "compose", "--project-directory", str(ROOT), "--env-file", str(ENV_EXAMPLE),
         "--profile", "agent", "config", "-q"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# -- the compose file ------------------------------------------------------------------

def test_compose_structure():
    doc = yaml.safe_load(COMPOSE.read_text())
    assert set(doc) <= {"name", "services", "volumes", "networks", "configs", "secrets"}
    assert set(doc["services"]) == {"redis", "controltower", "aircrew"}
    for name, service in doc["services"].items():
        assert set(service) <= SERVICE_KEYS, f"{name}: unknown keys {set(service) - SERVICE_KEYS}"
        assert "healthcheck" in service, f"{name} has no health check"
    assert doc["services"]["aircrew"]["profiles"] == ["agent"]
    assert "profiles" not in doc["services"]["redis"]
    assert "profiles" not in doc["services"]["controltower"]
    for name, service in doc["services"].items():
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in doc["services"] and cond == {"condition": "service_healthy"}


def test_every_variable_is_in_the_example_env_file():
    uses = variable_uses(yaml.safe_load(COMPOSE.read_text()))
    example = env_file(ENV_EXAMPLE)
    used = {m["braced"] or m["plain"] for m in uses}
    assert used - set(example) == set(), "variables missing from deploy/compose.env.example"
    assert set(example) - used == set(), "example variables docker-compose.yml does not use"
    required = {m["braced"] for m in uses if m["op"] in (":?", "?")}
    assert required == {"REDIS_PASSWORD"}
    assert all(example[name] for name in required)
    rendered()                                   # every ${VAR:?} is satisfied
    with pytest.raises(ValueError, match="REDIS_PASSWORD"):
        rendered({k: v for k, v in example.items() if k != "REDIS_PASSWORD"})


def test_referenced_files_exist():
    doc = rendered()
    for name, service in doc["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir()
            assert (context / build["dockerfile"]).is_file(), f"{name}: no Dockerfile"
        for path in service.get("env_file", []):
            assert (ROOT / path).is_file()
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in doc["volumes"], f"{name}: undeclared volume {source}"
    assert set(DOCKERFILES) == {Path(s["build"]["dockerfile"]).name.split(".")[1]
                                for s in doc["services"].values() if "build" in s}


def test_ports():
    doc = rendered()
    ports = {name: {port_spec(p) for p in s.get("ports", [])} for name, s in doc["services"].items()}
    assert ports["controltower"] == {(8080, 8080, "tcp"), (3478, 3478, "udp"),
                                     (3479, 3479, "udp"),      # STUN answers on port + 1 too
                                     (3480, 3480, "udp")}      # the relay's default port
    assert ports["redis"] == {(6379, 6379, "tcp")}
    assert ports["aircrew"] == {(51820, 51820, "udp")}
    published = [(host, proto) for specs in ports.values() for host, _, proto in specs]
    assert len(published) == len(set(published)), "two services publish one host port"
    # the containers listen where the ports point
    tower = as_list(doc["services"]["controltower"]["command"])
    assert tower[tower.index("--port") + 1] == "8080"
    assert tower[tower.index("--stun-port") + 1] == "3478"
    assert tower[tower.index("--listen") + 1] == "0.0.0.0"
    agent = as_list(doc["services"]["aircrew"]["command"])
    assert agent[agent.index("--listen-port") + 1] == "51820"
    assert "http://127.0.0.1:8080/health" in " ".join(
        doc["services"]["controltower"]["healthcheck"]["test"])
    assert doc["services"]["controltower"]["environment"]["CONTROLTOWER_REDIS_URL"].endswith(
        "@redis:6379/0")


def test_redis_has_aof_and_a_password():
    doc = rendered()
    script = (ROOT / "deploy" / "compose-redis.sh").read_text()
    assert "--appendonly yes" in script and "--aclfile" in script
    service = doc["services"]["redis"]
    assert "/usr/local/bin/compose-redis.sh" in " ".join(service["entrypoint"])
    assert service["environment"]["REDISCLI_AUTH"] == service["environment"]["REDIS_PASSWORD"]
    assert "redis-cli ping" in " ".join(service["healthcheck"]["test"])


def test_agent_sidecar_has_what_userspace_wireguard_needs():
    agent = rendered()["services"]["aircrew"]
    assert agent["cap_add"] == ["NET_ADMIN"]
    assert agent["devices"] == ["/dev/net/tun:/dev/net/tun"]
    assert agent["environment"]["WG_QUICK_USERSPACE_IMPLEMENTATION"] == "wireguard-go"
    packages = " ".join(args for word, args in dockerfile_instructions(DOCKERFILES["aircrew"])
                        if word == "RUN")
    for package in ("wireguard-go", "wireguard-tools", "iproute2"):
        assert package in packages


@pytest.mark.parametrize("service", ["controltower", "aircrew"])
def test_container_commands_are_real_cli_commands(service, monkeypatch):
    spec = rendered()["services"][service]
    env = as_env(spec.get("environment", {}))
    ctx = parse_command(as_list(spec["command"]), env, monkeypatch)
    ours = {n for n in env if n not in OTHER_VARIABLES}
    assert ours <= envvars_of(ctx.command, ctx), f"{service}: variables no option reads"
    health = spec["healthcheck"]["test"]
    if health[0] == "CMD" and health[1] in roots():
        parse_command(health[1:], env, monkeypatch)
    if service == "controltower":
        assert ctx.params["redis_url"] == env["CONTROLTOWER_REDIS_URL"]
        assert ctx.params["read_auth"] == "auto"
    else:
        assert ctx.params["controller"] == "redis:6379"
        assert ctx.params["zone"] == "default"
        assert ctx.params["stun_server"] == ("controltower:3478",)


# -- the Dockerfiles ---------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile(name, monkeypatch):
    path = DOCKERFILES[name]
    instructions = dockerfile_instructions(path)
    words = [word for word, _ in instructions]
    assert set(words) <= DOCKERFILE_INSTRUCTIONS, f"unknown: {set(words) - DOCKERFILE_INSTRUCTIONS}"
    assert all(w.isupper() for w in words)
    assert words[0] == "FROM" and instructions[0][1] == "python:3.11-slim"
    ignore = [line for line in (path.parent / f"{path.name}.dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    for word, args in instructions:
        if word in ("COPY", "ADD"):
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            for source in parts[:-1]:
                assert (ROOT / source).exists(), f"{path.name}: COPY source {source} missing"
                assert not any(Path(source.rstrip("/")).match(p) for p in ignore), source
        if word in ("CMD", "ENTRYPOINT") or (word == "HEALTHCHECK" and "CMD [" in args):
            exec_form = args[args.index("["):]
            assert isinstance(json.loads(exec_form), list), f"{path.name}: {word} not JSON"
    exposed = {a for word, args in instructions if word == "EXPOSE" for a in args.split()}
    expected = {"controltower": {"8080/tcp", "3478/udp", "3479/udp", "3480/udp"},
                "aircrew": {"51820/udp"}}[name]
    assert exposed == expected
    cmd = json.loads(next(args for word, args in instructions if word == "CMD"))
    parse_command(cmd, {}, monkeypatch)
    health = next(args for word, args in instructions if word == "HEALTHCHECK")
    health_cmd = json.loads(health[health.index("["):])
    if health_cmd[0] in roots():
        parse_command(health_cmd, {}, monkeypatch)
    else:
        compile(health_cmd[-1], "HEALTHCHECK", "exec")
    for word, args in instructions:
        if word == "COPY" and "entrypoint" in args:
            source = ROOT / shlex.split(args)[0]
            assert source.stat().st_mode & stat.S_IXUSR, f"{source} is not executable"


def test_agent_image_has_no_tower_and_no_flask():
    """The agent image copies wire/ and aircrew/ with the agent's own pyproject.toml:
    neither controltower/ nor ipam/ (nor the whole context), and installs no Flask."""
    instructions = dockerfile_instructions(DOCKERFILES["aircrew"])
    copies = []
    for word, args in instructions:
        if word in ("COPY", "ADD"):
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            copies += [(Path(source.rstrip("/") or "."), parts[-1]) for source in parts[:-1]]
    sources = {source for source, _ in copies}
    assert Path(".") not in sources
    assert all(source.parts[0] not in ("controltower", "ipam") for source in sources)
    assert {(s.as_posix(), d) for s, d in copies} >= {
        ("deploy/agent/pyproject.toml", "./"), ("wire", "wire/"), ("aircrew", "aircrew/")}
    runs = " ".join(args for word, args in instructions if word == "RUN").lower()
    assert "pip install ." in runs
    for name in ("flask", "gunicorn", "werkzeug", "setup.cfg"):
        assert name not in runs
    project = tomllib.loads((ROOT / "deploy" / "agent" / "pyproject.toml").read_text())
    required = {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower()
                for d in project["project"]["dependencies"]}
    assert not required & {"flask", "gunicorn", "werkzeug"}
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == [
        "wire", "wire.*", "aircrew", "aircrew.*"]
    ignored = (ROOT / "deploy" / "Dockerfile.aircrew.dockerignore").read_text().split()
    assert {"controltower", "ipam"} <= set(ignored)       # not even in the build context


# -- the same commands, run here -------------------------------------------------------

def one_try(port: int, password: str | None) -> redis.Redis:
    """A client that does not retry (an authentication error fails at once)."""
    return redis.Redis(port=port, password=password, retry=Retry(NoBackoff(), 0))


@pytest.fixture
def compose_redis(tmp_path):
    """deploy/compose-redis.sh as the redis container runs it (the image's entrypoint stubbed)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "docker-entrypoint.sh"
    stub.write_text('#!/bin/sh\nexec "$@" --port "$TEST_PORT" --bind 127.0.0.1 --save ""\n')
    stub.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    procs = []

    def start(password: str) -> redis.Redis:
        env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "REDIS_PASSWORD": password,
               "REDIS_DATA_DIR": str(data), "TEST_PORT": str(port)}
        proc = subprocess.Popen(["sh", str(ROOT / "deploy" / "compose-redis.sh")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        client = redis.Redis(port=port, password=password, decode_responses=True)
        for _ in range(200):
            try:
                client.ping()
                return client
            except redis.exceptions.ConnectionError:
                assert proc.poll() is None, "compose-redis.sh exited"
                time.sleep(0.05)
        raise AssertionError("redis did not start")

    def stop() -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)

    start.stop = stop
    start.port = port
    start.data = data
    yield start
    stop()


def test_compose_redis_and_tower_run_as_in_the_containers(compose_redis, tmp_path):
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server is not installed (make test installs it)")
    password = env_file(ENV_EXAMPLE)["REDIS_PASSWORD"]
    client = compose_redis(password)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    with pytest.raises(redis.exceptions.AuthenticationError):
        one_try(compose_redis.port, None).ping()
    acl_text = (compose_redis.data / "users.acl").read_text()
    assert password not in acl_text
    assert stat.S_IMODE((compose_redis.data / "users.acl").stat().st_mode) == 0o600

    # the health check, verbatim, with the container's environment
    spec = rendered()["services"]["redis"]
    health = spec["healthcheck"]["test"]
    env = {**os.environ, **as_env(spec["environment"])}
    check = subprocess.run(["sh", "-c", health[1].replace(
        "redis-cli", f"redis-cli -p {compose_redis.port}")], env=env, timeout=10)
    assert check.returncode == 0

    # the tower: the compose command and environment, redis:6379 pointing here
    tower_spec = rendered()["services"]["controltower"]
    tower_env = as_env(tower_spec["environment"])
    tower_env["CONTROLTOWER_REDIS_URL"] = tower_env["CONTROLTOWER_REDIS_URL"].replace(
        "@redis:6379", f"@127.0.0.1:{compose_redis.port}")
    argv = as_list(tower_spec["command"])
    assert argv[:2] == ["controltower", "serve"]
    tower = TowerProcess(None, tmp_path / "tower", env=tower_env)
    tower.extra = [*argv[2:], "--listen", "127.0.0.1", "--port", str(tower.port),
                   "--stun-port", "0", "--data-dir", str(tower.data_dir)]
    tower.start()
    try:
        code = tower_spec["healthcheck"]["test"][-1].replace(":8080/", f":{tower.port}/")
        assert subprocess.run([sys.executable, "-c", code], timeout=10).returncode == 0
        assert (tmp_path / "tower" / "admin-token").exists()
        # The agents' users are applied by the tower from its stored digests, never saved
        # (ACL SAVE blocks Redis: 1.6 s at 10,000 users): the file keeps its own users.
        assert any(u.startswith("user ct:agent:default ") for u in client.acl_list())
        saved = [l for l in (compose_redis.data / "users.acl").read_text().splitlines() if l]
        assert not any(line.startswith("user ct:") for line in saved)
    finally:
        tower.stop()

    # after a restart the tower re-applies the agents' users (at its start, or when it
    # sees the server change); a new password replaces the old one
    compose_redis.stop()
    client = compose_redis("another-password")
    assert not any(u.startswith("user ct:") for u in client.acl_list())
    with pytest.raises(redis.exceptions.AuthenticationError):
        one_try(compose_redis.port, password).ping()


def test_aircrew_entrypoint_makes_a_key_once_and_reads_the_secret_file(tmp_path):
    script = ROOT / "deploy" / "aircrew-entrypoint.sh"
    key = tmp_path / "wg" / "private.key"
    secret = tmp_path / "default-zone-secret"
    secret.write_text("zone-secret\n")
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "AIRCREW_PRIVATE_KEY_FILE": str(key), "CONTROLLER_PASSWORD_FILE": str(secret)}

    def run(extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(script), "sh", "-c", 'echo "password=$AIRCREW_CONTROLLER_PASSWORD"'],
                              env={**env, **(extra or {})}, capture_output=True, text=True,
                              timeout=30)

    first = run()
    assert first.returncode == 0, first.stderr
    assert "new WireGuard key, public key" in first.stdout
    assert first.stdout.strip().endswith("password=zone-secret")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    made = key.read_text()
    second = run({"AIRCREW_CONTROLLER_PASSWORD": "given"})
    assert "new WireGuard key" not in second.stdout and key.read_text() == made
    assert second.stdout.strip() == "password=given"

"""The test suite, grouped by what its tests need:

    tests/unit    nothing but Python (pure logic; loopback sockets inside the test)
    tests/redis   a real redis-server on a free port, often a real ``controltower serve``
    tests/netns   root, network namespaces and wireguard-go (marked ``netns`` by their
                  directory, skipped with the reason where hosts cannot be built)
    tests/coturn  coturn's ``turnserver`` as a STUN server nobody here wrote

``slow`` marks tests that take more than a few seconds. Everything a test starts comes
from ``testbed``; the fixtures shared by several modules are defined here, once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from testbed import netns
from testbed.redisserver import RedisProcess
from testbed.tower import TowerProcess

NETNS_TESTS = Path(__file__).resolve().parent / "netns"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests under tests/netns are marked ``netns``, and skipped where hosts cannot be built."""
    missing = netns.available()
    for item in items:
        if NETNS_TESTS in Path(item.path).parents:
            item.add_marker(pytest.mark.netns)
            if missing is not None:
                item.add_marker(pytest.mark.skip(reason=f"namespace hosts: {missing}"))


# -- Redis and the tower --------------------------------------------------------------------

@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of the test's own (AOF on, as the tower's)."""
    proc = RedisProcess(tmp_path / "redis").start()
    yield proc
    proc.cleanup()


@pytest.fixture
def redis_client(redis_proc: RedisProcess) -> Iterator[redis.Redis]:
    client = redis_proc.client()
    yield client
    client.close()


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One redis-server for a whole module (a module may use it as its ``redis_proc``)."""
    proc = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield proc
    proc.cleanup()


def _tower(redis_proc: RedisProcess, data_dir: Path) -> TowerProcess:
    return TowerProcess(redis_proc.url, data_dir, extra=["--stun-port", "0"])


@pytest.fixture
def tower_proc(redis_proc: RedisProcess, tmp_path: Path) -> Iterator[TowerProcess]:
    """``controltower serve`` on the test's Redis (no STUN responder)."""
    tower = _tower(redis_proc, tmp_path / "tower")
    try:
        yield tower.start()
    finally:
        tower.stop()


@pytest.fixture(scope="module")
def module_tower(module_redis: RedisProcess, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[TowerProcess]:
    """``controltower serve`` on ``module_redis``, for a whole module."""
    tower = _tower(module_redis, tmp_path_factory.mktemp("tower"))
    try:
        yield tower.start()
    finally:
        tower.stop()


# -- the API and the zone store ---------------------------------------------------------------

@pytest.fixture
def app_config() -> dict[str, Any]:
    """Configuration for ``app`` beyond REDIS_URL and TESTING (a module may override it)."""
    return {}


@pytest.fixture
def app(redis_proc: RedisProcess, app_config: dict[str, Any]) -> Any:
    """The tower's Flask app on the test's Redis, with the default zone."""
    from controltower.app import create_app
    app = create_app({"REDIS_URL": redis_proc.url, "TESTING": True,
                      "INSECURE_OPEN_API": True, **app_config})
    app.extensions["zone_store"].ensure_default_zone()
    return app


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def store(redis_client: redis.Redis) -> Any:
    """A zone store on the test's Redis (node expiry 60 s), with the default zone."""
    from ipam.store import ZoneStore
    zones = ZoneStore(redis_client, expiry=60)
    zones.ensure_default_zone()
    return zones


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The options ``aircrew`` would start its agent with: filled in by a stand-in for the
    agent's run (no network), empty if the command never got that far."""
    from aircrew import cli
    seen: dict[str, Any] = {}

    def fake_run(opts: dict[str, Any]) -> int:
        seen.update(opts)
        return 0
    monkeypatch.setattr(cli, "_run_agent", fake_run)
    return seen

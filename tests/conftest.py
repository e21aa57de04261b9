from __future__ import annotations

import pytest

from tests.redisproc import RedisProcess


@pytest.fixture
def redis_proc(tmp_path):
    proc = RedisProcess(tmp_path / "redis").start()
    yield proc
    proc.cleanup()


@pytest.fixture
def redis_client(redis_proc):
    client = redis_proc.client()
    yield client
    client.close()

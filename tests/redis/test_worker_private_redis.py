"""The tower's private redis-server child has room for every agent's connection."""
from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

import redis

from controltower.private_redis import MAX_CLIENTS, RESERVED_FDS, PrivateRedis
from testbed.redisserver import free_port


def _soft_open_files(pid: int) -> int:
    limits = Path(f"/proc/{pid}/limits").read_text()
    return int(re.search(r"^Max open files\s+(\d+)", limits, re.M).group(1))


def test_private_redis_maxclients_fits_its_open_file_limit(tmp_path):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    expected = MAX_CLIENTS if hard == resource.RLIM_INFINITY else min(MAX_CLIENTS,
                                                                      hard - RESERVED_FDS)
    private = PrivateRedis(tmp_path, port=free_port())
    private.start()
    try:
        client = redis.Redis.from_url(private.url, decode_responses=True)
        try:
            maxclients = int(client.config_get("maxclients")["maxclients"])
        finally:
            client.close()
        assert maxclients in (MAX_CLIENTS, expected)   # (a privileged tower raises the hard limit)
        assert _soft_open_files(private.proc.pid) >= maxclients + RESERVED_FDS
    finally:
        private.stop()


def test_a_low_limit_is_raised_as_far_as_the_hard_limit_allows():
    # In a child process: the test process keeps its own limits.
    code = ("import resource; from controltower.private_redis import raise_open_files;"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 2048));"
            "print(raise_open_files(65000), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    allowed, soft = map(int, out.stdout.split())
    assert (allowed, soft) in ((65000, 65032), (2048 - 32, 2048))   # privileged or not
    assert "raise it (systemd: LimitNOFILE=)" in out.stderr or allowed == 65000

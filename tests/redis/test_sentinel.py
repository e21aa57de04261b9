"""A tower on a Sentinel-managed Redis: the primary is SIGKILLed, a replica takes over,
registrations continue and nothing acknowledged (and replicated) is lost.

Two redis-servers (primary + replica) and three redis-sentinels (quorum 2) on free
loopback ports. The tower keeps its agent ACLs: they are not replicated, so the tower
must re-apply them on the promoted replica for agents to log in again.
"""
from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from aircrew import config
from aircrew.agent import controller_client
from aircrew.enroll import enroll
from aircrew.session import TowerSession
from wire.keys import Keys
from testbed.redisserver import RedisProcess, free_port
from testbed.tower import TowerProcess
from wire.redisconn import parse_sentinel_url
from wire.errors import InvalidInput
from wire.proof import generate_private_key

pytestmark = pytest.mark.slow

MASTER = "mymaster"
REGISTER = {"listen_port": 51820, "endpoint": "203.0.113.7:51820"}


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
            if result:
                return result
        except (redis.exceptions.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class SentinelProcess:
    def __init__(self, data_dir: Path, master_port: int) -> None:
        self.port = free_port()
        self.dir = data_dir
        self.dir.mkdir(parents=True)
        self.conf = self.dir / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n"
            f"dir {self.dir}\nlogfile {self.dir / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
            f"sentinel parallel-syncs {MASTER} 1\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "SentinelProcess":
        binary = shutil.which("redis-sentinel")
        if binary is None:
            pytest.skip("redis-sentinel is not installed (apt-get install redis-sentinel)")
        self.proc = subprocess.Popen([binary, str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2)

    def master(self) -> dict:
        return self.client().sentinel_master(MASTER)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def cluster(tmp_path):
    """(primary, replica, sentinels), torn down whatever happens."""
    started: list = []
    try:
        primary = RedisProcess(tmp_path / "primary").start()
        started.append(primary)
        replica = RedisProcess(tmp_path / "replica",
                               extra=["--replicaof", "127.0.0.1", str(primary.port)]).start()
        started.append(replica)
        sentinels = []
        for i in range(3):
            sentinels.append(SentinelProcess(tmp_path / f"sentinel{i}", primary.port).start())
            started.append(sentinels[-1])
        wait_until(lambda: replica.client().info("replication")["master_link_status"] == "up",
                   15, "the replica to sync")
        wait_until(lambda: all(int(s.master()["num-slaves"]) == 1
                               and int(s.master()["num-other-sentinels"]) == 2
                               for s in sentinels), 20, "the sentinels to know each other")
        yield primary, replica, sentinels
    finally:
        for proc in reversed(started):
            if isinstance(proc, RedisProcess):
                proc.cleanup()
            else:
                proc.stop()


def test_sentinel_url_form():
    t = parse_sentinel_url("redis+sentinel://app:p%40ss@10.0.0.1,10.0.0.2:26380,[::1]:5/mymaster/3"
                           "?sentinel_password=s")
    assert t.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 5))
    assert (t.master, t.db, t.username, t.password) == ("mymaster", 3, "app", "p@ss")
    assert t.sentinel_kwargs()["password"] == "s"
    assert parse_sentinel_url("redis+sentinel://:pw@h/m").master_kwargs() == {
        "db": 0, "username": None, "password": "pw"}
    for bad in ("redis+sentinel://h/", "redis+sentinel:///m", "redis+sentinel://h/m/x",
                "redis+sentinel://h:0/m", "redis+sentinel://h/m?x=1"):
        with pytest.raises(InvalidInput) as err:
            parse_sentinel_url(bad)
        assert "pw" not in str(err.value)
    # the agent's --controller/--controller-password form for zone users
    urls = config.controller_urls("redis+sentinel://h1:26379,h2:26379/mymaster", "s3cret", "z")
    assert urls == ["redis+sentinel://ct%3Aagent%3Az:s3cret@h1:26379,h2:26379/mymaster",
                    "redis+sentinel://:s3cret@h1:26379,h2:26379/mymaster"]
    assert config.controller_host("redis+sentinel://h1:26379,h2:26379/mymaster") == "h1"


CREDENTIALS: dict[str, str] = {}     # private key -> the node's own login URL (enrolled)


async def node_url(url: str, key: str) -> str:
    """The node's own login (enrolled once with the zone secret in ``url``)."""
    if key not in CREDENTIALS:
        client = controller_client(url)
        try:
            cred = await enroll(client, Keys(), "default", "zone", key, None, "sentinel-test")
        finally:
            await client.aclose()
        CREDENTIALS[key] = config.login_url(url, cred.user, cred.password)
    return CREDENTIALS[key]


async def register_all(url: str, keys: list[str], deadline: float) -> list[str]:
    """Enroll and register every key (retrying through a failover); the addresses."""
    addresses = []
    for key in keys:
        while True:
            client = None
            try:
                client = controller_client(await node_url(url, key))
                session = TowerSession(client, "default", key)
                await session.open()
                try:
                    reply = await session.request("register", REGISTER, timeout=3)
                finally:
                    await session.close()
                addresses.append(reply["address"])
                break
            except Exception as exc:  # noqa: BLE001 - auth, connection, no reply: retry
                if time.monotonic() > deadline:
                    raise AssertionError(f"registration did not succeed in time: {exc!r}")
                await asyncio.sleep(0.3)
            finally:
                if client is not None:
                    await client.aclose()
    return addresses


def test_registrations_continue_through_a_failover(cluster, tmp_path):
    primary, replica, sentinels = cluster
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
    tower = TowerProcess(f"redis+sentinel://{hosts}/{MASTER}/0", tmp_path / "tower",
                         extra=["--stun-port", "0"])
    try:
        tower.start()
        wait_until(lambda: tower.get("/ready")[0] == 200, 15, "the tower to be ready")
        secret = (tower.data_dir / "default-zone-secret").read_text().strip()
        agent_url = config.controller_urls(f"redis+sentinel://{hosts}/{MASTER}", secret,
                                           "default")[0]
        before_keys = [generate_private_key() for _ in range(5)]
        before = asyncio.run(register_all(agent_url, before_keys, time.monotonic() + 20))
        assert len(set(before)) == 5
        # acknowledged and replicated: one more write on our connection, then WAIT for it
        admin = primary.client()
        admin.set("test:marker", "1")
        assert admin.wait(1, 5000) == 1
        admin.close()

        primary.kill()
        wait_until(lambda: sentinels[0].client().sentinel_get_master_addr_by_name(MASTER)[1]
                   == replica.port, 30, "the sentinels to promote the replica")
        after_keys = [generate_private_key() for _ in range(5)]
        after = asyncio.run(register_all(agent_url, after_keys, time.monotonic() + 30))
        # the first ones again: idempotent, same addresses (nothing was lost)
        again = asyncio.run(register_all(agent_url, before_keys[:2], time.monotonic() + 10))
        assert again == before[:2]

        peers = wait_until(lambda: (lambda r: r[1] if r[0] == 200 else None)(tower.get("/peers")),
                           15, "the API to answer after the failover")
        held = {p["NodeAddress"] for p in peers}
        assert held == set(before) | set(after) and len(held) == 10
        assert tower.get("/ready")[0] == 200
        new_primary = replica.client()
        assert new_primary.info("replication")["role"] == "master"
        assert new_primary.hlen("ct:{default}:peers") == 10
        assert "re-applied the agent users" in tower.log_text()
        assert secret not in tower.log_text()
    finally:
        tower.stop()

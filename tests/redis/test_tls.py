"""TLS everywhere: HTTPS with client certificates for the API, rediss:// for Redis."""
from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import redis
import redis.asyncio as aioredis

from aircrew.session import TowerSession
from tests.certs import CA
from testbed.redisserver import free_port
from testbed.tower import TowerProcess
from wire.proof import generate_private_key

pytestmark = pytest.mark.slow


@pytest.fixture
def pki(tmp_path):
    ca = CA(tmp_path, "ca")
    wrong = CA(tmp_path, "wrong-ca")
    return {"ca": ca.path, "wrong_ca": wrong.path, "server": ca.issue("server", True),
            "client": ca.issue("client", False), "stranger": wrong.issue("stranger", False)}


def context(ca, client=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if client:
        ctx.load_cert_chain(*map(str, client))
    return ctx


def test_https_api_with_client_certificates(pki, redis_proc, tmp_path):
    cert, key = pki["server"]
    tower = TowerProcess(redis_proc.url, tmp_path / "tower", ssl_context=context(pki["ca"], pki["client"]),
                         extra=["--stun-port", "0", "--http-tls-cert", str(cert),
                                "--http-tls-key", str(key), "--http-tls-ca", str(pki["ca"])])
    tower.start()
    try:
        assert tower.get("/zones")[0] == 200
        url = tower.api + "/zones"
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(url, timeout=5, context=context(pki["ca"])).read()  # no cert
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(url, timeout=5,
                                   context=context(pki["ca"], pki["stranger"])).read()
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(url, timeout=5, context=context(pki["wrong_ca"], pki["client"]))
    finally:
        tower.stop()


@pytest.fixture
def tls_redis(pki, tmp_path):
    port = free_port()
    cert, key = pki["server"]
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key),
         "--tls-ca-cert-file", str(pki["ca"]), "--tls-auth-clients", "yes",
         "--dir", str(tmp_path), "--save", ""], stdout=subprocess.DEVNULL)
    client_cert, client_key = pki["client"]
    tls = {"ssl_ca_certs": str(pki["ca"]), "ssl_certfile": str(client_cert),
           "ssl_keyfile": str(client_key)}
    url = f"rediss://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url, **tls).ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield url, tls
    proc.terminate()
    proc.wait(10)


def test_tower_and_agent_over_rediss(pki, tls_redis, tmp_path):
    url, tls = tls_redis
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(url, ssl_ca_certs=str(pki["ca"])).ping()  # no client certificate
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(url, ssl_ca_certs=str(pki["wrong_ca"]),
                             ssl_certfile=tls["ssl_certfile"], ssl_keyfile=tls["ssl_keyfile"]).ping()
    tower = TowerProcess(url, tmp_path / "tower", extra=[
        "--stun-port", "0", "--redis-tls-ca", tls["ssl_ca_certs"],
        "--redis-tls-cert", tls["ssl_certfile"], "--redis-tls-key", tls["ssl_keyfile"]])
    tower.start()
    try:
        assert tower.request("POST", "/zone", {"Name": "zone-blue", "CIDR": "10.140.0.0/20"})[0] == 201

        async def register():
            client = aioredis.Redis.from_url(url, decode_responses=True, **tls)
            session = TowerSession(client, "zone-blue", generate_private_key())
            await session.open()
            reply = await session.request("register", {"listen_port": 51820}, timeout=10)
            await session.close()
            await client.aclose()
            return reply
        assert asyncio.run(register())["address"] == "10.140.0.1"
    finally:
        tower.stop()


def test_aircrew_down_leaves_over_rediss_with_the_agents_tls_files(pki, tls_redis, tmp_path):
    """`aircrew down --controller rediss://...` connects as the agent does: with
    --controller-ca/-cert/-key (the quickstart's laptop reaches the tower only over TLS
    with the tower's own certificate), so the tower releases the node's address."""
    import dataclasses
    import json

    from click.testing import CliRunner

    from aircrew.cli import main as aircrew
    from aircrew.state import Cache, StateFiles
    url, tls = tls_redis
    tower = TowerProcess(url, tmp_path / "tower", extra=[
        "--stun-port", "0", "--relay-port", "0", "--redis-tls-ca", tls["ssl_ca_certs"],
        "--redis-tls-cert", tls["ssl_certfile"], "--redis-tls-key", tls["ssl_keyfile"]])
    tower.start()
    try:
        zone = {"Name": "zone-blue", "CIDR": "10.140.0.0/20"}
        assert tower.request("POST", "/zone", zone)[0] == 201
        private = generate_private_key()

        async def register():
            client = aioredis.Redis.from_url(url, decode_responses=True, **tls)
            session = TowerSession(client, "zone-blue", private)
            await session.open()
            reply = await session.request("register", {"listen_port": 51820}, timeout=10)
            await session.close()
            await client.aclose()
            return reply["address"], session.session_id
        address, session_id = asyncio.run(register())
        assert address in tower.get("/ipam/leases/zone-blue")[1][0]["IPs"]
        key_file = tmp_path / "private.key"
        key_file.write_text(private + "\n")
        key_file.chmod(0o600)
        state = tmp_path / "state"
        state.mkdir()
        cache = Cache(zone="zone-blue", cidr="10.140.0.0/20", address=address, prefix_len=20,
                      listen_port=51820, rev=1, session=session_id)   # as the agent left it
        cached = json.dumps(dataclasses.asdict(cache))
        StateFiles(state, "wgdown0").cache.write_text(cached)
        args = ["down", "--controller", url, "--state-dir", str(state), "--interface",
                "wgdown0", "--hosts-file", "none", "--private-key-file", str(key_file),
                "--zone", "zone-blue"]
        without = CliRunner().invoke(aircrew, args, env={})
        assert "could not tell the tower" in without.output, without.output  # the control
        assert address in tower.get("/ipam/leases/zone-blue")[1][0]["IPs"]
        StateFiles(state, "wgdown0").cache.write_text(cached)     # down removed it
        config = tmp_path / "aircrew.toml"           # as the quickstart's laptop has it
        config.write_text(f'controller = "{url}"\ncontroller-ca = "{tls["ssl_ca_certs"]}"\n'
                          f'controller-cert = "{tls["ssl_certfile"]}"\n'
                          f'controller-key = "{tls["ssl_keyfile"]}"\n'
                          f'private-key-file = "{key_file}"\nzone = "zone-blue"\n')
        config.chmod(0o600)
        result = CliRunner().invoke(aircrew, ["--config", str(config), "down", *args[3:9]], env={})
        assert result.exit_code == 0 and "left zone zone-blue" in result.output, result.output
        assert address not in tower.get("/ipam/leases/zone-blue")[1][0]["IPs"]
    finally:
        tower.stop()

"""redis+cluster:// URLs (wire/redisconn.py) and the agent's side of them (pure)."""
from __future__ import annotations

import pytest

from aircrew import config
from wire.errors import InvalidInput
from wire.redisconn import is_cluster_url, parse_cluster_url, publish_command


def test_a_cluster_url_names_seeds_and_credentials():
    url = parse_cluster_url("redis+cluster://node-7:p%40ss@10.0.0.1:7001,10.0.0.2,[::1]:7003")
    assert url.nodes == (("10.0.0.1", 7001), ("10.0.0.2", 6379), ("::1", 7003))
    assert (url.username, url.password) == ("node-7", "p@ss")
    assert url.node_url("::1", 7003) == "redis://node-7:p%40ss@[::1]:7003/0"
    bare = parse_cluster_url("redis+cluster://h:1")
    assert bare.node_url("h", 1) == "redis://h:1/0" and bare.password is None
    assert parse_cluster_url("redis+cluster://:pw@h:1").node_url("h", 2) == "redis://:pw@h:2/0"
    assert is_cluster_url("redis+cluster://h:1") and not is_cluster_url("redis://h:1")


@pytest.mark.parametrize("bad, says", [
    ("redis+cluster://", "at least one host"),
    ("redis+cluster://h:0", "1-65535"),
    ("redis+cluster://h:x", "1-65535"),
    ("redis+cluster://:secret@h:1/3", "database 0 only"),
    ("redis+cluster://h:1?x=1", "no parameters"),
    ("rediss+cluster://:secret@h:1", "not supported yet"),
])
def test_a_bad_cluster_url_is_refused_without_repeating_it(bad, says):
    with pytest.raises(InvalidInput, match=says) as caught:
        parse_cluster_url(bad)
    assert "secret" not in str(caught.value)


def test_the_agent_takes_a_cluster_url_and_logs_in_with_its_own_user():
    url = config.controller_url("redis+cluster://10.0.0.1:7001,10.0.0.2:7002", None)
    assert url == "redis+cluster://10.0.0.1:7001,10.0.0.2:7002"
    login = config.login_url(url, "ct:node:z:abc", "s3cret")
    parsed = parse_cluster_url(login)
    assert parsed.nodes == (("10.0.0.1", 7001), ("10.0.0.2", 7002))
    assert (parsed.username, parsed.password) == ("ct:node:z:abc", "s3cret")
    assert config.controller_host(url) == "10.0.0.1"      # the default STUN server


def test_publish_command_by_mode():
    assert publish_command(True) == "SPUBLISH" and publish_command(False) == "PUBLISH"


@pytest.mark.parametrize("command, flag", [
    (("controltower", "serve"), "--redis-url"),
    (("controltower", "relay", "--region", "r1"), "--redis-url"),
    (("aircrew",), "--controller"),
])
@pytest.mark.parametrize("bad, says", [
    ("redis+cluster://:secret@h:0", "1-65535"),
    ("redis+cluster://:secret@h:1/2", "database 0 only"),
    ("redis+sentinel://:secret@/mymaster", "at least one host"),
])
def test_a_bad_url_option_is_refused_before_anything_starts(command, flag, bad, says):
    """The URL options (wire.clitypes.REDIS_URL, the agent's --controller) check the
    cluster and Sentinel forms when parsed: a usage error naming the option, no secret."""
    from click.testing import CliRunner

    from aircrew.cli import main as aircrew
    from controltower.cli import main as controltower

    root = {"controltower": controltower, "aircrew": aircrew}[command[0]]
    result = CliRunner().invoke(root, [*command[1:], flag, bad])
    assert result.exit_code == 2, result.output
    assert flag in result.output and says in result.output
    assert "secret" not in result.output


def test_good_url_options_pass_the_check():
    from wire.clitypes import REDIS_URL

    for url in ("redis+cluster://u:p@10.0.0.1:7001,[::1]:7002", "redis://:p@h:6379/0",
                "rediss://h:6380", "unix:///run/redis.sock", "redis+sentinel://h1,h2:26380/m",
                ""):
        assert REDIS_URL.convert(url, None, None) == url
    with pytest.raises(Exception, match="starts with redis://"):
        REDIS_URL.convert("http://h:1", None, None)

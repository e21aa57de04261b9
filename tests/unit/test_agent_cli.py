"""The aircrew command line: keys, validation and option precedence (no network)."""
from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner

from aircrew import cli, config
from wire.errors import InvalidInput
from wire.proof import generate_private_key, public_key_of


def test_keygen_writes_a_0600_private_key(tmp_path):
    path = tmp_path / "private.key"
    result = CliRunner().invoke(cli.main, ["keygen", "--private-key-file", str(path)])
    assert result.exit_code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert result.output.strip() == public_key_of(path.read_text().strip())
    assert (tmp_path / "private.key.pub").read_text().strip() == result.output.strip()
    again = CliRunner().invoke(cli.main, ["keygen", "--private-key-file", str(path)])
    assert again.exit_code != 0 and "exists" in again.output


def test_precedence_flag_over_env_over_file(tmp_path, captured):
    conf = tmp_path / "aircrew.toml"
    conf.write_text('zone = "from-file"\nlisten-port = 1111\ncontroller = "file-host"\n'
                    'child-prefix = ["172.24.0.0/24"]\n')
    env = {"AIRCREW_ZONE": "from-env", "AIRCREW_LISTEN_PORT": "2222"}
    result = CliRunner().invoke(cli.main, ["--config", str(conf), "--listen-port", "3333"], env=env)
    assert result.exit_code == 0, result.output
    assert captured["listen_port"] == 3333          # flag
    assert captured["zone"] == "from-env"           # env over file
    assert captured["controller"] == "file-host"    # file over default
    assert captured["child_prefix"] == ("172.24.0.0/24",)


def test_config_file_errors_are_clear(tmp_path, captured):
    bad = tmp_path / "bad.toml"
    bad.write_text('zonee = "x"\n')
    result = CliRunner().invoke(cli.main, ["--config", str(bad)])
    assert result.exit_code == 2 and "unknown option 'zonee'" in result.output
    bad.write_text('zone = \n')
    result = CliRunner().invoke(cli.main, ["--config", str(bad)])
    assert result.exit_code == 2 and "line 1" in result.output


def test_private_key_checks(tmp_path, caplog):
    private = generate_private_key()
    path = tmp_path / "k"
    path.write_text(private + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(InvalidInput, match="readable by other users"):
        config.read_private_key(None, path, allow_insecure=False)
    assert config.read_private_key(None, path, allow_insecure=True) == private
    os.chmod(path, 0o600)
    assert config.read_private_key(None, path, False) == private
    assert config.read_private_key(private, None, False) == private
    assert "may show in ps" in caplog.text and private not in caplog.text
    with pytest.raises(InvalidInput, match="does not match the private key"):
        config.check_public_key(private, public_key_of(generate_private_key()))
    with pytest.raises(InvalidInput, match="not a WireGuard key"):
        config.read_private_key("nope", None, False)


def test_controller_forms():
    assert config.controller_urls("203.0.113.1", None, "default") == ["redis://203.0.113.1:6379/0"]
    assert config.controller_urls("tower:7000", "s/cr=t", "zone-blue") == [
        "redis://ct%3Aagent%3Azone-blue:s%2Fcr%3Dt@tower:7000/0", "redis://:s%2Fcr%3Dt@tower:7000/0"]
    assert config.controller_urls("[2001:db8::1]", None, "z") == ["redis://[2001:db8::1]:6379/0"]
    assert config.controller_host("rediss://h.example:6380/0") == "h.example"
    with pytest.raises(InvalidInput, match="scheme"):
        config.controller_urls("http://x", None, "z")
    with pytest.raises(InvalidInput, match="port"):
        config.controller_urls("x:99999", None, "z")


def test_run_validation_errors_exit_nonzero(tmp_path):
    result = CliRunner().invoke(cli.main, ["--controller", "127.0.0.1", "--private-key", "bad"])
    assert result.exit_code == 2 and "private key" in result.output
    result = CliRunner().invoke(cli.main, ["--private-key", generate_private_key()])
    assert result.exit_code != 0 and "--controller is required" in result.output
    result = CliRunner().invoke(cli.main, ["--controller", "h", "--private-key",
                                           generate_private_key(), "--zone", "bad zone"])
    assert result.exit_code == 2 and "zone name" in result.output


def test_keygen_never_writes_the_public_key_over_the_private_one(tmp_path):
    """issue 15, item 21: `--private-key-file k.pub` lost the new private key."""
    path = tmp_path / "k.pub"
    result = CliRunner().invoke(cli.main, ["keygen", "--private-key-file", str(path)])
    assert result.exit_code == 0, result.output
    assert public_key_of(path.read_text().strip()) == result.output.strip()
    assert (tmp_path / "k.pub.pub").read_text().strip() == result.output.strip()
    same = CliRunner().invoke(cli.main, ["keygen", "--private-key-file", str(tmp_path / "a"),
                                         "--public-key-file", str(tmp_path / "a")])
    assert same.exit_code == 2 and "must not be the private key file" in same.output


@pytest.mark.parametrize("flag", ["--internal-network", "--network-internal"])
def test_the_seeds_two_spellings_of_internal_network(flag, captured):
    """The seed's README writes both `--internal-network` (its example 3) and
    `--network-internal` (its note): a newcomer copying either gets the host address."""
    result = CliRunner().invoke(cli.main, ["--controller", "h", flag])
    assert result.exit_code == 0, result.output
    assert captured["internal_network"] is True


def test_mtu_from_flag_env_and_file_and_its_range(tmp_path, captured):
    conf = tmp_path / "aircrew.toml"
    conf.write_text("mtu = 1380\n")
    for args, env, mtu in (([], {}, 1420), (["--config", str(conf)], {}, 1380),
                           ([], {"AIRCREW_MTU": "1412"}, 1412), (["--mtu", "1300"], {}, 1300)):
        result = CliRunner().invoke(cli.main, args, env=env)
        assert result.exit_code == 0 and captured["mtu"] == mtu, (args, env, result.output)
    result = CliRunner().invoke(cli.main, ["--mtu", "1000"], env={})
    assert result.exit_code == 2 and "1000 is not in the range 1280<=x<=65535" in result.output

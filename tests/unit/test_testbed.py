"""testbed's parts that need no namespace: its errors and the command that enters a host."""
from __future__ import annotations

import subprocess

import pytest

from testbed import netns
from testbed.errors import CommandError, LabError, MeshFailure
from testbed.lab import Lab
from wire.errors import MeshError, classify


def test_errors_are_in_the_one_hierarchy():
    for cls in (LabError, CommandError, MeshFailure):
        assert issubclass(cls, MeshError)
    assert issubclass(MeshFailure, LabError) and issubclass(CommandError, LabError)
    assert classify(MeshFailure("timed out")) == classify(MeshError("x"))


def test_command_error_is_a_called_process_error_that_says_why():
    error = CommandError(2, ["ip", "link", "add"], "", "RTNETLINK answers: File exists\n")
    assert isinstance(error, subprocess.CalledProcessError)
    assert error.returncode == 2 and error.cmd == ["ip", "link", "add"]
    assert str(error).endswith(": RTNETLINK answers: File exists")
    with pytest.raises(LabError):
        netns.check(["sh", "-c", "echo nope >&2; exit 3"])


def test_enter_runs_the_command_with_the_hosts_own_directories():
    argv = netns.enter("tb1-h", "/tmp/run", "/tmp/etc", ["wg", "show"])
    assert argv[:4] == ["ip", "netns", "exec", "tb1-h"]
    assert argv[-4:] == ["/tmp/run", "/tmp/etc", "wg", "show"]
    script = argv[argv.index("-c") + 1]
    assert 'mount --bind "$1" /run/wireguard' in script and 'exec "$@"' in script
    assert 'mount --bind "$2/hosts" /etc/hosts' in script      # never the machine's own


@pytest.mark.parametrize("prefix", ["no/slash", "A1", "x", "toolongprefix1"])
def test_a_bad_prefix_is_refused_before_anything_is_made(prefix):
    with pytest.raises(LabError, match="bad lab prefix"):
        Lab(prefix)

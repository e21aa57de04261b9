"""The zone's names reach /etc/hosts under the systemd unit's sandbox: ProtectSystem=strict
makes /etc read-only and ReadWritePaths=/etc/hosts bind-mounts the file writable. Made
here with the kernel's own read-only bind mounts, in a private mount namespace
(``unshare -m``), so nothing outside the test's directory changes."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

WRITE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from aircrew.hosts import HostsFile
    try:
        HostsFile(Path(sys.argv[1]), "wg0").write("default", [("10.200.0.11", "vm1")])
        print("written")
    except OSError as exc:
        print(f"refused: {exc}")
""")


def sandboxed(etc: Path, hosts_writable: bool) -> str:
    """Run HostsFile.write on ``etc/hosts`` with ``etc`` read-only, as the unit does."""
    mounts = [f"mount --bind {etc} {etc}", f"mount -o remount,bind,ro {etc} {etc}"]
    if hosts_writable:
        hosts = etc / "hosts"
        mounts += [f"mount --bind {hosts} {hosts}", f"mount -o remount,bind,rw {hosts} {hosts}"]
    script = " && ".join([*mounts, f"{sys.executable} -c '{WRITE}' {etc / 'hosts'}"])
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def etc(tmp_path):
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed for this test")
    directory = tmp_path / "etc"
    directory.mkdir()
    (directory / "hosts").write_text("127.0.0.1\tlocalhost\n")
    return directory


def test_names_are_written_in_place_when_only_the_file_is_writable(etc):
    assert sandboxed(etc, hosts_writable=True) == "written"
    text = (etc / "hosts").read_text()
    assert text.startswith("127.0.0.1\tlocalhost\n")          # kept byte for byte
    assert "10.200.0.11\tvm1.default\n# END aircrew wg0 default\n" in text
    assert [p.name for p in etc.iterdir()] == ["hosts"]        # no temporary left


def test_a_read_only_hosts_file_is_refused_clearly(etc):
    """The control: without ReadWritePaths the write fails, as an OSError the agent
    logs ("cannot write the zone's names into ..."), and the file is unchanged."""
    assert sandboxed(etc, hosts_writable=False).startswith("refused: [Errno 30] Read-only")
    assert (etc / "hosts").read_text() == "127.0.0.1\tlocalhost\n"

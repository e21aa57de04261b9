"""The agent as one file (issue 15, item 14): a node installs it with one line and needs
nothing but python3 - no virtualenv, no package index, no tower code."""
from __future__ import annotations

import subprocess
import zipfile

from deploy import agentdist


def test_the_pyz_runs_alone(tmp_path):
    pyz = agentdist.build_pyz(tmp_path / "dist")
    names = zipfile.ZipFile(pyz).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {"aircrew", "wire", "redis", "click"} <= tops
    assert not tops & {"controltower", "ipam", "flask", "gunicorn", "testbed", "tests"}
    installed = tmp_path / "bin" / "aircrew"
    installed.parent.mkdir()
    subprocess.run(["install", "-m", "0755", str(pyz), str(installed)], check=True)
    # -I: isolated from this virtualenv and the user's site; the system's python3
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "python3", "-I",
                               str(installed), *argv], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path)
    assert "AIRCREW_CONTROLLER" in run("--help").stdout
    key = tmp_path / "private.key"
    assert len(run("keygen", "--private-key-file", str(key)).stdout.strip()) == 44
    config = tmp_path / "agent.toml"
    config.write_text('controller = "203.0.113.10"\n')
    assert run("config", "check", str(config)).returncode == 0
    probe = subprocess.run(["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "python3", "-I", "-c",
                            f"import sys; sys.path.insert(0, {str(pyz)!r}); "
                            "import aircrew.agent, aircrew.netlink_device, aircrew.metrics; "
                            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                            "('controltower', 'ipam', 'flask')))"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stderr

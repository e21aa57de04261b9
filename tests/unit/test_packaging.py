"""The agent's own distribution (deploy/agent/pyproject.toml, ``apex-mesh-agent``) stays in
step with the repository's (setup.cfg), and installs and runs alone in a fresh virtualenv."""
from __future__ import annotations

import ast
import configparser
import importlib.metadata
import os
import re
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from deploy import agentdist

ROOT = Path(__file__).resolve().parents[2]
AGENT = tomllib.loads((ROOT / "deploy" / "agent" / "pyproject.toml").read_text())["project"]
TOWER_ONLY = {"flask", "gunicorn"}
OURS = {"wire", "aircrew", "controltower", "ipam", "deploy", "bench", "tests", "testbed"}


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def third_party_imports(*packages: str) -> set[str]:
    """Top-level names of what these packages import, less the standard library and ours."""
    names = set()
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - OURS - {"__future__"}


def test_the_agent_distribution_is_the_repositorys_less_the_tower():
    config = setup_cfg()
    assert AGENT["version"] == config["metadata"]["version"]
    assert AGENT["requires-python"] == config["options"]["python_requires"]
    full = [line.strip() for line in config["options"]["install_requires"].splitlines()
            if line.strip()]
    assert sorted(AGENT["dependencies"]) == sorted(
        spec for spec in full if requirement_name(spec) not in TOWER_ONLY)
    assert AGENT["scripts"] == {"aircrew": "aircrew.cli:main"}


def test_every_library_the_agent_imports_is_a_dependency():
    providers = importlib.metadata.packages_distributions()
    needed = {requirement_name(dist) for name in third_party_imports("wire", "aircrew")
              for dist in providers.get(name, [name])}
    declared = {requirement_name(spec) for spec in AGENT["dependencies"]}
    assert needed, "found no third-party import at all"
    assert needed <= declared, f"imported but not declared: {needed - declared}"
    assert not declared & TOWER_ONLY


@pytest.mark.slow
def test_the_agent_installs_and_runs_alone(tmp_path):
    """The wheel `make agent-dist` builds holds wire and aircrew only; installed in a fresh
    virtualenv (its dependencies from the package index), `aircrew` runs without the tower."""
    wheel = agentdist.build(tmp_path / "dist")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
    tops = {name.split("/")[0] for name in names}
    assert tops == {"wire", "aircrew", wheel.name.split("-py3")[0] + ".dist-info"}
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
    assert "aircrew = aircrew.cli:main" in entry_points and "controltower" not in entry_points

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python, aircrew = venv / "bin" / "python", venv / "bin" / "aircrew"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)],
                               capture_output=True, text=True, timeout=600, env=env)
    assert installed.returncode == 0, installed.stderr

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env,
                              cwd=tmp_path)      # not the repository: its packages stay out

    assert "Join this node to a zone" in run(str(aircrew), "--help").stdout
    key = tmp_path / "node.key"
    made = run(str(aircrew), "keygen", "--private-key-file", str(key))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "listen-port = 51820" in run(str(aircrew), "config", "example").stdout
    for module in ("controltower", "ipam", "flask", "gunicorn"):
        missing = run(str(python), "-c", f"import {module}")
        assert missing.returncode != 0 and "ModuleNotFoundError" in missing.stderr, module


def test_the_dashboards_templates_and_static_files_are_package_data():
    """A wheel or image without them would serve a 500 at /ui/: setup.cfg ships every file."""
    import fnmatch
    globs = [g.strip() for g in setup_cfg()["options.package_data"]["controltower"].split(",")]
    files = [p.relative_to(ROOT / "controltower").as_posix()
             for d in ("templates", "static") for p in (ROOT / "controltower" / "dashboard" / d).iterdir()]
    assert len(files) >= 8
    assert [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)] == []
    assert setup_cfg()["options"].getboolean("include_package_data")

"""The agent's own distribution, ``apex-mesh-agent``: a wheel of ``wire`` and ``aircrew``
alone (no controltower, ipam, Flask or gunicorn), from ``deploy/agent/pyproject.toml``.

    python -m deploy.agentdist [--out dist]        # or: make agent-dist

prints the wheel's path. A node installs the agent with one line, ``pip install`` and the
wheel's path or URL; pip fetches its few dependencies.

    python -m deploy.agentdist --pyz [--out dist]  # or: make agent-pyz

builds ``aircrew.pyz`` instead: the same packages and their pure-Python libraries (from
this interpreter's environment; hiredis, a C accelerator, is left out) in one
executable file that needs only python3 (3.11 or later) on the node, no package index:
``install -m 0755 aircrew.pyz /usr/local/bin/aircrew``. The wheel is built from a staging
directory holding that pyproject.toml beside copies of the two packages, as
``deploy/Dockerfile.aircrew`` does with COPY.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "deploy" / "agent" / "pyproject.toml"
PACKAGES = ("wire", "aircrew")
DISTRIBUTION = "apex_mesh_agent"


class BuildError(Exception):
    """The wheel could not be built (pip's message says why)."""


def stage(directory: Path) -> Path:
    """``directory`` with the agent's pyproject.toml and its packages (no byte code)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy2(PYPROJECT, directory / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, directory / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return directory


def build(out: Path) -> Path:
    """Build the wheel into ``out``; returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="agent-dist-") as tmp:
        staged = stage(Path(tmp) / "src")
        before = set(out.glob(f"{DISTRIBUTION}-*.whl"))
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
             str(out), str(staged)], capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise BuildError(f"pip wheel failed: {result.stderr.strip() or result.stdout}")
    wheels = set(out.glob(f"{DISTRIBUTION}-*.whl"))
    made = sorted(wheels - before) or sorted(wheels, key=lambda p: p.stat().st_mtime)
    if not made:
        raise BuildError(f"pip wheel wrote no {DISTRIBUTION} wheel into {out}")
    return made[-1]


# The agent's libraries (deploy/agent/pyproject.toml) as import names; C-only ones left out.
PYZ_LIBRARIES = ("redis", "async_timeout", "click", "pyroute2", "prometheus_client")
PYZ_NAME = "aircrew.pyz"


def build_pyz(out: Path) -> Path:
    """``aircrew.pyz`` in ``out``: wire, aircrew and ``PYZ_LIBRARIES`` as found by this
    interpreter, run by ``aircrew.cli:main``; returns its path."""
    import importlib.util
    import zipapp
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="agent-pyz-") as tmp:
        staged = Path(tmp) / "src"
        staged.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")
        for package in PACKAGES:
            shutil.copytree(ROOT / package, staged / package, ignore=ignore)
        for library in PYZ_LIBRARIES:
            spec = importlib.util.find_spec(library)
            if spec is None or not spec.submodule_search_locations:
                raise BuildError(f"{library} is not installed in {sys.prefix} (make venv)")
            shutil.copytree(list(spec.submodule_search_locations)[0], staged / library,
                            ignore=ignore)
        target = out / PYZ_NAME
        zipapp.create_archive(staged, target, interpreter="/usr/bin/env python3",
                              main="aircrew.cli:main", compressed=True)
    target.chmod(0o755)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.agentdist", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "dist",
                        help="directory the wheel is written to (default: dist/)")
    parser.add_argument("--pyz", action="store_true",
                        help="build aircrew.pyz, one executable file, instead of a wheel")
    args = parser.parse_args(argv)
    try:
        print(build_pyz(args.out) if args.pyz else build(args.out))
    except (BuildError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"agentdist: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

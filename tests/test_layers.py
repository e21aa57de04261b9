"""Layers point one way: ``RULES`` is the table of what may not import what, checked by
static analysis (ast) of every import in the files each rule covers: top-level and
function-level imports, relative ones resolved, and ``importlib.import_module`` /
``__import__`` calls with a literal name.

A new rule is one line, e.g. ``Rule("bench/**/*.py", ("tests",), "bench does not borrow
from tests")``. A second test imports every agent module with the tower's packages and
Flask made unimportable, which also catches imports no static reading sees.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("wire", "aircrew", "controltower", "ipam", "deploy", "bench", "tests", "testbed")
HTTP = ("flask", "werkzeug", "gunicorn")
SKIP_DIRS = {".venv", ".git", "build", "dist", "__pycache__", ".hypothesis", ".pytest_cache"}


def ours_but(*allowed: str) -> tuple[str, ...]:
    return tuple(package for package in OURS if package not in allowed)


@dataclass(frozen=True)
class Rule:
    files: str                        # a glob from the repository root ("**" for any depth)
    forbidden: tuple[str, ...]        # modules (and their submodules) these may not import
    why: str
    unless: tuple[str, ...] = ()      # files the glob takes that this rule leaves alone


RULES: tuple[Rule, ...] = (
    Rule("wire/**/*.py", ours_but("wire") + HTTP,
         "wire is what tower and agent share: it stands on nothing of ours"),
    Rule("aircrew/**/*.py", ours_but("wire", "aircrew") + HTTP,
         "the agent stands on wire alone (its image has no tower, IPAM or Flask)"),
    Rule("ipam/**/*.py", HTTP, "the zone store knows nothing of HTTP"),
    Rule("controltower/*.py", ("controltower.api",),
         "the tower's infrastructure does not depend on its HTTP layer",
         unless=("controltower/app.py",)),      # the app factory registers the blueprints
)


# -- the checker ------------------------------------------------------------------------

def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py")
                  if not SKIP_DIRS & set(p.relative_to(root).parts)
                  and not any(part.endswith(".egg-info") for part in p.parts))


def module_name(relative: Path) -> str:
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file. ``from a import b`` yields ``a`` and
    ``a.b`` (b may be a module); a relative import is resolved against the file's package."""
    relative = path.relative_to(root)
    package = module_name(relative).split(".")
    if relative.name != "__init__.py":
        package = package[:-1]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 >= len(package):
                    out.append((node.lineno, "<a relative import above the top package>"))
                    continue
                base = package[:len(package) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            out.append((node.lineno, module))
            out += [(node.lineno, f"{module}.{alias.name}") for alias in node.names
                    if alias.name != "*"]
        elif isinstance(node, ast.Call) and _is_import_call(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                out.append((node.lineno, first.value))
    return out


def _is_import_call(func: ast.expr) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in ("import_module", "__import__")


def _matches(module: str, forbidden: str) -> bool:
    return module == forbidden or module.startswith(forbidden + ".")


def violations(root: Path, rules: tuple[Rule, ...] = RULES) -> list[str]:
    out = []
    for rule in rules:
        for path in sorted(root.glob(rule.files)):
            relative = path.relative_to(root)
            if relative.as_posix() in rule.unless or SKIP_DIRS & set(relative.parts):
                continue
            for line, module in imports_of(path, root):
                if module.startswith("<") or any(_matches(module, f) for f in rule.forbidden):
                    out.append(f"{relative.as_posix()}:{line}: imports {module}: {rule.why}")
    return sorted(set(out))


# -- the repository ---------------------------------------------------------------------

def test_layers_point_one_way():
    assert violations(ROOT) == []


def test_every_rule_covers_files_and_every_file_parses():
    for rule in RULES:
        assert list(ROOT.glob(rule.files)), f"rule {rule.files!r} covers no file"
        for exempt in rule.unless:
            assert (ROOT / exempt).is_file(), f"{exempt} does not exist"
    files = python_files(ROOT)
    assert len(files) > 100
    for path in files:
        imports_of(path, ROOT)          # a syntax error would hide its imports


def test_the_agent_imports_without_the_tower_or_flask():
    """Every aircrew module imported, and `aircrew --help` run, with controltower, ipam and
    Flask unimportable (as in the agent's image)."""
    script = textwrap.dedent("""
        import importlib, pkgutil, sys

        BLOCKED = ("controltower", "ipam", "flask", "werkzeug", "gunicorn")

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"the agent imported {name}")
                return None

        sys.meta_path.insert(0, Block())
        import aircrew
        for info in pkgutil.walk_packages(aircrew.__path__, "aircrew."):
            if info.name != "aircrew.__main__":
                importlib.import_module(info.name)
        from aircrew.cli import main
        try:
            main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


# -- the checker can fail ---------------------------------------------------------------

def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def test_a_wrong_way_import_is_found_wherever_it_hides(tmp_path):
    root = tree(tmp_path, {
        "wire/__init__.py": "",
        "wire/bad.py": """
            import json

            def later():
                from controltower import db     # function level
                return db
            """,
        "aircrew/__init__.py": "",
        "aircrew/good.py": "from . import session\nfrom wire import proof\nimport redis\n",
        "aircrew/dynamic.py": "import importlib\nimportlib.import_module('ipam.store')\n",
        "aircrew/sub/__init__.py": "from ...controltower import cli\n",
        "ipam/__init__.py": "",
        "ipam/web.py": "import flask.json\n",
        "controltower/__init__.py": "",
        "controltower/db.py": "from .api.peercache import PeerCache\n",          # relative
        "controltower/worker.py": "from controltower import api\n",
        "controltower/app.py": "from .api import peers\n",                        # exempt
        "controltower/api/__init__.py": "",
        "controltower/api/peers.py": "from ..db import store\n",                  # allowed
    })
    assert violations(root) == sorted([
        "aircrew/dynamic.py:2: imports ipam.store: " + RULES[1].why,
        "aircrew/sub/__init__.py:1: imports <a relative import above the top package>: "
        + RULES[1].why,
        "controltower/db.py:1: imports controltower.api.peercache: " + RULES[3].why,
        "controltower/db.py:1: imports controltower.api.peercache.PeerCache: " + RULES[3].why,
        "controltower/worker.py:1: imports controltower.api: " + RULES[3].why,
        "ipam/web.py:1: imports flask.json: " + RULES[2].why,
        "wire/bad.py:5: imports controltower: " + RULES[0].why,
        "wire/bad.py:5: imports controltower.db: " + RULES[0].why,
    ])


def test_a_new_rule_is_one_line(tmp_path):
    root = tree(tmp_path, {"bench/harness.py": "from tests.nshelp import Host\n",
                           "bench/plot.py": "import json\n"})
    rules = RULES + (Rule("bench/**/*.py", ("tests",), "bench does not borrow from tests"),)
    assert violations(root, rules) == sorted([
        "bench/harness.py:1: imports tests.nshelp: bench does not borrow from tests",
        "bench/harness.py:1: imports tests.nshelp.Host: bench does not borrow from tests"])
    assert violations(root) == []


@pytest.mark.parametrize("relative, level, expected", [
    ("controltower/api/peers.py", 2, "controltower.db"),
    ("controltower/api/__init__.py", 1, "controltower.api.db"),
    ("controltower/db.py", 1, "controltower.db"),
])
def test_relative_imports_resolve_against_the_package(tmp_path, relative, level, expected):
    root = tree(tmp_path, {relative: f"from {'.' * level} import db\n"})
    assert expected in [module for _, module in imports_of(root / relative, root)]

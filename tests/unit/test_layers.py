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
import fnmatch
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("wire", "aircrew", "controltower", "ipam", "deploy", "bench", "tests", "testbed")
HTTP = ("flask", "werkzeug", "gunicorn")
SKIP_DIRS = {".venv", ".git", "build", "dist", "__pycache__", ".hypothesis", ".pytest_cache"}


def ours_but(*allowed: str) -> tuple[str, ...]:
    return tuple(package for package in OURS if package not in allowed)


@dataclass(frozen=True)
class Rule:
    files: str                        # a glob from the repository root ("**" for any depth)
    forbidden: tuple[str, ...]        # modules: "a" is a and a.*; fnmatch wildcards allowed
    why: str
    unless: tuple[str, ...] = ()      # globs of files the rule leaves alone


RULES: tuple[Rule, ...] = (
    Rule("wire/**/*.py", ours_but("wire") + HTTP,
         "wire is what tower and agent share: it stands on nothing of ours"),
    Rule("aircrew/**/*.py", ours_but("wire", "aircrew") + HTTP,
         "the agent stands on wire alone (its image has no tower, IPAM or Flask)"),
    Rule("ipam/**/*.py", ours_but("wire", "ipam") + HTTP,
         "the zone store stands on wire alone and knows nothing of HTTP"),
    Rule("controltower/**/*.py", ours_but("wire", "ipam", "controltower"),
         "the tower stands on wire and ipam, never on the agent or the test bed"),
    Rule("deploy/**/*.py", ours_but("wire", "deploy", "testbed"),
         "deploy ships the system; only its demo runs on the test bed"),
    Rule("controltower/*.py", ("controltower.api",),
         "the tower's infrastructure does not depend on its HTTP layer",
         unless=("controltower/app.py",)),      # the app factory registers the blueprints
    Rule("controltower/dashboard/*.py", ("controltower.api",),
         "the dashboard and the REST API are siblings: they share the tower's modules"),
    Rule("controltower/dashboard/picture.py", ("flask", "redis", "ipam", "controltower"),
         "the topology layout is pure"),
    Rule("bench/**/*.py", ("tests",), "bench does not borrow from tests: both use testbed"),
    Rule("**/*.py", ("tests",), "nothing but tests imports tests", unless=("tests/**",)),
    Rule("tests/**/*.py", ("tests.test_*", "tests.*.test_*"),
         "no test imports another test module: what they share is a helper module"),
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


def matches(module: str, pattern: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(module, pattern)
    return module == pattern or module.startswith(pattern + ".")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob: ``*`` and ``?`` stay within one directory, ``**/`` spans any (or no)
    directories, a trailing ``/**`` anything below."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def covered(relative: str, rule: Rule) -> bool:
    def glob(pattern: str) -> bool:
        return glob_regex(pattern).match(relative) is not None
    return glob(rule.files) and not any(glob(u) for u in rule.unless)


def violations(root: Path, rules: tuple[Rule, ...] = RULES) -> list[str]:
    out = []
    for path in python_files(root):
        relative = path.relative_to(root).as_posix()
        active = [rule for rule in rules if covered(relative, rule)]
        if not active:
            continue
        for line, module in imports_of(path, root):
            if module.startswith("<"):
                out.append(f"{relative}:{line}: imports {module}")
                continue
            for rule in active:
                if any(matches(module, f) for f in rule.forbidden):
                    out.append(f"{relative}:{line}: imports {module}: {rule.why}")
    return sorted(set(out))


# -- the repository ---------------------------------------------------------------------

def test_layers_point_one_way():
    assert violations(ROOT) == []


def test_every_rule_covers_files_and_every_file_parses():
    files = python_files(ROOT)
    for rule in RULES:
        assert any(covered(p.relative_to(ROOT).as_posix(), rule) for p in files), \
            f"rule {rule.files!r} covers no file"
        for exempt in rule.unless:
            assert any(glob_regex(exempt).match(p.relative_to(ROOT).as_posix())
                       for p in files), f"{exempt} matches no file"
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
        "aircrew/sub/__init__.py:1: imports <a relative import above the top package>",
        "controltower/db.py:1: imports controltower.api.peercache: " + RULES[5].why,
        "controltower/db.py:1: imports controltower.api.peercache.PeerCache: " + RULES[5].why,
        "controltower/worker.py:1: imports controltower.api: " + RULES[5].why,
        "ipam/web.py:1: imports flask.json: " + RULES[2].why,
        "wire/bad.py:5: imports controltower: " + RULES[0].why,
        "wire/bad.py:5: imports controltower.db: " + RULES[0].why,
    ])


def test_a_new_rule_is_one_line(tmp_path):
    root = tree(tmp_path, {"bench/harness.py": "from tests.nshelp import Host\n",
                           "bench/plot.py": "import json\n"})
    rules = (Rule("bench/**/*.py", ("tests",), "bench does not borrow from tests"),)
    assert violations(root, rules) == sorted([
        "bench/harness.py:1: imports tests.nshelp: bench does not borrow from tests",
        "bench/harness.py:1: imports tests.nshelp.Host: bench does not borrow from tests"])
    assert violations(root, ()) == []


@pytest.mark.parametrize("relative, level, expected", [
    ("controltower/api/peers.py", 2, "controltower.db"),
    ("controltower/api/__init__.py", 1, "controltower.api.db"),
    ("controltower/db.py", 1, "controltower.db"),
])
def test_relative_imports_resolve_against_the_package(tmp_path, relative, level, expected):
    root = tree(tmp_path, {relative: f"from {'.' * level} import db\n"})
    assert expected in [module for _, module in imports_of(root / relative, root)]


def test_tests_are_borrowed_by_nobody_and_test_modules_by_no_test(tmp_path):
    root = tree(tmp_path, {
        "bench/__init__.py": "",
        "bench/harness.py": """
            import os

            def start():
                from tests.redisproc import RedisProcess     # function level
                return RedisProcess
            """,
        "bench/other.py": "import importlib\nimportlib.import_module('tests.nshelp')\n",
        "testbed/__init__.py": "",
        "testbed/host.py": "from tests import certs\n",
        "tests/__init__.py": "",
        "tests/unit/__init__.py": "",
        "tests/unit/test_a.py": "from tests.stunvectors import TID\nfrom . import test_b\n",
        "tests/unit/test_b.py": "from testbed import host\n",
    })
    found = {line.split(": imports ")[0] + " " + line.split(": imports ")[1].split(":")[0]
             for line in violations(root)}
    assert found == {
        "bench/harness.py:5 tests.redisproc",
        "bench/harness.py:5 tests.redisproc.RedisProcess",
        "bench/other.py:2 tests.nshelp",
        "testbed/host.py:1 tests",
        "testbed/host.py:1 tests.certs",
        "tests/unit/test_a.py:2 tests.unit.test_b",
    }


@pytest.mark.parametrize("module, pattern, expected", [
    ("tests", "tests", True), ("tests.certs", "tests", True), ("testbed.host", "tests", False),
    ("tests.unit.test_x", "tests.*.test_*", True), ("tests.stunvectors", "tests.*.test_*", False),
])
def test_module_patterns(module, pattern, expected):
    assert matches(module, pattern) is expected


@pytest.mark.parametrize("path, pattern, expected", [
    ("controltower/db.py", "controltower/*.py", True),
    ("controltower/api/peers.py", "controltower/*.py", False),
    ("setup.py", "**/*.py", True), ("a/b/c.py", "**/*.py", True),
    ("tests/unit/x.py", "tests/**", True), ("testbed/x.py", "tests/**", False),
])
def test_path_globs(path, pattern, expected):
    assert (glob_regex(pattern).match(path) is not None) is expected

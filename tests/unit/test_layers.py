"""Layers point one way: ``RULES`` says which files may not import which modules.

Every import of every covered file is read with ``ast``: top-level and function-level
ones, relative ones (resolved against the file's package) and
``importlib.import_module("...")`` / ``__import__("...")`` with a literal name. A rule
is one line of the table; the checker is shown to fail on a synthetic tree.
"""
from __future__ import annotations

import ast
import fnmatch
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".venv", ".git", "build", "dist", "__pycache__", ".hypothesis", ".pytest_cache"}


@dataclass(frozen=True)
class Rule:
    files: str                        # a glob from the repository root
    forbidden: tuple[str, ...]        # module patterns: "a" is a and a.*; fnmatch wildcards
    why: str
    unless: tuple[str, ...] = ()      # globs of files the rule leaves alone


RULES: tuple[Rule, ...] = (
    Rule("bench/**/*.py", ("tests",), "bench does not borrow from tests: both use testbed"),
    Rule("**/*.py", ("tests",), "nothing but tests imports tests", unless=("tests/**",)),
    Rule("tests/**/*.py", ("tests.test_*", "tests.*.test_*"),
         "no test imports another test module: what they share is a helper module",
         unless=()),
)


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py")
                  if not SKIP_DIRS & set(p.relative_to(root).parts)
                  and not any(part.endswith(".egg-info") for part in p.parts))


def module_of(relative: Path) -> list[str]:
    parts = list(relative.with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file; ``from a import b`` gives ``a`` and ``a.b``."""
    relative = path.relative_to(root)
    package = module_of(relative) if relative.name == "__init__.py" else module_of(relative)[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                head = ".".join(base + ([node.module] if node.module else []))
            else:
                head = node.module or ""
            found.append((node.lineno, head))
            found += [(node.lineno, f"{head}.{alias.name}") for alias in node.names
                      if alias.name != "*"]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name)
                       and node.func.id in ("import_module", "__import__")))):
            found.append((node.lineno, node.args[0].value))
    return found


def matches(module: str, pattern: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(module, pattern)
    return module == pattern or module.startswith(pattern + ".")


def covered(relative: str, rule: Rule) -> bool:
    def glob(pattern: str) -> bool:
        # "**/" also matches no directory at all (a file at the top).
        return (fnmatch.fnmatchcase(relative, pattern)
                or (pattern.startswith("**/") and fnmatch.fnmatchcase(relative, pattern[3:])))
    return glob(rule.files) and not any(glob(u) for u in rule.unless)


def violations(root: Path, rules: tuple[Rule, ...]) -> list[tuple[str, int, str, str]]:
    """(file, line, module, why) of every import a rule forbids."""
    out = []
    for path in python_files(root):
        relative = path.relative_to(root).as_posix()
        active = [rule for rule in rules if covered(relative, rule)]
        if not active:
            continue
        for line, module in imports_of(path, root):
            for rule in active:
                if any(matches(module, pattern) for pattern in rule.forbidden):
                    out.append((relative, line, module, rule.why))
    return out


def test_every_import_keeps_to_the_rules():
    found = violations(ROOT, RULES)
    assert found == [], "\n".join(f"{f}:{n} imports {m}: {why}" for f, n, m, why in found)


def test_the_checker_finds_what_breaks_a_rule(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "testbed").mkdir()
    for package in ("bench", "tests", "tests/unit", "testbed"):
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "bench" / "harness.py").write_text(
        "import os\n"
        "def start():\n"
        "    from tests.redisproc import RedisProcess\n"       # function-level
        "    return RedisProcess\n")
    (tmp_path / "bench" / "other.py").write_text(
        "import importlib\nimportlib.import_module('tests.nshelp')\n")
    (tmp_path / "testbed" / "host.py").write_text("from tests import certs\n")
    (tmp_path / "tests" / "unit" / "test_a.py").write_text(
        "from tests.stunvectors import TID\nfrom . import test_b\n")   # relative: tests.unit
    (tmp_path / "tests" / "unit" / "test_b.py").write_text("from testbed import host\n")
    found = {(f, n, m) for f, n, m, _ in violations(tmp_path, RULES)}
    assert found == {
        ("bench/harness.py", 3, "tests.redisproc"),                # bench, and not tests
        ("bench/harness.py", 3, "tests.redisproc.RedisProcess"),
        ("bench/other.py", 2, "tests.nshelp"),
        ("testbed/host.py", 1, "tests"),
        ("testbed/host.py", 1, "tests.certs"),
        ("tests/unit/test_a.py", 2, "tests.unit.test_b"),          # a test module
    }


@pytest.mark.parametrize("module, pattern, expected", [
    ("tests", "tests", True), ("tests.certs", "tests", True), ("testbed.host", "tests", False),
    ("tests.unit.test_x", "tests.*.test_*", True), ("tests.stunvectors", "tests.*.test_*", False),
])
def test_module_patterns(module, pattern, expected):
    assert matches(module, pattern) is expected

"""Both command lines fail with one line, never a traceback (issue 15, item 8)."""
from __future__ import annotations

import subprocess
import sys

import pytest

AIRCREW = [sys.executable, "-m", "aircrew"]
TOWER = [sys.executable, "-m", "controltower"]


def run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def one_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text[-3000:]
    assert result.returncode == code, text[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors and len(errors[-1]) < 400 and len(result.stderr) < 2000, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.fixture
def bad_files(tmp_path):
    files = {"binary": tmp_path / "binary.toml", "deep": tmp_path / "deep.toml",
             "deep-tables": tmp_path / "deep2.toml"}
    files["binary"].write_bytes(b'zone = "\xff\xfe"\n')
    files["deep"].write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    files["deep-tables"].write_text("a = " + "{b = " * 2000 + "1" + "}" * 2000 + "\n")
    return files


@pytest.mark.parametrize("kind, words", [("binary", "not UTF-8"), ("deep", "nested too deeply"),
                                         ("deep-tables", "nested too deeply")])
def test_config_check_of_unreadable_files(bad_files, kind, words):
    for cli in (AIRCREW, TOWER):
        one_line(run([*cli, "config", "check", str(bad_files[kind])]), 1, words)


@pytest.mark.parametrize("kind", ["binary", "deep", "deep-tables"])
def test_config_option_with_unreadable_files(bad_files, kind):
    one_line(run([*AIRCREW, "--config", str(bad_files[kind]), "status"]), 2)
    one_line(run([*TOWER, "serve", "--config", str(bad_files[kind])]), 2)


@pytest.mark.parametrize("argv, code, words", [
    (["down", "--interface", ".."], 2, "interface name"),
    (["status", "--interface", "bad/x"], 2, "interface name"),
    (["down", "--interface", "a" * 20], 2, "interface name"),
    (["keygen", "--private-key-file", "/proc/no/such/dir/key"], 1, "No such file"),
])
def test_aircrew_subcommands(argv, code, words, tmp_path):
    one_line(run([*AIRCREW, *argv, *(["--state-dir", str(tmp_path)] if argv[0] != "keygen" else [])]),
             code, words)

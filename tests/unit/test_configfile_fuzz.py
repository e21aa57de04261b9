"""A fuzz of both config-file loaders (aircrew and controltower serve): whatever a file
holds, the loader answers problems with their line, or values; `config check` and
`--config` end with exit 0, 1 or 2 and never a traceback (issue 15)."""
from __future__ import annotations

import datetime
import re
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aircrew.cli import main as aircrew
from controltower.cli import main as controltower
from controltower.cli import serve
from wire import configfile
from wire.errors import InvalidInput

COMMANDS = {"aircrew": (aircrew, aircrew, []), "serve": (controltower, serve, ["serve"])}
SETTINGS = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def keys(command: click.Command) -> list[str]:
    return [o.name.replace("_", "-") for o in configfile.options(command)]


toml_scalars = (st.booleans() | st.integers(-2**70, 2**70) | st.floats()
                | st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
                | st.sampled_from(["a\x00b", "0.0.0.0/0", "10.999.0.1", "fe80::1%eth0",
                                   "nan", "../x", "redis://:p@h:1/0"])
                | st.datetimes()
                | st.dates() | st.times())


def toml_value(depth: int = 3):
    if depth == 0:
        return toml_scalars
    return st.one_of(toml_scalars, st.lists(toml_value(depth - 1), max_size=3),
                     st.dictionaries(st.text("abcxyz-_", min_size=1, max_size=5),
                                     toml_value(depth - 1), max_size=3))


def render(value) -> str:
    """A TOML value's text (tomllib reads; there is no writer in the standard library)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(value), repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\U{ord(c):08x}"
                             for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    return "{" + ", ".join(f'"{k}" = {render(v)}' for k, v in value.items()) + "}"


def documents(command: click.Command):
    known = st.sampled_from(keys(command))
    key = known | st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
    return st.lists(st.tuples(key, toml_value()), max_size=6).map(
        lambda pairs: "".join(f"{k} = {render(v)}\n" for k, v in dict(pairs).items()))


def check_answers(command: click.Command, path: Path) -> None:
    problems = configfile.check(command, path)
    for problem in problems:
        assert isinstance(problem, str) and len(problem) < 2000
        assert not re.search(r"\bline 0\b", problem)
    try:
        values = configfile.load(command, path)
    except InvalidInput:
        assert problems
    else:
        assert isinstance(values, dict)


def run_cli(name: str, path: Path) -> None:
    group, _, prefix = COMMANDS[name]
    result = CliRunner().invoke(group, [*prefix[:0], "config", "check", str(path)],
                                catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output
    # --config parses the file first; a command that does nothing with it follows
    argv = (["--config", str(path), "config", "example"] if name == "aircrew"
            else ["serve", "--config", str(path), "--help"])
    result = CliRunner().invoke(group, argv, catch_exceptions=False)
    assert result.exit_code in (0, 2), result.output


@pytest.mark.parametrize("name", list(COMMANDS))
def test_generated_toml(tmp_path_factory, name):
    command = COMMANDS[name][1]

    @SETTINGS
    @given(text=documents(command))
    def fuzz(text: str) -> None:
        path = tmp_path_factory.mktemp("fuzz") / "config.toml"
        path.write_text(text)
        tomllib.loads(text)              # the generator writes valid TOML
        check_answers(command, path)
        run_cli(name, path)
    fuzz()


def test_a_nul_in_a_value_is_a_problem_not_a_crash(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('controller-ca = "a\\u0000b"\n')
    result = CliRunner().invoke(aircrew, ["config", "check", str(path)], catch_exceptions=False)
    assert result.exit_code == 1 and "NUL character" in result.output


@pytest.mark.parametrize("name", list(COMMANDS))
def test_random_bytes_and_mutations(tmp_path_factory, name):
    command = COMMANDS[name][1]
    example = configfile.example(command, name, "X").encode()

    @SETTINGS
    @given(data=st.binary(max_size=300)
           | st.tuples(st.integers(0, len(example) - 1), st.binary(min_size=1, max_size=8)).map(
               lambda m: example[:m[0]] + m[1] + example[m[0] + len(m[1]):])
           | st.sampled_from([b"a = " + b"[" * 5000, b"a = " + b"{b = " * 3000,
                              b"\xff\xfe\x00", b"[" * 100_000]))
    def fuzz(data: bytes) -> None:
        path = tmp_path_factory.mktemp("fuzz") / "config.toml"
        path.write_bytes(data)
        check_answers(command, path)
        run_cli(name, path)
    fuzz()

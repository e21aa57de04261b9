"""Config files for both command lines, generated from the click options themselves.

The click options are the one source of truth: `--help`, `config example` and
`config check` all read them. A config file is TOML with the long option names
(`listen-port = 51820`); precedence is command line > environment > file.
``option_callback`` is the callback of both command lines' eager ``--config`` option.
"""
from __future__ import annotations

import re
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .errors import InvalidInput

SKIP = {"config_file", "help"}


def options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and p.name not in SKIP]


def envvar(option: click.Option, prefix: str) -> str:
    if isinstance(option.envvar, str):
        return option.envvar
    return f"{prefix}_{option.name.upper()}"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def default(option: click.Option) -> Any:
    """The option's default, or None when it has none (click marks that with a sentinel)."""
    value = option.default
    return None if value is None or "UNSET" in repr(value) else value


def example(command: click.Command, title: str, prefix: str,
            required: frozenset[str] = frozenset()) -> str:
    """A complete, commented config file: every option, its default and its variable."""
    lines = [f"# {title} configuration (TOML). Precedence: command line > environment "
             "> this file.", "# Uncomment what you change.", ""]
    for option in options(command):
        key = option.name.replace("_", "-")
        text = option.help or ""
        lines += [f"# {line}" for line in textwrap.wrap(text, 86)]
        lines.append(f"# environment: {envvar(option, prefix)}"
                     + ("   REQUIRED" if option.name in required else ""))
        value = default(option)
        if option.multiple:
            lines.append(f"# {key} = {_toml(value or [])}")
        elif option.is_flag:
            lines.append(f"# {key} = {_toml(bool(value))}")
        elif value is None:
            lines.append(f"# {key} = \"\"   (no default)")
        else:
            lines.append(f"# {key} = {_toml(value)}")
        lines.append("")
    return "\n".join(lines)


def load(command: click.Command, path: Path) -> dict[str, Any]:
    """The file as click's default_map; raises InvalidInput naming the first problem. A
    file that others may read while it sets a secret option is used, with a warning."""
    problems, values, warnings = _read(command, path)
    if problems:
        raise InvalidInput(f"config file {path}: {problems[0]}")
    for warning in warnings:
        click.echo(f"warning: config file {path}: {warning}", err=True)
    return values


def option_callback(ctx: click.Context, _param: click.Parameter,
                    value: str | None) -> str | None:
    """The ``--config FILE`` callback: the file's values become the command's defaults
    (so the command line and the environment still win), and those of its subcommands
    for the options they share (``aircrew --config f status`` uses the file's
    interface); a bad file is a BadParameter."""
    if value:
        try:
            values = load(ctx.command, Path(value))
        except InvalidInput as exc:
            raise click.BadParameter(str(exc)) from None
        for name, sub in getattr(ctx.command, "commands", {}).items():
            shared = {p.name for p in sub.params if isinstance(p, click.Option)}
            values[name] = {k: v for k, v in values.items() if k in shared}
        ctx.default_map = values
    return value


def check(command: click.Command, path: Path,
          cross_checks: Callable[[dict[str, Any]], list[str]] | None = None) -> list[str]:
    """Every problem of a config file, each with its line; ``cross_checks`` gets the file's
    values and names what is wrong with them together (two options that exclude each
    other...)."""
    problems, values, warnings = _read(command, path)
    if not problems and cross_checks is not None:
        problems = cross_checks(values)
    return problems + warnings


def _read(command: click.Command, path: Path) -> tuple[list[str], dict[str, Any], list[str]]:
    """(problems, values, warnings) of a config file."""
    try:
        raw = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        return [f"cannot read it: {exc.strerror}"], {}, []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return [f"line {line}: not UTF-8 text"], {}, []
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [str(exc)], {}, []
    except RecursionError:
        return ["nested too deeply to be a config file"], {}, []
    known = {o.name: o for o in options(command)}
    problems: list[str] = []
    values: dict[str, Any] = {}
    secrets_set = []
    for key, value in data.items():
        where = f"line {_line_of(text, key)}"
        option = known.get(key.replace("-", "_"))
        if option is None:
            kind = "section" if isinstance(value, dict) else "option"
            problems.append(f"{where}: unknown {kind} {key!r}")
            continue
        try:
            values[option.name] = _value(option, value)
        except click.BadParameter as exc:
            problems.append(f"{where}: {key}: {exc.message}")
            continue
        if getattr(option, "secret", False):
            secrets_set.append(key)
    warnings = []
    if secrets_set and mode & 0o077:
        warnings.append(f"it sets {', '.join(secrets_set)} and other users may read it: "
                        "chmod 600 it")
    return problems, values, warnings


def _value(option: click.Option, value: Any) -> Any:
    """A TOML value for an option, of the option's kind (no silent conversion of a table,
    a list or a boolean into text or a number), then checked by the option's own type."""
    if option.multiple:
        if not isinstance(value, list):
            raise click.BadParameter("must be a list")
        return [_scalar(option, item) for item in value]
    return _scalar(option, value)


def _scalar(option: click.Option, value: Any) -> Any:
    if option.is_flag:
        if not isinstance(value, bool):
            raise click.BadParameter("must be true or false")
        return value
    kind = option.type
    if isinstance(value, (dict, list)):
        raise click.BadParameter(f"must be a single value, not a {'table' if isinstance(value, dict) else 'list'}")
    if isinstance(value, bool):
        raise click.BadParameter("must not be true or false")
    if isinstance(kind, click.types.IntParamType) and not isinstance(value, int):
        raise click.BadParameter("must be a whole number")
    if isinstance(kind, click.types.FloatParamType) and not isinstance(value, (int, float)):
        raise click.BadParameter("must be a number")
    if not isinstance(kind, (click.types.IntParamType, click.types.FloatParamType)) \
            and not isinstance(value, str):
        raise click.BadParameter("must be a string (in quotes)")
    if isinstance(value, str) and "\x00" in value:
        raise click.BadParameter("must not contain a NUL character")
    return kind.convert(value, option, None)


def _line_of(text: str, key: str) -> int:
    pattern = re.compile(rf"^[ \t]*(\[[ \t]*)?[\"']?{re.escape(key)}[\"']?[ \t]*(=|\]|\.)",
                         re.MULTILINE)
    found = pattern.search(text)
    return text.count("\n", 0, found.start()) + 1 if found else 1


def check_and_report(command: click.Command, path: Path,
                     cross_checks: Callable[[dict[str, Any]], list[str]] | None = None) -> None:
    """`config check`: print every problem with its line; exit 1 when there is one."""
    problems = check(command, path, cross_checks)
    for problem in problems:
        click.echo(f"{path}: {problem}", err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"{path}: ok")

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


def _default(option: click.Option) -> Any:
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
        default = _default(option)
        if option.multiple:
            lines.append(f"# {key} = {_toml(default or [])}")
        elif option.is_flag:
            lines.append(f"# {key} = {_toml(bool(default))}")
        elif default is None:
            lines.append(f"# {key} = \"\"   (no default)")
        else:
            lines.append(f"# {key} = {_toml(default)}")
        lines.append("")
    return "\n".join(lines)


def load(command: click.Command, path: Path) -> dict[str, Any]:
    """The file as click's default_map; raises InvalidInput naming the first problem."""
    problems, values = _read(command, path)
    if problems:
        raise InvalidInput(f"config file {path}: {problems[0]}")
    return values


def option_callback(ctx: click.Context, _param: click.Parameter,
                    value: str | None) -> str | None:
    """The ``--config FILE`` callback: the file's values become the command's defaults
    (so the command line and the environment still win); a bad file is a BadParameter."""
    if value:
        try:
            ctx.default_map = load(ctx.command, Path(value))
        except InvalidInput as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def check(command: click.Command, path: Path) -> list[str]:
    """Every problem of a config file, each with its line."""
    return _read(command, path)[0]


def _read(command: click.Command, path: Path) -> tuple[list[str], dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError as exc:
        return [f"cannot read it: {exc.strerror}"], {}
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [str(exc)], {}
    known = {o.name: o for o in options(command)}
    problems: list[str] = []
    values: dict[str, Any] = {}
    for key, value in data.items():
        where = f"line {_line_of(text, key)}"
        option = known.get(key.replace("-", "_"))
        if option is None:
            problems.append(f"{where}: unknown option {key!r}")
            continue
        try:
            items = value if option.multiple else [value]
            if option.multiple and not isinstance(value, list):
                raise click.BadParameter("must be a list")
            converted = [option.type.convert(v, option, None) for v in items]
            values[option.name] = converted if option.multiple else converted[0]
        except click.BadParameter as exc:
            problems.append(f"{where}: {key}: {exc.message}")
    return problems, values


def _line_of(text: str, key: str) -> int:
    pattern = re.compile(rf"^[ \t]*[\"']?{re.escape(key)}[\"']?[ \t]*=", re.MULTILINE)
    found = pattern.search(text)
    return text.count("\n", 0, found.start()) + 1 if found else 0


def check_and_report(command: click.Command, path: Path) -> None:
    """`config check`: print every problem with its line; exit 1 when there is one."""
    problems = check(command, path)
    for problem in problems:
        click.echo(f"{path}: {problem}", err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"{path}: ok")

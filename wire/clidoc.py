"""The command-line reference (docs/cli.md), rendered from the click commands themselves.

``--help``, ``config example`` and this reference read the same options, so none of them
can leave one out. ``tests/unit/test_cli_docs.py`` fails when docs/cli.md differs from
what this renders (``UPDATE_CLI_DOCS=1`` rewrites it).
"""
from __future__ import annotations

from collections.abc import Iterator

import click

HEADER = """# Command-line reference

Every command and option of `controltower` and `aircrew`, with the environment variable
that sets it and its default, as `--help` shows them. Options of `aircrew` and
`controltower serve` can also be set in a TOML config file (`--config`, keys are the long
option names; see [operations.md](operations.md#configuration-files)). Precedence:
command line > environment > config file > default. One-off flags (`--force`, `--json`)
have no variable.

This file is generated from the commands (`tests/unit/test_cli_docs.py`; run it with
`UPDATE_CLI_DOCS=1` to rewrite it after changing an option).
"""


def commands(name: str, command: click.Command) -> Iterator[tuple[str, click.Command]]:
    """(full name, command) of a command and every subcommand, depth first."""
    yield name, command
    for sub_name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from commands(f"{name} {sub_name}", sub)


def render(roots: dict[str, click.Command]) -> str:
    out = [HEADER]
    for root_name, root in roots.items():
        for name, command in commands(root_name, root):
            out.append(_command(name, command))
    return "\n".join(out)


def _command(name: str, command: click.Command) -> str:
    ctx = click.Context(command, info_name=name)
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines = [f"## `{name}`", "", f"    {name} {usage}".rstrip(), ""]
    help_text = (command.help or "").strip()
    if help_text:
        lines += [_one_paragraph(help_text), ""]
    rows = [_row(ctx, p) for p in command.params
            if isinstance(p, click.Option) and p.name != "help"]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if arguments:
        lines += ["Arguments: " + ", ".join(f"`{a.human_readable_name}`" for a in arguments), ""]
    if rows:
        lines += ["| option | variable | default | what |", "|---|---|---|---|", *rows, ""]
    return "\n".join(lines)


def _row(ctx: click.Context, option: click.Option) -> str:
    flags = ", ".join(f"`{f}`" for f in [*option.opts, *option.secondary_opts])
    if option.is_flag and not option.secondary_opts:
        default = ""
    else:
        value = option.get_default(ctx, call=False)
        default = "" if value is None or "UNSET" in repr(value) or value == () else f"`{_text(value)}`"
    envvar = option.envvar
    names = [envvar] if isinstance(envvar, str) else list(envvar or [])
    variable = ", ".join(f"`{n}`" for n in names)
    what = _one_paragraph(option.help or "").replace("|", "\\|")
    return f"| {flags} | {variable} | {default} | {what} |"


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _one_paragraph(text: str) -> str:
    return " ".join(text.split())

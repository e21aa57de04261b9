"""Check a command line the way a container or unit would run it, with the real click commands."""
from __future__ import annotations

import os
import shlex
import warnings

import click
import pytest


def roots() -> dict[str, click.Group]:
    """The project's console scripts: name -> click group."""
    from aircrew.cli import main as aircrew_main
    from controltower.cli import main as tower_main
    return {"controltower": tower_main, "aircrew": aircrew_main}


def parse_command(argv: list[str], env: dict[str, str], monkeypatch) -> click.Context:
    """Parse argv with the real click command, in this environment; fail on any error."""
    for name in list(os.environ):
        if name.startswith(("CONTROLTOWER_", "AIRCREW_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    name, command, args, parent = argv[0], roots()[argv[0]], list(argv[1:]), None
    while isinstance(command, click.Group) and args and args[0] in command.commands:
        parent = command.make_context(name, [], parent=parent, resilient_parsing=True)
        name, command, args = args[0], command.commands[args[0]], args[1:]
    try:
        ctx = command.make_context(name, args, parent=parent)
    except click.ClickException as exc:
        pytest.fail(f"{shlex.join(argv)}: {exc.format_message()}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        leftover = [*ctx.protected_args, *ctx.args]
    assert not leftover, f"{shlex.join(argv)}: stray arguments {leftover}"
    return ctx


def envvars_of(command: click.Command, ctx: click.Context) -> set[str]:
    """The environment variables the options of a command read (explicit or automatic)."""
    names = set()
    for param in command.params:
        if isinstance(param, click.Option):
            if param.envvar:
                names |= {param.envvar} if isinstance(param.envvar, str) else set(param.envvar)
            elif ctx.auto_envvar_prefix and param.name:
                names.add(f"{ctx.auto_envvar_prefix}_{param.name.upper()}")
    return names

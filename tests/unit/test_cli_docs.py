"""--help, the docs and the example env files are one source (issue 15, item 19)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from aircrew.cli import main as aircrew
from controltower.cli import main as controltower
from wire import clidoc, clitypes

ROOT = Path(__file__).resolve().parents[2]
CLI_DOC = ROOT / "docs" / "cli.md"
ROOTS = {"controltower": controltower, "aircrew": aircrew}
ALL = [(name, command) for root, group in ROOTS.items()
       for name, command in clidoc.commands(root, group)]


def options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and p.name != "help"]


def test_docs_cli_md_is_what_the_commands_say():
    rendered = clidoc.render(ROOTS)
    if os.environ.get("UPDATE_CLI_DOCS"):
        CLI_DOC.write_text(rendered)
    assert CLI_DOC.read_text() == rendered, (
        "docs/cli.md differs from the commands: run UPDATE_CLI_DOCS=1 pytest "
        "tests/unit/test_cli_docs.py and review the diff")


@pytest.mark.parametrize("name, command", ALL, ids=[name for name, _ in ALL])
def test_every_option_has_help_and_a_shown_variable(name, command):
    result = CliRunner().invoke(ROOTS[name.split()[0]], [*name.split()[1:], "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for option in options(command):
        assert option.help, f"{name} {option.opts[0]} has no help text"
        if option.name in clitypes.NO_VARIABLE:
            continue
        if not clitypes.variables(option) and name.startswith("controltower ") \
                and name != "controltower serve":
            continue    # an admin command's option about the one object it handles
        variable = clitypes.variables(option)[0]
        assert variable in text, f"{name} --help does not show {variable} for {option.opts[0]}"
        assert f"`{variable}`" in CLI_DOC.read_text()


def test_an_option_missing_from_the_docs_fails():
    """The check above is real: a new option the reference does not know changes it."""
    @click.command()
    @click.option("--brand-new", envvar="AIRCREW_BRAND_NEW", help="New.")
    def extra(brand_new):
        pass
    assert "--brand-new" not in CLI_DOC.read_text()
    assert "`--brand-new`" in clidoc.render({"x": extra})


def test_subcommands_read_the_agents_variables():
    """issue 15, item 20: `aircrew status`/`down` read AIRCREW_INTERFACE and
    AIRCREW_STATE_DIR (not AIRCREW_STATUS_INTERFACE), as the agent does."""
    for sub in ("status", "down"):
        command = aircrew.commands[sub]
        found = {o.name: clitypes.variables(o) for o in options(command)}
        assert found["interface"] == ["AIRCREW_INTERFACE"]
        assert found["state_dir"] == ["AIRCREW_STATE_DIR"]


@pytest.mark.parametrize("example, command", [("aircrew.env.example", aircrew),
                                               ("controltower.env.example",
                                                controltower.commands["serve"])])
def test_the_example_env_files_name_every_variable(example, command):
    text = (ROOT / "deploy" / "systemd" / example).read_text()
    named = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.M))
    missing = []
    for option in options(command):
        variables = clitypes.variables(option)
        if variables and option.name != "config_file" and not set(variables) & named:
            missing.append(variables[0])
    assert missing == [], f"{example} lacks {missing}"


def test_documented_variables_exist():
    known = {v for _, command in ALL for option in options(command)
             for v in clitypes.variables(option)}
    known |= {"CONTROLTOWER_WORKER_ID", "WG_QUICK_USERSPACE_IMPLEMENTATION",
              "CONTROLTOWER_DEFAULT_ZONE_SECRET_FILE"}
    compose = (ROOT / "deploy" / "compose.env.example").read_text()
    known |= set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", compose, re.M))
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    unknown = set()
    for path in texts:
        for name in re.findall(r"\b((?:AIRCREW|CONTROLTOWER)_[A-Z0-9_]+)\b", path.read_text()):
            if name not in known and not name.endswith("_"):
                unknown.add(f"{path.name}: {name}")
    assert unknown == set()

"""Self-documenting config: examples generated from the options, and the linter."""
from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from aircrew.cli import main as aircrew
from controltower.cli import main as controltower
from controltower.cli import serve
from wire import configfile


def uncomment(example: str) -> str:
    """Turn every documented option of an example into a live setting."""
    return "\n".join(re.sub(r"^# ([a-z-]+ = )", r"\1", line) for line in example.splitlines()
                     if "(no default)" not in line)


@pytest.mark.parametrize("cli, command, prefix", [(aircrew, aircrew, "AIRCREW"),
                                                  (controltower, serve, "CONTROLTOWER")])
def test_example_documents_every_option_and_passes_the_check(tmp_path, cli, command, prefix):
    result = CliRunner().invoke(cli, ["config", "example"])
    assert result.exit_code == 0, result.output
    for option in configfile.options(command):
        key = option.name.replace("_", "-")
        assert re.search(rf"^# {key} = ", result.output, re.M), key
        assert configfile.envvar(option, prefix) in result.output
    path = tmp_path / "example.toml"
    path.write_text(uncomment(result.output))
    checked = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert checked.exit_code == 0 and checked.output.strip().endswith(": ok"), checked.output


def test_aircrew_example_marks_the_required_controller():
    out = CliRunner().invoke(aircrew, ["config", "example"]).output
    assert "# environment: AIRCREW_CONTROLLER   REQUIRED" in out


def test_check_reports_every_problem_with_its_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('zone = "z"\nlisten-port = "abc"\n\nfoo = 1\nchild-prefix = "x"\n')
    result = CliRunner().invoke(aircrew, ["config", "check", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 3
    assert "line 2: listen-port:" in lines[0] and "must be a whole number" in lines[0]
    assert "line 4: unknown option 'foo'" in lines[1]
    assert "line 5: child-prefix: must be a list" in lines[2]
    path.write_text("port = \n")
    result = CliRunner().invoke(controltower, ["config", "check", str(path)])
    assert result.exit_code == 1 and "line 1" in result.output


def test_serve_reads_a_config_file(tmp_path, monkeypatch):
    seen = {}

    class FakeTower:
        def __init__(self, settings):
            seen["settings"] = settings

        def run(self):
            return 0
    monkeypatch.setattr("controltower.cli.Tower", FakeTower)
    path = tmp_path / "tower.toml"
    path.write_text('port = 9090\nstun-port = 0\nlisten = "127.0.0.1"\n')
    result = CliRunner().invoke(controltower, ["serve", "--config", str(path), "--port", "9191"],
                                env={"CONTROLTOWER_STUN_PORT": "4000"})
    assert result.exit_code == 0, result.output
    s = seen["settings"]
    assert (s.port, s.stun_port, s.listen) == (9191, 4000, "127.0.0.1")

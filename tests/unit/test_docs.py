"""The documents say what the code does (issue 15, items 13, 16, 21, and the quickstart's
shape; tests/netns/test_quickstart.py runs it)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from aircrew.agent import ENDED
from testbed import walkthrough
from wire.errors import CLASSES

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPEN_PATHS = re.compile(r"/(health|ready|metrics|openapi\.json)\b")


def code_lines(path: Path) -> list[str]:
    """Lines of the document's code: indented blocks and fenced blocks."""
    out, fenced = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            out.append(line.strip())
    return out


def commands(path: Path, word: str) -> list[str]:
    """Commands starting with ``word``, continuation lines joined."""
    lines, out, current = code_lines(path), [], None
    for line in lines:
        if current is not None:
            current += " " + line
        elif line.startswith(word + " "):
            current = line
        if current is not None and not current.endswith("\\"):
            out.append(current)
            current = None
    return out


@pytest.mark.parametrize("path", [ROOT / "README.md", ROOT / "docs" / "api.md",
                                  ROOT / "docs" / "quickstart.md"], ids=lambda p: p.name)
def test_api_examples_carry_the_token(path):
    """The tower listens on every address by default, so reads need the token too."""
    for command in commands(path, "curl"):
        if "localhost:8080" in command or "$API" in command or "127.0.0.1:8080" in command:
            if not OPEN_PATHS.search(command):
                assert "Authorization: Bearer" in command, command


def test_no_stale_words():
    for path in DOCS:
        text = path.read_text()
        assert "python -m json.tool" not in text, path.name     # Debian has python3
        assert "make demo --" not in text, path.name            # make would read the flag
        assert "speaks plain" not in text, path.name            # it serves HTTPS and mTLS
    ops = (ROOT / "docs" / "operations.md").read_text() + (ROOT / "docs" / "api.md").read_text()
    assert "registers again" not in ops and "register again:" not in ops


def test_a_deleted_nodes_agent_is_not_restarted():
    """api.md and operations.md say the agent exits 3 and the units do not restart it."""
    assert ENDED == 3
    for unit in ("aircrew.service", "aircrew@.service"):
        text = (ROOT / "deploy" / "systemd" / unit).read_text()
        assert re.search(r"^RestartPreventExitStatus=3$", text, re.M)
    assert "exits with status 3" in (ROOT / "docs" / "api.md").read_text()


def test_every_redis_cli_carries_the_tower_credentials():
    for path in DOCS:
        for line in code_lines(path):
            if "redis-cli" in line and "docker compose exec" not in line:
                assert "REDISCLI_AUTH" in line and "--user" in line, (path.name, line)


def test_the_status_lists_name_every_status():
    statuses = {str(status) for status, _ in CLASSES.values()} | {"405", "413", "414", "431"}
    readme = (ROOT / "README.md").read_text()
    api = (ROOT / "docs" / "api.md").read_text()
    for status in statuses:
        assert re.search(rf"\b{status}\b", readme), status
        assert f"| {status} |" in api, status


def test_the_quickstart_is_one_walkthrough():
    steps = walkthrough.parse((ROOT / "docs" / "quickstart.md").read_text())
    assert steps.hosts == {"tower", "vm1", "vm2", "laptop"}
    last = steps.items[-1]
    assert isinstance(last, walkthrough.Step) and last.hosts == ("laptop",)
    assert last.script.startswith("ping ")
    # no secret on a command line: the credential goes through stdin into a 0600 file
    credential = [s for s in steps.items if isinstance(s, walkthrough.Step) and s.stdin]
    assert credential and all("0600" in s.script for s in credential)
    for item in steps.items:
        if isinstance(item, walkthrough.Step):
            assert "PASSWORD=" not in item.script and "--controller-password " not in item.script


def test_the_quickstart_installs_only_what_make_installs():
    apt = re.search(r"APT_PACKAGES := (.*?)\n\S", (ROOT / "Makefile").read_text(), re.S)
    packages = set(apt.group(1).replace("\\", " ").split()) | {"make", "python3"}
    steps = walkthrough.parse((ROOT / "docs" / "quickstart.md").read_text())
    wanted = set()
    for item in steps.items:
        if isinstance(item, walkthrough.Step):
            for found in re.findall(r"apt-get install -y ([^\n]+)", item.script):
                wanted |= set(found.split())
    assert wanted and wanted <= packages, wanted - packages


def test_markers_are_checked():
    with pytest.raises(walkthrough.WalkthroughError, match="without a walkthrough marker"):
        walkthrough.parse("```sh\nls\n```\n")
    with pytest.raises(walkthrough.WalkthroughError, match="names no earlier step"):
        walkthrough.parse("<!-- walkthrough: on=a stdin=x -->\n```sh\nls\n```\n")

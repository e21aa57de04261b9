"""docs/quickstart.md, run: its command blocks, read from the Markdown, on a lab with a
tower, two public VMs and a laptop behind a cone NAT, with real wireguard-go; the last
block (the laptop pings vm1 over wg0) must pass (issue 15, "what this issue must show").
README's curl examples then run against that tower (item 13)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from testbed import walkthrough
from testbed.lab import Lab

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "docs" / "quickstart.md"


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    steps = walkthrough.parse(QUICKSTART.read_text())
    with Lab() as lab:
        hosts = {"tower": lab.add_public_host("tower"), "vm1": lab.add_public_host("vm1"),
                 "vm2": lab.add_public_host("vm2")}
        hosts["laptop"] = lab.add_private_host("laptop", lab.add_nat("nat1", "cone"))
        assert [hosts[n].address for n in ("tower", "vm1", "vm2")] == [
            "203.0.113.10", "203.0.113.11", "203.0.113.12"]      # the document's addresses
        runner = walkthrough.Runner(hosts, tmp_path_factory.mktemp("walk"),
                                    workdirs={"tower": ROOT})
        try:
            results = runner.run(steps)
            yield steps, runner, results
        finally:
            runner.close()


def test_every_step_of_the_quickstart_passes(walked):
    steps, runner, results = walked
    failed = [r for r in results if r.returncode != 0]
    assert not failed, failed[0].describe() + "\n--- background logs\n" + "\n".join(
        f"{p.name} on {p.host.name}:\n{p.log_text()[-2000:]}" for p in runner.background)
    ran = sum(len(s.hosts) for s in steps.items
              if isinstance(s, walkthrough.Step) and not s.background)
    assert len(results) == ran
    last = results[-1]
    assert last.host == "laptop" and "ping" in last.step.script
    assert re.search(rb" 0% packet loss| [1-4]0% packet loss", last.stdout), last.stdout


def test_readme_curl_examples_answer_on_that_tower(walked):
    """The README's REST examples, as written, against the tower of the walkthrough (which
    listens on 0.0.0.0, so reads need the token): no 401 or 403."""
    _, runner, _ = walked
    readme = (ROOT / "README.md").read_text()
    commands = curl_commands(readme)
    assert len(commands) >= 4
    setup = "\n".join(m.strip() for m in re.findall(r"^    [A-Z_]+=.*$", readme, re.M))
    for command in commands:
        proc = subprocess.run(runner.argv("tower", f"{setup}\n{command}"), capture_output=True,
                              timeout=60)
        text = proc.stdout.decode(errors="replace")
        assert proc.returncode == 0, (command, proc.stderr)
        assert "Authorization: Bearer" not in text and "token is not valid" not in text, \
            (command, text)


def curl_commands(markdown: str) -> list[str]:
    """Every curl command of the document's code (indented or fenced), continuation
    lines joined."""
    commands, current = [], None
    for line in markdown.splitlines():
        code = line[4:] if line.startswith("    ") else line
        if current is not None:
            current += "\n" + code
            if not code.rstrip().endswith("\\") and current.count("'") % 2 == 0:
                commands.append(current)
                current = None
            continue
        if code.lstrip().startswith("curl "):
            current = code.strip()
            if not current.endswith("\\") and current.count("'") % 2 == 0:
                commands.append(current)
                current = None
    return commands

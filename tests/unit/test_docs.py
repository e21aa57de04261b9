"""The documents say what the code does (issue 15, items 13, 16, 21, and the quickstart's
shape; tests/netns/test_quickstart.py runs it)."""
from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from aircrew.agent import ENDED
from testbed import walkthrough
from tests.makecheck import make_variable
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


def test_no_doc_points_at_the_developers_machine():
    """A reader has the repository, not our working directories."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert "/work/" not in path.read_text(), path.name


def test_operating_docs_run_the_virtualenvs_python():
    """On a fresh Debian there is no `python`, and python3 has not the project: the
    commands a newcomer runs from the repository say `.venv/bin/python`."""
    for name in ("README.md", "docs/quickstart.md", "docs/dashboard.md", "docs/operations.md"):
        text = (ROOT / name).read_text()
        assert not re.search(r"(?<![\w/.])python3? -m (testbed|bench|deploy)", text), name


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
    packages = set(make_variable("APT_PACKAGES")) | {"make", "python3"}
    steps = walkthrough.parse((ROOT / "docs" / "quickstart.md").read_text())
    wanted = set()
    for item in steps.items:
        if isinstance(item, walkthrough.Step):
            for found in re.findall(r"apt-get install -y ([^\n]+)", item.script):
                wanted |= set(found.split())
    assert wanted and wanted <= packages, wanted - packages


def test_the_readme_names_every_package_make_installs():
    readme = " ".join((ROOT / "README.md").read_text().split())
    named = set(re.search(r"Debian packages: (.*?);", readme).group(1).replace(",", " ")
                .replace(" and ", " ").split())
    assert set(make_variable("APT_PACKAGES")) <= named


def test_markers_are_checked():
    with pytest.raises(walkthrough.WalkthroughError, match="without a walkthrough marker"):
        walkthrough.parse("```sh\nls\n```\n")
    with pytest.raises(walkthrough.WalkthroughError, match="names no earlier step"):
        walkthrough.parse("<!-- walkthrough: on=a stdin=x -->\n```sh\nls\n```\n")


# --- references: links, anchors, repository paths, flags and metric names -----------------

# Paths the docs name that are not in the repository on purpose: files the reader makes
# (copies of the example env files) and the past (a module performance.md's history names).
MADE_BY_THE_READER = {"deploy/compose.env", "deploy/compose.cluster.env", "bench/simagent.py"}
REPO_PATH = re.compile(r"(?<![\w/.$~-])((?:aircrew|controltower|wire|ipam|testbed|tests|deploy|"
                       r"bench|docs)/[A-Za-z0-9_./*@-]*[A-Za-z0-9_/*@-])")
TERMINATORS = {"|", "||", "&&", ";", ">", "<", "2>&1"}


def prose_and_code(path: Path) -> tuple[str, list[str]]:
    """The document's prose (code blocks blanked) and its code lines, continuation
    lines (``\\``) joined."""
    prose, code, fenced, current = [], [], False, None
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            prose.append("")
            continue
        if fenced or line.startswith("    "):
            prose.append("")
            current = line.strip() if current is None else f"{current} {line.strip()}"
            if current.endswith("\\"):
                current = current[:-1]
            else:
                code.append(current)
                current = None
        else:
            prose.append(line)
    return "\n".join(prose), code


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_and_anchors_resolve():
    broken = []
    for path in DOCS:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", path.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            linked = (path.parent / target) if target else path
            if not linked.exists():
                broken.append(f"{path.name}: {target}")
            elif anchor and linked.suffix == ".md":
                headings = {slug(h) for h in re.findall(r"^#+\s+(.*)$", linked.read_text(), re.M)}
                if anchor not in headings:
                    broken.append(f"{path.name}: {target}#{anchor}")
    assert broken == []


def test_repository_paths_named_in_the_docs_exist():
    missing = set()
    for path in DOCS:
        for name in REPO_PATH.findall(path.read_text()):
            name = name.rstrip(".")
            if name in MADE_BY_THE_READER:
                continue
            if not ((ROOT / name).exists() or ("*" in name and list(ROOT.glob(name)))):
                missing.add(f"{path.name}: {name}")
    assert missing == set()


def unknown_flags(text: str) -> list[str]:
    """Long flags given to ``controltower``/``aircrew`` (and their subcommands) in
    ``text`` (one command line) that the command does not have."""
    from aircrew.cli import main as aircrew
    from controltower.cli import main as controltower
    roots = {"controltower": controltower, "aircrew": aircrew}
    words = text.split()
    found = []
    for i, word in enumerate(words):
        name = word.rsplit("bin/", 1)[-1]
        if name not in roots or (i and words[i - 1].startswith("-")) \
                or (i + 1 < len(words) and words[i + 1] in roots):
            continue     # `journalctl -u controltower`, `exec controltower controltower ...`
        command, path = roots[name], name
        for token in words[i + 1:]:
            token = token.strip("[](){},.:'\"")
            if token in TERMINATORS or token.startswith("#"):
                break
            if isinstance(command, click.Group) and token in command.commands:
                command, path = command.commands[token], f"{path} {token}"
            elif token.startswith("--"):
                flag = token.split("=")[0]
                known = {o for p in command.params if isinstance(p, click.Option)
                         for o in (*p.opts, *p.secondary_opts)} | {"--help"}
                if flag not in known:
                    found.append(f"{path} {flag}")
    return found


def test_every_flag_the_docs_give_a_command_exists():
    """docs/cli.md is generated; the other documents name flags by hand."""
    unknown = []
    for path in DOCS:
        if path.name == "cli.md":
            continue
        prose, code = prose_and_code(path)
        for text in [*re.findall(r"`([^`]+)`", prose), *code]:
            unknown += [f"{path.name}: {flag}" for flag in unknown_flags(text)]
    assert unknown == []


def test_an_unknown_flag_in_the_docs_is_found():
    assert unknown_flags("sudo controltower joinkey create z --expires 1h [--tag t]") == []
    assert unknown_flags("aircrew --config f.toml down --controller-ca ca.pem") == []
    assert unknown_flags("sudo aircrew down --controler 203.0.113.10") == \
        ["aircrew down --controler"]
    assert unknown_flags("controltower zone set z --zone-secrets off | cat --x") == \
        ["controltower zone set --zone-secrets"]
    assert unknown_flags("journalctl -u controltower -o cat") == []


def exposed_metrics() -> set[str]:
    """Metric names as /metrics shows them, from their definitions (a Counter named
    ``x`` is exposed as ``x_total``; a histogram also as ``x_bucket``...)."""
    names = set()
    for source in [*(ROOT / "controltower").rglob("*.py"), *(ROOT / "aircrew").rglob("*.py")]:
        for kind, name in re.findall(r"\b(Counter|Gauge|Histogram|Summary|GaugeMetricFamily|"
                                     r"CounterMetricFamily|HistogramMetricFamily)"
                                     r"\(\s*\"([a-z_]+)\"", source.read_text()):
            if kind.startswith("Counter"):
                names.add(name.removesuffix("_total") + "_total")
            elif kind.startswith("Histogram"):
                names |= {name + suffix for suffix in ("", "_bucket", "_sum", "_count")}
            else:
                names.add(name)
    return names


def test_documented_metric_names_are_the_exposed_ones():
    exposed = exposed_metrics()
    assert {"controltower_registrations_total", "controltower_policy_nodes",
            "aircrew_resyncs_total", "controltower_publish_latency_seconds_bucket"} <= exposed
    unknown = set()
    for path in DOCS:
        for name in re.findall(r"\b((?:controltower|aircrew)_[a-z][a-z0-9_]*)\b", path.read_text()):
            if name not in exposed and not name.endswith("_"):
                unknown.add(f"{path.name}: {name}")
    assert unknown == set()

"""The command blocks of a Markdown walkthrough and where each one runs (pure).

A fenced ``sh`` block is a step when the line before it (blank lines aside) is a marker:

    <!-- walkthrough: on=tower -->                          run on that host
    <!-- walkthrough: on=vm1,vm2 name=x background -->      long-running; spawned
    <!-- walkthrough: on=laptop stdin=credential -->        fed the output of step x
    <!-- walkthrough: copy tower:dist/a.whl -> vm1,vm2:a.whl -->   a file a person copies

Every ``sh`` block must be a step: a command block the test would not run could drift.
"""
from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

_MARKER = re.compile(r"^<!--\s*walkthrough:\s*(.*?)\s*-->\s*$")
_FENCE = re.compile(r"^(```+|~~~+)\s*([\w-]*)")


class WalkthroughError(ValueError):
    """The document breaks the marker rules (line numbers in the message)."""


@dataclass(frozen=True)
class Step:
    line: int                       # of the block's opening fence
    hosts: tuple[str, ...]
    script: str
    name: str | None = None
    background: bool = False
    stdin: str | None = None


@dataclass(frozen=True)
class Copy:
    line: int
    source_host: str
    source: str
    targets: tuple[str, ...]
    target: str


@dataclass
class Walkthrough:
    items: list[Step | Copy] = field(default_factory=list)

    @property
    def hosts(self) -> set[str]:
        out: set[str] = set()
        for item in self.items:
            out |= set(item.hosts) if isinstance(item, Step) else {item.source_host, *item.targets}
        return out


def parse(text: str) -> Walkthrough:
    lines = text.splitlines()
    out = Walkthrough()
    pending: tuple[int, dict[str, str | bool]] | None = None
    names: set[str] = set()
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = _MARKER.match(line.strip())
        fence = _FENCE.match(line)
        if marker:
            if pending is not None:
                raise WalkthroughError(f"line {pending[0]}: marker without a block")
            attrs = _attributes(marker.group(1), i + 1)
            if "copy" in attrs:
                out.items.append(_copy(attrs, i + 1))
            else:
                pending = (i + 1, attrs)
        elif fence:
            end = _closing(lines, i, fence.group(1))
            body = "\n".join(lines[i + 1:end]) + "\n"
            language = fence.group(2)
            if pending is not None:
                if language != "sh":
                    raise WalkthroughError(f"line {i + 1}: a step must be a ```sh block")
                step = _step(pending[1], body, i + 1, pending[0])
                if step.stdin is not None and step.stdin not in names:
                    raise WalkthroughError(f"line {i + 1}: stdin={step.stdin} names no earlier step")
                if step.name:
                    if step.name in names:
                        raise WalkthroughError(f"line {i + 1}: step name {step.name} used twice")
                    names.add(step.name)
                out.items.append(step)
                pending = None
            elif language == "sh":
                raise WalkthroughError(f"line {i + 1}: ```sh block without a walkthrough marker")
            i = end
        elif line.strip() and pending is not None:
            raise WalkthroughError(f"line {pending[0]}: marker not followed by a block")
        i += 1
    if pending is not None:
        raise WalkthroughError(f"line {pending[0]}: marker without a block")
    return out


def _closing(lines: list[str], start: int, fence: str) -> int:
    for j in range(start + 1, len(lines)):
        if lines[j].strip() == fence:
            return j
    raise WalkthroughError(f"line {start + 1}: unclosed code block")


def _attributes(text: str, line: int) -> dict[str, str | bool]:
    if text.startswith("copy "):
        return {"copy": text[5:]}
    attrs: dict[str, str | bool] = {}
    for word in shlex.split(text):
        key, sep, value = word.partition("=")
        if key not in ("on", "name", "background", "stdin"):
            raise WalkthroughError(f"line {line}: unknown marker attribute {key!r}")
        attrs[key] = value if sep else True
    if not isinstance(attrs.get("on"), str) or not attrs["on"]:
        raise WalkthroughError(f"line {line}: a step needs on=HOST[,HOST...]")
    return attrs


def _step(attrs: dict[str, str | bool], body: str, line: int, marker_line: int) -> Step:
    return Step(line=line, hosts=tuple(str(attrs["on"]).split(",")), script=body,
                name=str(attrs["name"]) if "name" in attrs else None,
                background=bool(attrs.get("background")),
                stdin=str(attrs["stdin"]) if "stdin" in attrs else None)


def _copy(attrs: dict[str, str | bool], line: int) -> Copy:
    found = re.fullmatch(r"(\w+):(\S+)\s*->\s*([\w,]+):(\S+)", str(attrs["copy"]))
    if not found:
        raise WalkthroughError(f"line {line}: copy HOST:PATH -> HOST[,HOST]:PATH")
    return Copy(line, found[1], found[2], tuple(found[3].split(",")), found[4])


# -- running a walkthrough in a lab ----------------------------------------------------------

# Directories a walkthrough writes outside /etc/wireguard: private to each lab host (bound
# over the real ones inside the host's own mount namespace, as in a container).
PRIVATE_DIRS = ("/etc/aircrew", "/var/lib/controltower", "/usr/local/bin")

# Stand-ins for what a lab host cannot do like a real machine: `sudo` (we are root
# already; Debian's minimal images have no sudo) and `apt-get install` (no package
# mirror in a namespace: it checks the packages are installed, as `make test` installs
# them, and installs nothing).
SHIMS = {
    "sudo": '#!/bin/sh\nexec "$@"\n',
    "apt-get": """#!/bin/sh
[ "$1" = install ] || exit 0
shift
status=0
for p in "$@"; do
    case "$p" in -*) continue;; esac
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
        echo "walkthrough: Debian package $p is not installed on this machine" >&2; status=1; }
done
exit $status
""",
}

_SETUP = ('work=$1; shims=$2; shift 2; '
          'while [ "$1" != -- ]; do mkdir -p "$2" && mount --bind "$1" "$2" || exit 97; '
          'shift 2; done; shift; '
          'cd "$work" && PATH="$shims:$PATH" exec bash -euo pipefail -c "$1"')


@dataclass
class Result:
    step: Step
    host: str
    returncode: int
    stdout: bytes
    stderr: bytes

    def describe(self) -> str:
        return (f"line {self.step.line} on {self.host}: exit {self.returncode}\n"
                f"--- script\n{self.step.script}--- stdout\n"
                f"{self.stdout.decode(errors='replace')[-3000:]}\n--- stderr\n"
                f"{self.stderr.decode(errors='replace')[-3000:]}")


class Runner:
    """Runs a walkthrough's steps on lab hosts by name. Each host has its own working
    directory (``workdirs``, the tower's may be the repository) and its own copy of
    ``PRIVATE_DIRS``; a step runs as ``bash -euo pipefail``."""

    def __init__(self, hosts: dict, root: Path, workdirs: dict[str, Path] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.hosts = hosts
        self.root = root
        self.env = env or {}
        self.shims = root / "shims"
        self.shims.mkdir(parents=True, exist_ok=True)
        for name, text in SHIMS.items():
            (self.shims / name).write_text(text)
            (self.shims / name).chmod(0o755)
        self.workdirs: dict[str, Path] = {}
        self.dirs: dict[str, list[tuple[Path, str]]] = {}
        for name in hosts:
            home = root / name / "home"
            home.mkdir(parents=True, exist_ok=True)
            self.workdirs[name] = (workdirs or {}).get(name, home)
            pairs = []
            for target in PRIVATE_DIRS:
                backing = root / name / target.strip("/").replace("/", "-")
                backing.mkdir(parents=True, exist_ok=True)
                pairs.append((backing, target))
            self.dirs[name] = pairs
        self.created_mount_points = [Path(t) for t in PRIVATE_DIRS if not Path(t).exists()]
        self.outputs: dict[str, bytes] = {}
        self.results: list[Result] = []
        self.background: list = []

    def argv(self, host: str, script: str) -> list[str]:
        pairs = [str(x) for backing, target in self.dirs[host] for x in (backing, target)]
        inner = ["env", *(f"{k}={v}" for k, v in self.env.items()),
                 "sh", "-c", _SETUP, "walkthrough", str(self.workdirs[host]), str(self.shims),
                 *pairs, "--", script]
        return self.hosts[host].command(inner)

    def run(self, walkthrough: Walkthrough, timeout: float = 300) -> list[Result]:
        """Every step in order; stops at the first that fails (its Result is last)."""
        for item in walkthrough.items:
            if isinstance(item, Copy):
                self.copy(item)
                continue
            for host in item.hosts:
                if item.background:
                    self.background.append(self.hosts[host].spawn(
                        self.argv(host, item.script), f"walkthrough-{item.line}"))
                    continue
                stdin = self.outputs[item.stdin] if item.stdin else b""
                proc = subprocess.run(self.argv(host, item.script), input=stdin,
                                      capture_output=True, timeout=timeout)
                result = Result(item, host, proc.returncode, proc.stdout, proc.stderr)
                self.results.append(result)
                if item.name:
                    self.outputs[item.name] = proc.stdout
                if proc.returncode != 0:
                    return self.results
        return self.results

    def copy(self, item: Copy) -> None:
        """What a person does with scp: the file from one host to others."""
        data = subprocess.run(self.argv(item.source_host, f"cat -- {shlex.quote(item.source)}"),
                              capture_output=True, check=True, timeout=60).stdout
        for target in item.targets:
            subprocess.run(self.argv(target, f"cat > {shlex.quote(item.target)}"), input=data,
                           check=True, capture_output=True, timeout=60)

    def close(self) -> None:
        for proc in self.background:
            proc.stop()
        for path in self.created_mount_points:
            try:
                path.rmdir()          # an empty mount point this runner made
            except OSError:
                pass

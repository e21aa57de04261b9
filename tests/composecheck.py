"""Reading a compose file without Docker (shared by the compose tests): the env file,
compose's variable interpolation, and the list and map forms compose accepts."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

VAR_RE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}"
                    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))")


def env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: not KEY=VALUE: {line!r}"
            out[key.strip()] = value.strip()
    return out


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error}, $VAR and $$."""
    def sub(m: re.Match) -> str:
        if m["dollar"]:
            return "$"
        name = m["braced"] or m["plain"]
        value, op, arg = env.get(name), m["op"] or "", m["arg"]
        if op in (":-", "-"):
            return value if value or (op == "-" and value is not None) else arg
        if op in (":?", "?") and not value:
            raise ValueError(f"{name}: {arg}")
        return value or ""
    return VAR_RE.sub(sub, text)


def rendered(compose: Path, env: dict[str, str]) -> dict:
    """A compose file with its variables filled from ``env``."""
    def walk(node):
        if isinstance(node, str):
            return interpolate(node, env)
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        return node
    return walk(yaml.safe_load(compose.read_text()))


def strings(node) -> list[str]:
    """Every string value of a YAML document (where compose interpolates)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    return []


def variable_uses(doc) -> list[re.Match]:
    return [m for text in strings(doc) for m in VAR_RE.finditer(text) if not m["dollar"]]



def as_list(value) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else list(value)


def as_env(value) -> dict[str, str]:
    if isinstance(value, dict):
        return {k: "" if v is None else str(v) for k, v in value.items()}
    return dict(item.partition("=")[::2] for item in value)

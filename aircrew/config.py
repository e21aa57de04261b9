"""Checks and conversions of the agent's settings (see wire/configfile.py for files)."""
from __future__ import annotations

import ipaddress
import logging
import stat
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from wire import identity, proof
from wire.clitypes import Checked
from wire.errors import InvalidInput
from wire.keys import Keys
from wire.redisconn import check_url
from wire.secretfile import read_secret

from .wgfields import validate_ifname

log = logging.getLogger(__name__)

DEFAULT_REDIS_PORT = 6379
DEFAULT_STUN_PORT = 3478


def controller_urls(controller: str, password: str | None, zone: str) -> list[str]:
    """URLs to try: as the zone's agent user (towers that manage ACLs), then as the
    default user (a plain ``requirepass`` Redis)."""
    plain = controller_url(controller, password)
    if not password or "://" in controller and urlsplit(controller).username:
        return [plain]
    user = quote(Keys().agent_user(zone), safe="")
    parts = urlsplit(plain)
    return [urlunsplit(parts._replace(netloc=f"{user}{parts.netloc}")), plain]


def login_url(controller: str, user: str, password: str) -> str:
    """The controller's URL logged in as ``user`` (a node's, a join key's or the zone
    secret's Redis user); any user and password in ``controller`` are replaced."""
    parts = urlsplit(controller_url(controller, password))
    hosts = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(
        netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{hosts}"))


def controller_url(controller: str, password: str | None) -> str:
    """A Redis URL from ``host``, ``host:port``, ``[v6]:port`` or a full redis(s)://,
    unix://, redis+sentinel:// or redis+cluster:// URL."""
    if "://" in controller:
        parts = urlsplit(controller)
        if parts.scheme not in ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster"):
            raise InvalidInput(f"controller URL scheme must be redis, rediss, unix, "
                               f"redis+sentinel or redis+cluster, not {parts.scheme!r}")
        if password and not parts.password:
            hosts = parts.netloc.rpartition("@")[2]   # host:port, [v6]:port or a list
            parts = parts._replace(netloc=f":{quote(password, safe='')}@{hosts}")
        return urlunsplit(parts)
    host, port = split_host_port(controller, DEFAULT_REDIS_PORT)
    auth = f":{quote(password, safe='')}@" if password else ""
    host_text = f"[{host}]" if ":" in host else host
    return f"redis://{auth}{host_text}:{port}/0"


def controller_host(controller: str) -> str:
    if "://" in controller:
        return urlsplit(controller).hostname or "127.0.0.1"
    return split_host_port(controller, DEFAULT_REDIS_PORT)[0]


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    text = text.strip()
    if not text:
        raise InvalidInput("empty host")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise InvalidInput(f"{text!r}: port must be 1-65535")
        return host, int(port_text)
    return host, default_port


def read_private_key(key: str | None, key_file: Path | None, allow_insecure: bool) -> str:
    if key and key_file:
        raise InvalidInput("give --private-key or --private-key-file, not both")
    if key_file:
        try:
            mode = key_file.stat().st_mode
            text = key_file.read_text().strip()
        except OSError as exc:
            raise InvalidInput(f"cannot read private key file {key_file}: {exc.strerror}") from None
        if mode & (stat.S_IROTH | stat.S_IWOTH) and not allow_insecure:
            raise InvalidInput(f"private key file {key_file} is readable by other users; "
                               f"chmod 600 it (or pass --allow-insecure-key-file)")
        key = text
    elif key:
        log.warning("the private key was given on the command line or in the environment; "
                    "it may show in ps: prefer --private-key-file")
    if not key:
        raise InvalidInput("a private key is required: --private-key-file (or --private-key)")
    proof.decode_private_key(key)
    return key


def check_public_key(private_key: str, public_key: str | None) -> str:
    derived = proof.public_key_of(private_key)
    if public_key and public_key != derived:
        raise InvalidInput("--public-key does not match the private key "
                           f"(the private key's public key is {derived})")
    return derived


def check_ip(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidInput(f"{what} {value!r} is not an IP address") from None


def check_prefixes(values: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_network(value, strict=True)))
        except ValueError as exc:
            raise InvalidInput(f"--child-prefix {value!r}: {exc}") from None
    return tuple(out)


def read_password(password: str | None, password_file: Path | None, allow_insecure: bool) -> str | None:
    """The zone's agent secret: given, or read from a file (one line, not empty; a file
    other users may read is refused unless allowed, as the key file is)."""
    return _given_or_read(password, password_file, allow_insecure, "controller password")


def read_join_key(key: str | None, key_file: Path | None, allow_insecure: bool) -> str | None:
    """A join key: given, or read from a file (as ``read_password``), and checked."""
    text = _given_or_read(key, key_file, allow_insecure, "join key")
    if text is not None and key_file is not None:
        identity.parse_join_key(text)
    return text


def _given_or_read(value: str | None, path: Path | None, allow_insecure: bool,
                   what: str) -> str | None:
    flag = "--" + what.replace(" ", "-")
    if value and path:
        raise InvalidInput(f"give {flag} or {flag}-file, not both")
    if path is None:
        return value or None
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IROTH | stat.S_IWOTH) and not allow_insecure:
        raise InvalidInput(f"{what} file {path} is readable by other users; chmod 600 it "
                           "(or pass --allow-insecure-key-file)")
    return read_secret(path, f"{what} file")


def _controller(text: str) -> str:
    check_url(controller_url(text, None))   # checks the form; the URL is built later
    return text


def _host_port(text: str) -> str:
    split_host_port(text, DEFAULT_STUN_PORT)
    return text.strip()


# click types of the agent's options (the checks above, for flags, variables and files)
CONTROLLER = Checked("controller", _controller)
HOST_PORT = Checked("host[:port]", _host_port)
INTERFACE = Checked("name", validate_ifname)


def agent_problems(values: dict[str, Any]) -> list[str]:
    """What is wrong with a combination of the agent's settings (at start and in
    `config check`)."""
    problems = []
    if values.get("private_key") and values.get("private_key_file"):
        problems.append("give --private-key or --private-key-file, not both")
    if values.get("controller_password") and values.get("controller_password_file"):
        problems.append("give --controller-password or --controller-password-file, not both")
    if values.get("join_key") and values.get("join_key_file"):
        problems.append("give --join-key or --join-key-file, not both")
    if values.get("local_endpoint_ip") and values.get("internal_network"):
        problems.append("give --local-endpoint-ip or --internal-network, not both")
    return problems

"""click parameter types that carry the domain's own checks.

The options of both command lines use them, so a value is checked the same way whether it
comes from a flag, the environment or a config file (``config check`` included), and an
error names the option once: ``Invalid value for '--zone': zone name must be ...``.
"""
from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from typing import Any

import click

from . import addresses, identity, messages, policy, proof, redisconn
from .errors import InvalidInput, MeshError


class Checked(click.ParamType):
    """A string checked (and canonicalised) by a function that raises InvalidInput."""

    def __init__(self, name: str, check: Callable[[str], Any]) -> None:
        self.name = name
        self._check = check

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            self.fail(f"must be a string, not {type(value).__name__}", param, ctx)
        try:
            return self._check(value)
        except InvalidInput as exc:
            self.fail(str(exc), param, ctx)


class FiniteFloat(click.FloatRange):
    """A number in a range; NaN and infinities are refused (click's FloatRange lets NaN in)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, bool):
            self.fail("must be a number", param, ctx)
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidInput(f"{messages.brief(text)} is not an IP address") from None


def _endpoint_ip(text: str) -> str:
    if "%" in text:
        raise InvalidInput(f"{messages.brief(text)} has a scope (%...): other nodes cannot use it")
    return str(addresses.usable_endpoint_ip(ipaddress.ip_address(_ip(text)), "address"))


def _listen(text: str) -> str:
    if text == "*":
        return "0.0.0.0"
    return _ip(text)


def _prefix(text: str) -> str:
    return str(addresses.usable_cidr(messages.network(text, "prefix"), "prefix"))


def _private_key(text: str) -> str:
    proof.decode_private_key(text.strip(), "private key")
    return text.strip()


def _join_key(text: str) -> str:
    identity.parse_join_key(text)           # its error never repeats the key
    return text.strip()


def _dns_suffix(text: str) -> str:
    """A DNS suffix (``mesh.example.com``), written into hosts files: labels only."""
    suffix = text.strip().strip(".").lower()
    try:
        if len(suffix) > 200:
            raise InvalidInput("too long")
        for label in suffix.split(".") if suffix else ():
            identity.node_name(label)
    except InvalidInput:
        raise InvalidInput(f"{messages.brief(text)} is not a DNS suffix (labels of a-z, 0-9 "
                           "and '-', joined by dots)") from None
    return suffix


def _tag(text: str) -> str:
    """A node tag, ``tag:`` optional (as the REST API takes it)."""
    return identity.node_name(text.removeprefix("tag:"), "a tag")


def _packet(text: str) -> str:
    """One packet's protocol and port for ``policy test``: tcp/22, udp/53, icmp."""
    policy.packet(text)
    return text


ZONE = Checked("zone", messages.zone_name)
JOIN_KEY = Checked("join key", _join_key)
NODE_NAME = Checked("name", identity.node_name)
DNS_SUFFIX = Checked("suffix", _dns_suffix)
LISTEN = Checked("address", _listen)
IP_ADDRESS = Checked("address", _ip)
ENDPOINT_IP = Checked("address", _endpoint_ip)
PREFIX = Checked("prefix", _prefix)
PUBLIC_KEY = Checked("key", lambda text: messages.public_key(text.strip()))
PRIVATE_KEY = Checked("key", _private_key)
TAG = Checked("tag", _tag)
PACKET = Checked("port", _packet)
REDIS_URL = Checked("url", redisconn.check_url)     # redis(s)://, unix://, +sentinel, +cluster


class SecretOption(click.Option):
    """An option whose value is a secret: a config file setting it must not be readable by
    others, and a value given as a flag shows in ``ps`` (both warned about)."""
    secret = True


def is_secret(option: click.Parameter) -> bool:
    return getattr(option, "secret", False)


# One-off flags of a single command: an environment variable would make them sticky.
NO_VARIABLE = frozenset({"force", "as_json", "help"})


def name_variables(command: click.Command, prefix: str, *,
                   only: Callable[[click.Command], bool] = lambda command: True) -> None:
    """Give every option of ``command`` and its subcommands an explicit environment
    variable (``PREFIX_<OPTION>``; the same name in every subcommand, so ``aircrew status``
    reads ``AIRCREW_INTERFACE`` as the agent does) and show it in ``--help``. Commands
    for which ``only`` is false keep the variables they have (none for options that
    describe one object, such as a zone's CIDR: a variable would apply to every call)."""
    for param in command.params:
        if not isinstance(param, click.Option) or param.name in NO_VARIABLE:
            continue
        if not param.envvar and only(command):
            param.envvar = f"{prefix}_{param.name.upper()}"
        param.show_envvar = bool(param.envvar)
    for sub in getattr(command, "commands", {}).values():
        name_variables(sub, prefix, only=only)


def variables(option: click.Option) -> list[str]:
    if not option.envvar:
        return []
    return [option.envvar] if isinstance(option.envvar, str) else list(option.envvar)


class CommandGroup(click.Group):
    """A command group whose commands fail with one line, never a traceback: a MeshError,
    an OSError or a Redis error is ``Error: <message>`` (exit 1); anything else is
    ``Error: internal error ...`` and its traceback is logged at debug level."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                SystemExit, KeyboardInterrupt):
            raise
        except MeshError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from None
        except Exception as exc:  # noqa: BLE001 - the one place a command's bug is caught
            import logging
            logging.getLogger(ctx.command_path).debug("internal error", exc_info=True)
            if type(exc).__module__.startswith("redis"):
                raise click.ClickException(f"Redis: {exc}") from None
            raise click.ClickException(f"internal error: {type(exc).__name__}: {exc}") from None

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

from . import addresses, messages, proof
from .errors import InvalidInput


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


ZONE = Checked("zone", messages.zone_name)
LISTEN = Checked("address", _listen)
IP_ADDRESS = Checked("address", _ip)
ENDPOINT_IP = Checked("address", _endpoint_ip)
PREFIX = Checked("prefix", _prefix)
PUBLIC_KEY = Checked("key", lambda text: messages.public_key(text.strip()))
PRIVATE_KEY = Checked("key", _private_key)

"""Admin commands against the REST API: ``controltower zone|peer|leases``.

Tables for people, ``--json`` (one JSON document: the API's answer as it is) for
scripts. An error from the API is printed as the API wrote it and exits 1; no answer at
all (refused, timed out, TLS) exits 3 with one line saying why. Connection settings come
from flags or environment variables (``CONTROLTOWER_API_URL``, ``CONTROLTOWER_TOKEN``...).

``register(group)`` adds the commands to the ``controltower`` group.
"""
from __future__ import annotations

import functools
import ipaddress
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from .apiclient import DEFAULT_API_URL, ApiClient, ApiError, ApiUnreachable, TlsFiles

DEFAULT_DATA_DIR = Path("/var/lib/controltower")
EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 3


class Unreachable(click.ClickException):
    exit_code = EXIT_UNREACHABLE


class Output:
    """Where a command's answer goes: JSON for scripts or text for people."""

    def __init__(self, client: ApiClient, as_json: bool) -> None:
        self.client = client
        self.as_json = as_json

    def emit(self, data: Any, human: Callable[[Any], None]) -> None:
        if self.as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            human(data)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Left-aligned columns two spaces apart; '-' for empty cells."""
    text_rows = [list(headers)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in text_rows) for i in range(len(headers))]
    for row in text_rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def fields(pairs: Iterable[tuple[str, Any]]) -> None:
    pairs = list(pairs)
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        click.echo(f"{key + ':':<{width + 1}} {_cell(value)}")


def _cell(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


# -- connection options --------------------------------------------------------------

def _read_token_file(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}",
                                 param_hint="--token-file") from None
    if not token:
        raise click.BadParameter(f"{path} is empty", param_hint="--token-file")
    return token


def _default_token(client_is_loopback: bool) -> str | None:
    """On the tower host itself, the token the tower generated (when this user may read it)."""
    if not client_is_loopback:
        return None
    data_dir = Path(os.environ.get("CONTROLTOWER_DATA_DIR") or DEFAULT_DATA_DIR)
    path = data_dir / "admin-token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def make_client(api_url: str, token: str | None, token_file: Path | None,
                ca_file: Path | None, cert_file: Path | None, key_file: Path | None,
                timeout: float) -> ApiClient:
    if token is None and token_file is not None:
        token = _read_token_file(token_file)
    try:
        client = ApiClient(api_url, token, TlsFiles(ca_file, cert_file, key_file), timeout)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if client.token is None:
        client.token = _default_token(client.is_loopback)
    return client


def api_command(f: Callable[..., None]) -> Callable[..., None]:
    """Add the connection and output options; call ``f(out, **arguments)``."""
    file_type = click.Path(exists=True, dir_okay=False, path_type=Path)
    options = [
        click.option("--api-url", default=DEFAULT_API_URL, show_default=True, show_envvar=True,
                     envvar="CONTROLTOWER_API_URL", help="The ControlTower REST API."),
        click.option("--token", show_envvar=True,
                     envvar=["CONTROLTOWER_TOKEN", "CONTROLTOWER_ADMIN_TOKEN"],
                     help="Admin token, sent as 'Authorization: Bearer'. Wins over "
                          "--token-file. Default on the tower host: <data-dir>/admin-token.",),
        click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
                     show_envvar=True,
                     envvar=["CONTROLTOWER_TOKEN_FILE", "CONTROLTOWER_ADMIN_TOKEN_FILE"],
                     help="File holding the admin token (keeps it out of ps and history)."),
        click.option("--ca-file", type=file_type, envvar="CONTROLTOWER_CA_FILE",
                     show_envvar=True, help="CA bundle to verify an https API with."),
        click.option("--cert-file", type=file_type, envvar="CONTROLTOWER_CERT_FILE",
                     show_envvar=True, help="TLS client certificate (PEM)."),
        click.option("--key-file", type=file_type, envvar="CONTROLTOWER_KEY_FILE",
                     show_envvar=True, help="Private key of the TLS client certificate (PEM)."),
        click.option("--timeout", default=10.0, show_default=True, show_envvar=True,
                     type=click.FloatRange(0.1, 600), envvar="CONTROLTOWER_API_TIMEOUT",
                     help="Seconds to wait for the API."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print the API's answer as one JSON document."),
    ]

    @functools.wraps(f)
    def wrapper(api_url: str, token: str | None, token_file: Path | None,
                ca_file: Path | None, cert_file: Path | None, key_file: Path | None,
                timeout: float, as_json: bool, **kwargs: Any) -> None:
        client = make_client(api_url, token, token_file, ca_file, cert_file, key_file, timeout)
        try:
            f(Output(client, as_json), **kwargs)
        except ApiError as exc:
            raise click.ClickException(exc.message) from None
        except ApiUnreachable as exc:
            raise Unreachable(str(exc)) from None

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


# -- zone ------------------------------------------------------------------------------

@click.group()
def zone() -> None:
    """Create, list, show and delete zones; rotate a zone's agent secret."""


@zone.command("create")
@click.argument("name")
@click.option("--cidr", required=True, help="The zone's prefix, e.g. 10.140.0.0/20.")
@click.option("--description", default=None, help="Free text shown in listings.")
@api_command
def zone_create(out: Output, name: str, cidr: str, description: str | None) -> None:
    """Create zone NAME with the prefix --cidr."""
    def human(data: dict[str, Any]) -> None:
        click.echo(f"created zone {data['Name']} ({data['IpCidr']})")
        if data.get("AgentSecret"):
            click.echo("agent secret (shown once; agents use it as --controller-password):")
            click.echo(data["AgentSecret"])
    out.emit(out.client.create_zone(name, cidr, description), human)


@zone.command("list")
@api_command
def zone_list(out: Output) -> None:
    """List zones."""
    out.emit(out.client.list_zones(), lambda zones: table(
        ("NAME", "CIDR", "DESCRIPTION"),
        ((z["Name"], z["IpCidr"], z["Description"]) for z in zones)))


@zone.command("show")
@click.argument("name")
@api_command
def zone_show(out: Output, name: str) -> None:
    """Show zone NAME and its node count."""
    out.emit(out.client.show_zone(name), lambda z: fields(
        [("Name", z["Name"]), ("CIDR", z["IpCidr"]), ("Description", z["Description"]),
         ("Nodes", z.get("Nodes"))]))


@zone.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="Delete it with its nodes (their agents are told).")
@api_command
def zone_delete(out: Output, name: str, force: bool) -> None:
    """Delete zone NAME (refused while it has nodes, unless --force)."""
    out.emit(out.client.delete_zone(name, force),
             lambda data: click.echo(f"deleted zone {data['Deleted']}"))


@zone.command("rotate-secret")
@click.argument("name")
@api_command
def zone_rotate_secret(out: Output, name: str) -> None:
    """Give zone NAME's agents a new secret; the old one stops working."""
    def human(data: dict[str, Any]) -> None:
        click.echo(f"new agent secret of zone {data.get('Name', name)} (shown once):")
        click.echo(data["AgentSecret"])
    out.emit(out.client.rotate_secret(name), human)


# -- peer ------------------------------------------------------------------------------

@click.group()
def peer() -> None:
    """List, show and delete peers (nodes)."""


@peer.command("list")
@click.option("--zone", default=None, help="Only the peers of this zone.")
@api_command
def peer_list(out: Output, zone: str | None) -> None:
    """List peers of every zone, or of one."""
    out.emit(out.client.list_peers(zone), lambda peers: table(
        ("ZONE", "PUBLIC KEY", "ADDRESS", "ENDPOINT", "PREFIXES", "NAT", "ONLINE", "LAST SEEN",
         "HOSTNAME"),
        ((p["Zone"], p["PublicKey"], p["NodeAddress"], p["EndpointIP"], p["ChildPrefix"],
          p["NatType"], p["Online"], p["LastSeen"], p["Hostname"]) for p in peers)))


@peer.command("show")
@click.argument("key")
@api_command
def peer_show(out: Output, key: str) -> None:
    """Show the peer with public KEY."""
    out.emit(out.client.show_peer(key), lambda p: fields(
        [("Public key", p["PublicKey"]), ("Zone", p["Zone"]), ("Address", p["NodeAddress"]),
         ("Endpoint", p["EndpointIP"]), ("Allowed IPs", p["AllowedIPs"]),
         ("Child prefixes", p["ChildPrefix"]), ("NAT type", p["NatType"]),
         ("Online", p["Online"]), ("Last seen", p["LastSeen"]), ("Hostname", p["Hostname"])]))


@peer.command("delete")
@click.argument("key")
@api_command
def peer_delete(out: Output, key: str) -> None:
    """Remove the peer with public KEY: releases its address and prefixes."""
    def human(data: dict[str, Any]) -> None:
        released = ", ".join([data["ReleasedAddress"], *data["ReleasedPrefixes"]])
        click.echo(f"removed peer {data['Deleted']} from zone {data['Zone']} "
                   f"(released {released})")
    out.emit(out.client.delete_peer(key), human)


# -- leases ----------------------------------------------------------------------------

@click.command()
@click.argument("zone")
@api_command
def leases(out: Output, zone: str) -> None:
    """Show the addresses leased in ZONE (network and broadcast show as reserved)."""
    def human(data: list[dict[str, Any]]) -> None:
        for entry in data:
            net = ipaddress.ip_network(entry["Cidr"])
            reserved = {str(net.network_address)}
            if net.version == 4:
                reserved.add(str(net.broadcast_address))
            click.echo(f"zone {zone}  cidr {entry['Cidr']}  "
                       f"leased {len(set(entry['IPs']) - reserved)}")
            table(("ADDRESS", "STATE"),
                  ((ip, "reserved" if ip in reserved else "leased") for ip in entry["IPs"]))
    out.emit(out.client.leases(zone), human)


def register(group: click.Group) -> None:
    """Add ``zone``, ``peer`` and ``leases`` to the ``controltower`` command group."""
    group.add_command(zone)
    group.add_command(peer)
    group.add_command(leases)

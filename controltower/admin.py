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

from wire import clitypes
from wire.errors import brief

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
        return ",".join(_cell(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))       # 30 days, not 30.0
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


def _default_token(client_is_loopback: bool, data_dir: Path) -> str | None:
    """On the tower host itself, the token the tower generated (when this user may read it)."""
    if not client_is_loopback:
        return None
    path = data_dir / "admin-token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def make_client(api_url: str, token: str | None, token_file: Path | None,
                ca_file: Path | None, cert_file: Path | None, key_file: Path | None,
                timeout: float, data_dir: Path = DEFAULT_DATA_DIR) -> ApiClient:
    if token is None and token_file is not None:
        token = _read_token_file(token_file)
    try:
        client = ApiClient(api_url, token, TlsFiles(ca_file, cert_file, key_file), timeout)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if client.token is None:
        client.token = _default_token(client.is_loopback, data_dir)
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
        click.option("--data-dir", default=str(DEFAULT_DATA_DIR), show_default=True,
                     show_envvar=True, envvar="CONTROLTOWER_DATA_DIR",
                     type=click.Path(file_okay=False, path_type=Path),
                     help="The tower's data directory, where the default token is found "
                          "(same as serve's --data-dir)."),
        click.option("--ca-file", type=file_type, envvar="CONTROLTOWER_CA_FILE",
                     show_envvar=True, help="CA bundle to verify an https API with."),
        click.option("--cert-file", type=file_type, envvar="CONTROLTOWER_CERT_FILE",
                     show_envvar=True, help="TLS client certificate (PEM)."),
        click.option("--key-file", type=file_type, envvar="CONTROLTOWER_KEY_FILE",
                     show_envvar=True, help="Private key of the TLS client certificate (PEM)."),
        click.option("--timeout", default=10.0, show_default=True, show_envvar=True,
                     type=clitypes.FiniteFloat(0.1, 600), envvar="CONTROLTOWER_API_TIMEOUT",
                     help="Seconds to wait for the API."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print the API's answer as one JSON document."),
    ]

    @functools.wraps(f)
    def wrapper(api_url: str, token: str | None, token_file: Path | None, data_dir: Path,
                ca_file: Path | None, cert_file: Path | None, key_file: Path | None,
                timeout: float, as_json: bool, **kwargs: Any) -> None:
        client = make_client(api_url, token, token_file, ca_file, cert_file, key_file, timeout,
                             data_dir)
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


PATH_MARKS = {"direct": "d", "relayed": "r", "down": "x", "mixed": "~", "unknown": "?"}


@zone.command("paths")
@click.argument("name")
@click.option("--node", help="Only the pairs of this node (public key or name).")
@api_command
def zone_paths(out: Output, name: str, node: str | None) -> None:
    """How each pair of zone NAME's nodes reaches each other: d direct, r relayed (with
    the relay), x down, ~ the two sides disagree, ? not reported."""
    out.emit(out.client.zone_paths(name, node), _print_paths)


def _print_paths(data: Any) -> None:
    nodes = data["Nodes"]
    label = {n["PublicKey"]: (n.get("Name") or n.get("Hostname") or n["Address"])[:16]
             for n in nodes}
    relays = sorted({p["Relay"] for p in data["Pairs"] if p.get("Relay")})
    mark = {r: str(i + 1) for i, r in enumerate(relays)}
    cell: dict[tuple[str, str], str] = {}
    for pair in data["Pairs"]:
        text = PATH_MARKS.get(pair["Path"], "?")
        if pair["Path"] == "relayed" and pair.get("Relay"):
            text += mark[pair["Relay"]]
        cell[(pair["A"], pair["B"])] = cell[(pair["B"], pair["A"])] = text
    keys = [n["PublicKey"] for n in nodes]
    table(("", *[label[k] for k in keys]),
          ([label[a], *[("-" if a == b else cell.get((a, b), "")) for b in keys]] for a in keys))
    for relay, number in mark.items():
        click.echo(f"r{number} = relayed via {relay}")
    counts = data.get("Counts", {})
    click.echo("pairs: " + ", ".join(f"{n} {p}" for p, n in counts.items() if n) if any(
        counts.values()) else "pairs: none")


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
    """List, show and remove peers (nodes); renew their credentials."""


@peer.command("list")
@click.option("--zone", default=None, help="Only the peers of this zone.")
@api_command
def peer_list(out: Output, zone: str | None) -> None:
    """List peers of every zone, or of one."""
    out.emit(out.client.list_peers(zone), lambda peers: table(
        ("ZONE", "NAME", "PUBLIC KEY", "ADDRESS", "ENDPOINT", "PREFIXES", "PENDING", "NAT",
         "ONLINE", "LAST SEEN", "TAGS"),
        ((p["Zone"], p.get("Name", ""), p["PublicKey"], p["NodeAddress"], p["EndpointIP"],
          p["ChildPrefix"], p.get("PendingPrefixes", []), p["NatType"], p["Online"],
          p["LastSeen"], p.get("Tags", [])) for p in peers)))


@peer.command("show")
@click.argument("key")
@api_command
def peer_show(out: Output, key: str) -> None:
    """Show a peer: KEY is its public key, name or name.zone."""
    out.emit(out.client.show_peer(key), lambda p: fields(
        [("Public key", p["PublicKey"]), ("Name", p.get("Name")), ("Zone", p["Zone"]),
         ("Tags", p.get("Tags")), ("Pending prefixes", p.get("PendingPrefixes")),
         ("Key expiry", p.get("KeyExpiry")), ("Address", p.get("NodeAddress")),
         ("Endpoint", p.get("EndpointIP")), ("Allowed IPs", p.get("AllowedIPs")),
         ("Child prefixes", p.get("ChildPrefix")), ("NAT type", p.get("NatType")),
         ("Online", p.get("Online")), ("Last seen", p.get("LastSeen")),
         ("Hostname", p.get("Hostname"))]))


@peer.command("remove")
@click.argument("node")
@api_command
def peer_remove(out: Output, node: str) -> None:
    """Remove NODE (public key, name or name.zone) for good: its credential is revoked
    at once (its connections are cut), it cannot come back without a new join key."""
    def human(data: dict[str, Any]) -> None:
        released = ", ".join([a for a in [data["ReleasedAddress"], *data["ReleasedPrefixes"]] if a])
        click.echo(f"removed {data.get('Name') or data['Deleted']} from zone {data['Zone']}"
                   + (" (credential revoked)" if data.get("Revoked") else "")
                   + (f" (released {released})" if released else ""))
    out.emit(out.client.delete_peer(node), human)


peer.add_command(peer_remove, "delete")      # the older name


@peer.command("renew")
@click.argument("node")
@api_command
def peer_renew(out: Output, node: str) -> None:
    """Renew NODE's credential for another key-expiry period of its zone."""
    out.emit(out.client.renew(node),
             lambda d: click.echo(f"{d['Name']}: credential valid until {d['KeyExpiry']}"))


@peer.command("tag")
@click.argument("node")
@click.argument("tag", nargs=-1, type=clitypes.TAG)
@api_command
def peer_tag(out: Output, node: str, tag: tuple[str, ...]) -> None:
    """Set NODE's tags to TAG... (none: no tags). Policies refer to them as tag:NAME."""
    out.emit(out.client.set_tags(node, list(tag)),
             lambda d: click.echo(f"{d['Name']}: tags {', '.join(d['Tags']) or 'none'}"))


# -- policy ----------------------------------------------------------------------------

@click.group()
def policy() -> None:
    """A zone's access policy (docs/policy.md): who may reach what over the mesh."""


@policy.command("set")
@click.argument("zone", type=clitypes.ZONE)
@click.argument("file", type=click.File("r"), default="-")
@api_command
def policy_set(out: Output, zone: str, file: Any) -> None:
    """Replace ZONE's policy with the JSON document in FILE ('-' or none: stdin). An
    invalid document is refused whole, every problem named; the old policy stays."""
    try:
        document = json.loads(file.read(), parse_constant=_not_json)
    except UnicodeDecodeError:
        raise click.UsageError(f"{file.name} is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise click.UsageError(f"{file.name} is not JSON: {brief(str(exc))[1:-1]}") from None

    def human(d: dict[str, Any]) -> None:
        click.echo(f"zone {d['Zone']}: policy of {len(d['Policy']['rules'])} rules in force "
                   f"from revision {d['Revision']}")
        for warning in d.get("Warnings", []):
            click.echo(f"warning: {warning}")
    out.emit(out.client.set_policy(zone, document), human)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@policy.command("show")
@click.argument("zone", type=clitypes.ZONE)
@api_command
def policy_show(out: Output, zone: str) -> None:
    """Print ZONE's policy (canonical form) and the revision that set it."""
    def human(d: dict[str, Any]) -> None:
        if d["Policy"] is None:
            click.echo(f"zone {d['Zone']} has no policy: every node may reach every node")
            return
        click.echo(f"# zone {d['Zone']}, revision {d['Revision']}")
        click.echo(json.dumps(d["Policy"], indent=2))
    out.emit(out.client.show_policy(zone), human)


@policy.command("delete")
@click.argument("zone", type=clitypes.ZONE)
@api_command
def policy_delete(out: Output, zone: str) -> None:
    """Delete ZONE's policy: every node may reach every node again."""
    out.emit(out.client.delete_policy(zone), lambda d: click.echo(
        f"zone {d['Zone']}: policy deleted (revision {d['Revision']})" if d["Deleted"]
        else f"zone {d['Zone']} had no policy"))


@policy.command("test")
@click.argument("zone", type=clitypes.ZONE)
@click.argument("source", metavar="FROM")
@click.argument("dest", metavar="TO")
@click.argument("port", type=clitypes.PACKET)
@api_command
def policy_test(out: Output, zone: str, source: str, dest: str, port: str) -> None:
    """Would TO let in a connection from FROM on PORT (tcp/22, udp/53, icmp)? FROM and
    TO: node names, public keys or addresses. Prints allow or deny and the deciding
    rule; exits 0 either way (use --json for scripts)."""
    def human(d: dict[str, Any]) -> None:
        click.echo(("allow: " if d["Allow"] else "deny: ") + d["Reason"])
    out.emit(out.client.test_policy(zone, source, dest, port), human)


# -- routes ----------------------------------------------------------------------------

@click.group()
def route() -> None:
    """Child prefixes: list them (approved or pending), approve or take back."""


@route.command("list")
@click.argument("zone")
@click.option("--pending", is_flag=True, help="Only those waiting for approval.")
@api_command
def route_list(out: Output, zone: str, pending: bool) -> None:
    """List the child prefixes of ZONE's nodes."""
    rows = [r for r in out.client.zone_routes(zone) if not pending or r["State"] == "pending"]
    out.emit(rows, lambda data: table(("PREFIX", "STATE", "NAME", "PUBLIC KEY"),
                                      ((r["Prefix"], r["State"], r["Name"], r["PublicKey"])
                                       for r in data)))


@route.command("approve")
@click.argument("node")
@click.argument("prefix", nargs=-1, required=True)
@api_command
def route_approve(out: Output, node: str, prefix: tuple[str, ...]) -> None:
    """Approve PREFIX of NODE: every peer routes it to NODE from now on."""
    out.emit(out.client.approve_routes(node, list(prefix), []), _routes_done)


@route.command("revoke")
@click.argument("node")
@click.argument("prefix", nargs=-1, required=True)
@api_command
def route_revoke(out: Output, node: str, prefix: tuple[str, ...]) -> None:
    """Take back the approval of PREFIX of NODE (pending again unless a range approves it)."""
    out.emit(out.client.approve_routes(node, [], list(prefix)), _routes_done)


def _routes_done(d: dict[str, Any]) -> None:
    click.echo(f"{d['Name']}: routed {', '.join(d['ChildPrefix']) or 'none'}; "
               f"pending {', '.join(d['PendingPrefixes']) or 'none'}")


# -- join keys -------------------------------------------------------------------------

@click.group()
def joinkey() -> None:
    """Join keys: enroll nodes (`aircrew --join-key KEY`), each with its own credential."""


def _seconds(text: str) -> float:
    """'90', '90s', '15m', '24h', '7d' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m, 24h, 7d") from None


@joinkey.command("create")
@click.argument("zone")
@click.option("--expires", default="24h", show_default=True,
              help="How long the key can be used: 90s, 15m, 24h, 7d.")
@click.option("--uses", type=click.IntRange(1), default=None,
              help="How many nodes it may enroll (default 1: a one-off key).")
@click.option("--reusable", is_flag=True, help="Any number of nodes until it expires.")
@click.option("--ephemeral", is_flag=True,
              help="Its nodes are removed --ephemeral-after being offline.")
@click.option("--ephemeral-after", default="5m", show_default=True,
              help="How long an ephemeral node may be offline before it is removed: 90s, "
                   "15m, 24h.")
@click.option("--tag", "tags", multiple=True, help="A tag its nodes get (repeatable).")
@click.option("--route", "routes", multiple=True,
              help="A prefix range its nodes' child prefixes are approved in (repeatable).")
@click.option("--description", default=None, help="Free text shown in listings.")
@api_command
def joinkey_create(out: Output, zone: str, expires: str, uses: int | None, reusable: bool,
                   ephemeral: bool, ephemeral_after: str, tags: tuple[str, ...],
                   routes: tuple[str, ...], description: str | None) -> None:
    """Create a join key for ZONE; it is shown once, alone on stdout."""
    if reusable and uses:
        raise click.UsageError("give --uses or --reusable, not both")
    options: dict[str, Any] = {"ExpiresIn": _seconds(expires), "Reusable": reusable,
                               "Ephemeral": ephemeral, "Tags": list(tags), "Routes": list(routes)}
    if uses:
        options["Uses"] = uses
    if ephemeral:
        options["EphemeralAfter"] = _seconds(ephemeral_after)
    if description:
        options["Description"] = description

    def human(d: dict[str, Any]) -> None:
        # The key alone on stdout (KEY=$(controltower joinkey create ...) works); what it
        # is on stderr.
        click.echo(f"join key {d['Id']} of zone {d['Zone']}, valid until {d['Expires']}, "
                   f"{'reusable' if d['Reusable'] else str(d['MaxUses']) + ' use(s)'}"
                   + (", ephemeral" if d["Ephemeral"] else "")
                   + (f", tags {', '.join(d['Tags'])}" if d["Tags"] else "")
                   + (f", routes {', '.join(d['Routes'])}" if d["Routes"] else ""), err=True)
        click.echo("the key (shown once; a node joins with aircrew --join-key-file FILE "
                   "holding it):", err=True)
        click.echo(d["Key"])
    out.emit(out.client.create_join_key(zone, options), human)


@joinkey.command("list")
@click.argument("zone")
@api_command
def joinkey_list(out: Output, zone: str) -> None:
    """List ZONE's join keys (never the keys themselves)."""
    out.emit(out.client.list_join_keys(zone), lambda keys: table(
        ("ID", "STATE", "USES", "EXPIRES", "EPHEMERAL", "TAGS", "ROUTES"),
        ((k["Id"], k["State"], f"{k['Uses']}/{k['MaxUses'] or 'any'}", k["Expires"],
          k["Ephemeral"], k["Tags"], k["Routes"]) for k in keys)))


@joinkey.command("revoke")
@click.argument("zone")
@click.argument("key_id")
@api_command
def joinkey_revoke(out: Output, zone: str, key_id: str) -> None:
    """Revoke join key KEY_ID of ZONE (nodes it enrolled keep their own credentials)."""
    out.emit(out.client.revoke_join_key(zone, key_id),
             lambda d: click.echo(f"revoked join key {d['Id']} of zone {d['Zone']}"))


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


@zone.command("set")
@click.argument("name")
@click.option("--zone-secret", type=click.Choice(["on", "off"]), default=None,
              help="Accept the zone secret (--controller-password) to enroll new nodes.")
@click.option("--auto-approve", multiple=True,
              help="A range whose child prefixes need no approval (repeatable; '' clears).")
@click.option("--key-expiry-days", type=clitypes.FiniteFloat(0, 3650), default=None,
              help="Node credentials enrolled from now on expire after this many days (0: never).")
@api_command
def zone_set(out: Output, name: str, zone_secret: str | None, auto_approve: tuple[str, ...],
             key_expiry_days: float | None) -> None:
    """Change zone NAME's identity settings."""
    settings: dict[str, Any] = {}
    if zone_secret is not None:
        settings["ZoneSecret"] = zone_secret == "on"
    if auto_approve:
        settings["AutoApprove"] = [p for p in auto_approve if p]
    if key_expiry_days is not None:
        settings["KeyExpiryDays"] = key_expiry_days or None
    out.emit(out.client.update_zone(name, settings), lambda d: fields(
        [("Zone", d["Name"]), ("Zone secret", "on" if d["ZoneSecret"] else "off"),
         ("Auto-approve", d["AutoApprove"]), ("Key expiry (days)", d["KeyExpiryDays"])]))


def register(group: click.Group) -> None:
    """Add ``zone``, ``peer``, ``route``, ``policy``, ``joinkey`` and ``leases`` to the group."""
    group.add_command(zone)
    group.add_command(peer)
    group.add_command(route)
    group.add_command(policy)
    group.add_command(joinkey)
    group.add_command(leases)

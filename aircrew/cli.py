"""The ``aircrew`` command line: join a zone and keep wg0 in sync; keygen, status, down."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from wire import clitypes, configfile, logs, proof
from wire.errors import MeshError
from wire.secretfile import write_secret

from . import config
from .routes import DEFAULT_MTU

log = logging.getLogger("aircrew")

CONTEXT = {"help_option_names": ["-h", "--help"]}


def controller_tls_options(command: Callable) -> Callable:
    """--controller-ca, --controller-cert and --controller-key (the agent's and `down`'s)."""
    for option in reversed((
            click.option("--controller-ca", type=click.Path(exists=True, dir_okay=False),
                         help="CA of the controller's Redis (rediss:// URLs)."),
            click.option("--controller-cert", type=click.Path(exists=True, dir_okay=False),
                         help="Client certificate for the controller's Redis."),
            click.option("--controller-key", type=click.Path(exists=True, dir_okay=False),
                         help="Key of that client certificate."))):
        command = option(command)
    return command


def controller_tls(ca: str | None, cert: str | None, key: str | None) -> dict[str, str]:
    """The redis-py ssl_* options of those three."""
    return {k: v for k, v in (("ssl_ca_certs", ca), ("ssl_certfile", cert),
                              ("ssl_keyfile", key)) if v}


@click.group(cls=clitypes.CommandGroup, invoke_without_command=True, context_settings=CONTEXT)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), is_eager=True,
              expose_value=False, callback=configfile.option_callback,
              envvar=["AIRCREW_CONFIG", "AIRCREW_CONFIG_FILE"],
              help="TOML file with any of these options (command line > AIRCREW_* env > file); "
                   "keep it mode 0600 when it holds a secret.")
@click.option("--public-key", type=clitypes.PUBLIC_KEY,
              help="This node's WireGuard public key (optional: derived and checked).")
@click.option("--private-key", cls=clitypes.SecretOption, type=clitypes.PRIVATE_KEY,
              help="This node's WireGuard private key (shows in ps: prefer the file).")
@click.option("--private-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the private key (mode 0600).")
@click.option("--allow-insecure-key-file", is_flag=True,
              help="Accept a private key or password file that other users can read.")
@click.option("--controller", type=config.CONTROLLER,
              help="The controller's Redis: host, host:port or a redis(s)://, "
                   "redis+sentinel:// or redis+cluster://host:port[,host:port...] URL.")
@click.option("--controller-password", cls=clitypes.SecretOption,
              help="The zone's agent secret: enrolls this node once where the zone accepts it "
                   "(prefer --join-key). Shows in ps as a flag: prefer "
                   "--controller-password-file or a 0600 config or environment file.")
@click.option("--controller-password-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the zone's agent secret (one line, mode 0600).")
@click.option("--join-key", cls=clitypes.SecretOption, type=clitypes.JOIN_KEY,
              help="A join key (`controltower joinkey create`): enrolls this node once; its own "
                   "credential is kept in the state directory. Shows in ps as a flag: prefer "
                   "--join-key-file.")
@click.option("--join-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding a join key (one line, mode 0600).")
@click.option("--name", type=clitypes.NODE_NAME,
              help="This node's name in its zone (default: the host name; a suffix is added "
                   "when taken).")
@click.option("--hosts-file", default="/etc/hosts", show_default=True,
              help="Where the zone's nodes are named <name>.<zone> (a managed block); "
                   "'none' turns it off.")
@click.option("--dns-suffix", default="", type=clitypes.DNS_SUFFIX,
              help="Also name them <name>.<zone>.<suffix>.")
@controller_tls_options
@click.option("--zone", default="default", show_default=True, type=clitypes.ZONE,
              help="Zone to join.")
@click.option("--local-endpoint-ip", type=clitypes.ENDPOINT_IP,
              help="Advertise this IP (with the listen port) as the endpoint.")
@click.option("--internal-network", "--network-internal", "internal_network", is_flag=True,
              help="Advertise the host's own primary address instead of the STUN-discovered "
                   "one (--network-internal: the seed's other spelling).")
@click.option("--child-prefix", multiple=True, type=clitypes.PREFIX,
              help="A prefix behind this node to route to it (repeatable).")
@click.option("--request-ip", type=clitypes.IP_ADDRESS,
              help="Ask for this mesh address (inside the zone's CIDR).")
@click.option("--listen-port", default=51820, show_default=True, type=click.IntRange(1, 65535),
              help="UDP port of this node's WireGuard interface (and of its STUN queries).")
@click.option("--interface", default="wg0", show_default=True, type=config.INTERFACE,
              help="WireGuard interface name.")
@click.option("--mtu", default=DEFAULT_MTU, show_default=True, type=click.IntRange(1280, 65535),
              help="MTU of the WireGuard interface: 1420 fits a 1500-byte path over IPv4 and "
                   "IPv6; lower it where the path is smaller (PPPoE: 1412, other tunnels).")
@click.option("--stun-server", multiple=True, type=config.HOST_PORT,
              help="STUN server host[:port] (repeatable; default: the controller host, UDP 3478 "
                   "and 3479).")
@click.option("--state-dir", default="/etc/wireguard", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Where the interface's config, latest revision and zone cache live.")
@click.option("--relays/--no-relays", default=True, show_default=True,
              help="Reach peers that cannot be reached directly through the zone's relays, and "
                   "probe direct paths from the WireGuard port (needs CAP_NET_RAW).")
@click.option("--heartbeat-interval", default=10.0, show_default=True,
              type=clitypes.FiniteFloat(0.5, 3600),
              help="Seconds between heartbeats (the tower shows a node offline after 30 s "
                   "without one).")
@click.option("--endpoint-interval", default=60.0, show_default=True,
              type=clitypes.FiniteFloat(1, 86400), help="Seconds between endpoint re-checks.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(logs.LEVELS, case_sensitive=False), help="Least level logged.")
@click.option("--log-format", default="text", show_default=True,
              type=click.Choice(logs.FORMATS, case_sensitive=False),
              help="text for people, json for machines (one object per line).")
@click.option("--nft-command", default="", show_default=False,
              help="Apply the zone policy's rules with this nft program (nft -f -) instead "
                   "of libnftables in process.")
@click.option("--metrics-port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="Serve Prometheus metrics on this TCP port (0: off).")
@click.option("--metrics-listen", default="127.0.0.1", show_default=True,
              type=clitypes.IP_ADDRESS, help="Address the metrics endpoint listens on.")
@click.pass_context
def main(ctx: click.Context, **opts) -> None:
    """Join this node to a zone and keep its WireGuard interface equal to the zone.

    Stop with Ctrl-C or SIGTERM: the tunnels stay up. `aircrew down` removes them.
    """
    if ctx.invoked_subcommand is not None:
        return
    problems = config.agent_problems(opts)
    if problems:
        raise click.UsageError(problems[0])
    logs.setup(opts["log_level"], opts["log_format"].lower())
    warn_about_visible_secrets(ctx, opts)
    try:
        code = _run_agent(opts)
    except MeshError as exc:
        click.echo(f"aircrew: {exc}", err=True)
        code = 1
    sys.exit(code)


def warn_about_visible_secrets(ctx: click.Context, opts: dict) -> None:
    """A secret given as a flag shows in ps for as long as the agent runs; so does one
    given to a parent that keeps running (``sudo AIRCREW_CONTROLLER_PASSWORD=... aircrew``)."""
    for option in ctx.command.params:
        value = opts.get(option.name)
        if not clitypes.is_secret(option) or not value or option.name == "private_key":
            continue            # (config.read_private_key warns about the key itself)
        flag = option.opts[0]
        if ctx.get_parameter_source(option.name) is click.core.ParameterSource.COMMANDLINE:
            log.warning("%s was given on the command line, which every user sees in ps: "
                        "use a 0600 file (%s-file or --config) instead", flag, flag)
        parent = os.getppid()
        try:
            argv = Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(value.encode() in arg for arg in argv):
            log.warning("%s is in the command line of this agent's parent process (pid %d), "
                        "which every user sees in ps (sudo VAR=... does that): put it in a "
                        "0600 file instead", flag, parent)


def _run_agent(opts: dict) -> int:
    from .agent import Agent, AgentExit, AgentSettings
    from . import heap
    from .backend import open_device
    from .endpoint import HostAddressEndpoint, StaticEndpoint, StunEndpoint
    from .routes import LinkConfig
    from .state import StateFiles
    from .firewall import Firewall
    from .nftables import open_nft
    from wire import identity, messages
    from .credential import CredentialFile
    from .hosts import HostsFile

    if not opts["controller"]:
        raise click.UsageError("--controller is required")
    zone = messages.zone_name(opts["zone"])
    join_key = config.read_join_key(opts["join_key"], opts["join_key_file"],
                                    opts["allow_insecure_key_file"])
    if join_key:
        key_zone = identity.parse_join_key(join_key).zone
        if zone == "default" and key_zone != zone:
            zone = key_zone                    # the key says which zone
        elif key_zone != zone:
            raise click.UsageError(f"the join key is for zone {key_zone}, not --zone {zone}")
    private_key = config.read_private_key(opts["private_key"], opts["private_key_file"],
                                          opts["allow_insecure_key_file"])
    password = config.read_password(opts["controller_password"], opts["controller_password_file"],
                                    opts["allow_insecure_key_file"])
    config.check_public_key(private_key, opts["public_key"])
    port = opts["listen_port"]
    host = config.controller_host(opts["controller"])
    if opts["local_endpoint_ip"]:
        endpoints = StaticEndpoint(opts["local_endpoint_ip"], port)
    elif opts["internal_network"]:
        endpoints = HostAddressEndpoint(host, port)
    else:
        servers = [config.split_host_port(s, config.DEFAULT_STUN_PORT) for s in opts["stun_server"]]
        endpoints = StunEndpoint(servers or [(host, config.DEFAULT_STUN_PORT),
                                             (host, config.DEFAULT_STUN_PORT + 1)], port)
    settings = AgentSettings(
        zone=zone, private_key=private_key,
        controller_urls=config.controller_urls(opts["controller"], password, zone),
        controller_tls=controller_tls(opts["controller_ca"], opts["controller_cert"],
                                      opts["controller_key"]),
        listen_port=port, child_prefixes=config.check_prefixes(opts["child_prefix"]),
        request_ip=config.check_ip(opts["request_ip"], "--request-ip"),
        heartbeat_interval=opts["heartbeat_interval"], endpoint_interval=opts["endpoint_interval"],
        controller=opts["controller"], join_key=join_key, zone_secret=password,
        name=opts["name"], credentials=CredentialFile(opts["state_dir"], opts["interface"]),
        hosts=None if opts["hosts_file"] in ("", "none") else HostsFile(
            Path(opts["hosts_file"]), opts["interface"], opts["dns_suffix"]),
        relays=opts["relays"], controller_host=host)
    name = opts["interface"]
    heap.use_one_arena()
    files = StateFiles(opts["state_dir"], name)
    firewall = Firewall(name, open_nft(opts["nft_command"] or None), files.policy_status)
    agent = Agent(settings, open_device(name), LinkConfig(name, opts["mtu"]), endpoints, files,
                  firewall=firewall)

    async def main_task() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop.set)
        try:
            await agent.run()
        except AgentExit as exc:
            log.error("%s", exc)
            return exc.status
        log.info("stopped; the tunnels stay up (`aircrew down` removes them)")
        return 0

    server = None
    if opts["metrics_port"]:
        from . import metrics
        try:
            server = metrics.serve(agent, opts["metrics_port"], opts["metrics_listen"])
        except OSError as exc:
            raise MeshError(f"cannot serve metrics on {opts['metrics_listen']} port "
                            f"{opts['metrics_port']}: {exc.strerror}") from None
    try:
        return asyncio.run(main_task())
    finally:
        if server is not None:
            server.shutdown()


@main.command()
@click.option("--private-key-file", default="/etc/wireguard/private.key", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where the new private key is written (mode 0600).")
@click.option("--public-key-file", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Where the public key is written. Default: the private key file's name "
                   "with .pub added (private.key -> private.key.pub).")
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
def keygen(private_key_file: Path, public_key_file: Path | None, force: bool) -> None:
    """Write a new key pair (private key file mode 0600); prints the public key."""
    public_key_file = public_key_file or private_key_file.with_name(private_key_file.name + ".pub")
    if public_key_file.resolve() == private_key_file.resolve():
        raise click.UsageError("the public key file must not be the private key file")
    if private_key_file.exists() and not force:
        raise click.ClickException(f"{private_key_file} exists (use --force to overwrite)")
    private = proof.generate_private_key()
    public = proof.public_key_of(private)
    write_secret(private_key_file, private + "\n")
    public_key_file.write_text(public + "\n")
    click.echo(public)


def _state_options(f):
    f = click.option("--interface", default="wg0", show_default=True, type=config.INTERFACE,
                     help="WireGuard interface name (as the agent's).")(f)
    f = click.option("--state-dir", default="/etc/wireguard", show_default=True,
                     type=click.Path(file_okay=False, path_type=Path),
                     help="The agent's state directory (as the agent's).")(f)
    return f


@main.command()
@_state_options
def status(interface: str, state_dir: Path) -> None:
    """Show peers, their paths (direct, relayed, down), endpoints, allowed IPs, handshake
    age, the zone revision and the zone policy's rules that apply to this node (with
    their packet counters)."""
    from .backend import open_device
    from .state import StateFiles

    files = StateFiles(state_dir, interface)
    cache = files.load()
    paths = files.load_paths() or {}
    device = open_device(interface)
    if not device.exists():
        raise click.ClickException(f"interface {interface} does not exist")
    state = device.read()
    if cache:
        click.echo(f"zone {cache.zone}  revision {cache.rev}  address {cache.address}/{cache.prefix_len}")
    click.echo(f"interface {interface}  public key {state.public_key}  listen port {state.listen_port}")
    now = time.time()
    stale = not paths or now - float(paths.get("ts", 0)) > 30
    relays = paths.get("relays", {})
    for rid, relay in sorted(relays.items()):
        rtt = f"{relay['rtt_ms']:.1f} ms" if relay.get("rtt_ms") is not None else "-"
        click.echo(f"relay {rid}  {'alive' if relay.get('alive') else 'not answering'}  "
                   f"rtt {rtt}{'  (home)' if relay.get('home') else ''}")
    rows = [("PEER", "PATH", "ENDPOINT", "ALLOWED IPS", "HANDSHAKE", "RX", "TX")]
    for key, peer in sorted(state.peers.items()):
        stats = state.stats.get(key)
        age = f"{now - stats.last_handshake:.0f}s ago" if stats and stats.last_handshake else "never"
        rows.append((key, _path_cell(paths.get("peers", {}).get(key), relays, stale),
                     peer.endpoint or "-", ",".join(peer.allowed_ips), age,
                     str(stats.rx_bytes if stats else 0), str(stats.tx_bytes if stats else 0)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    _policy_status(StateFiles(state_dir, interface).policy_status, interface)


def _policy_status(path: Path, interface: str) -> None:
    """The zone policy's rules that apply to this node, as the agent last applied them,
    with the packet counters of our chains."""
    import json as _json
    try:
        status = _json.loads(path.read_text())
    except (OSError, ValueError):
        click.echo("policy: none (every node of the zone may reach this one)")
        return
    if status.get("state") == "none":
        click.echo("policy: none (every node of the zone may reach this one)")
        return
    click.echo(f"policy: revision {status.get('revision')}  state {status.get('state')}"
               + (f"  error: {status['error']}" if status.get("error") else ""))
    rules = status.get("rules") or []
    if not rules:
        click.echo("  no rule lets anything in: new connections into this node are refused")
    counters = _counters(status.get("table"))
    for text in rules:
        index = text.split(":", 1)[0].removeprefix("rule ")
        hits = counters.get(index)
        click.echo(f"  {text}" + (f"  [{hits} packets]" if hits is not None else ""))
    if counters.get("deny") is not None:
        click.echo(f"  refused: {counters['deny']} packets")
    sets = status.get("sets") or {}
    if sets:
        click.echo("  sets: " + ", ".join(f"{k} ({v})" for k, v in sorted(sets.items())))


def _counters(table: str | None) -> dict[str, int]:
    """Packets accepted per rule index and refused ('deny'), read from our table."""
    if not table:
        return {}
    import json as _json
    from .nftables import open_nft
    try:
        listing = _json.loads(open_nft().list_table("inet", table) or "{}")
    except (ValueError, OSError):
        return {}
    out: dict[str, int] = {}
    for item in listing.get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        packets = next((e["counter"]["packets"] for e in rule.get("expr", [])
                        if isinstance(e, dict) and "counter" in e), None)
        if packets is None:
            continue
        comment = rule.get("comment", "")
        key = comment.removeprefix("rule ") if comment.startswith("rule ") else (
            "deny" if any("reject" in e for e in rule.get("expr", []) if isinstance(e, dict))
            else None)
        if key is not None:
            out[key] = out.get(key, 0) + packets
    return out


def _path_cell(entry: dict | None, relays: dict, stale: bool) -> str:
    """``direct``, ``relay eu-1-ab12cd34 (3.1 ms)``, ``down``; ``?`` when the agent has not
    said (stopped, or relays off) and ``(stale)`` when it has not for 30 s."""
    if not entry:
        return "?"
    text = entry.get("path", "?")
    if text == "relayed" and entry.get("relay"):
        rtt = relays.get(entry["relay"], {}).get("rtt_ms")
        text = f"relay {entry['relay']}" + (f" ({rtt:.1f} ms)" if rtt is not None else "")
    return text + (" (stale)" if stale else "")


@main.command()
@_state_options
@click.option("--controller", type=config.CONTROLLER,
              help="Also tell the tower this node leaves (releases its address and "
                   "prefixes): the only way to release them before the node expires.")
@click.option("--controller-password", cls=clitypes.SecretOption,
              help="The zone's agent secret, for --controller.")
@click.option("--controller-password-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the zone's agent secret, for --controller.")
@controller_tls_options
@click.option("--private-key-file", default="/etc/wireguard/private.key", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="This node's private key, to sign the leave request.")
@click.option("--zone", default=None, type=clitypes.ZONE,
              help="The zone to leave. Default: the zone in the cached state.")
@click.option("--hosts-file", default="/etc/hosts", show_default=True,
              help="Whose aircrew block to remove ('none': leave it).")
def down(interface: str, state_dir: Path, controller: str | None,
         controller_password: str | None, controller_password_file: Path | None,
         controller_ca: str | None, controller_cert: str | None, controller_key: str | None,
         private_key_file: Path, zone: str | None, hosts_file: str) -> None:
    """Remove the interface, the routes aircrew added, the names in the hosts file and
    the state files (the node's credential stays: it is still enrolled).

    With --controller, first send `leave` (as this node, with its stored credential) so
    the tower releases the address. `aircrew --config FILE down` takes the controller
    and its TLS files from the agent's config file."""
    from .credential import CredentialFile
    from .hosts import HostsFile
    from .backend import open_device
    from .routes import LinkConfig
    from .state import StateFiles

    state = StateFiles(state_dir, interface)
    cache = state.load()
    zone = zone or (cache.zone if cache else "default")
    if controller:
        try:
            key = config.read_private_key(None, private_key_file, False)
            password = config.read_password(controller_password, controller_password_file, False)
            urls = config.controller_urls(controller, password, zone)
            stored = CredentialFile(state_dir, interface).load()
            if stored is not None and stored.zone == zone:
                urls.insert(0, config.login_url(controller, stored.user, stored.password))
            tls = controller_tls(controller_ca, controller_cert, controller_key)
            asyncio.run(_leave(urls, tls, zone, key, cache.session if cache else None))
            click.echo(f"left zone {zone}")
        except (MeshError, OSError) as exc:
            click.echo(f"aircrew: could not tell the tower ({exc}); cleaning up anyway", err=True)
    links = LinkConfig(interface)
    device = open_device(interface)
    if device.exists():
        for prefix in links.routes():
            links.remove_route(prefix)
        device.destroy()
        click.echo(f"removed interface {interface}")
    if state.policy_status.exists():
        from .firewall import Firewall
        from .nftables import open_nft
        firewall = Firewall(interface, open_nft(), state.policy_status)
        if firewall.leftover:
            firewall.remove()
            if firewall.state == "none":
                click.echo(f"removed the policy table of {interface}")
    if hosts_file not in ("", "none"):
        try:
            HostsFile(Path(hosts_file), interface).remove()
        except OSError as exc:
            click.echo(f"aircrew: could not clean {hosts_file}: {exc}", err=True)
    state.remove()
    click.echo(f"removed the state files of {interface} in {state_dir}")


async def _leave(urls: list[str], tls: dict[str, str], zone: str, private_key: str,
                 session_id: str | None) -> None:
    """Send `leave` over the first URL that logs in, connected as the agent connects
    (rediss:// with ``tls``, redis+sentinel://)."""
    import redis

    from .agent import controller_client
    from .session import TowerSession

    for url in urls:
        client = controller_client(url, tls)
        try:
            session = TowerSession(client, zone, private_key, session_id=session_id or None)
            await session.open()
            try:
                await session.request("leave", timeout=5)
                return
            finally:
                await session.close()
        except redis.exceptions.AuthenticationError:
            continue
        except redis.exceptions.RedisError as exc:
            raise MeshError(str(exc)) from None
        finally:
            await client.aclose()
    raise MeshError("the controller refused the credentials")


@main.group("config")
def config_group() -> None:
    """Config files: a commented example of every option, and a linter."""


@config_group.command("example")
def config_example() -> None:
    """Print a complete, commented config file (use it with --config FILE)."""
    click.echo(configfile.example(main, "aircrew", "AIRCREW", frozenset({"controller"})))


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def config_check(file: Path) -> None:
    """Parse and lint FILE; report every problem with its line."""
    configfile.check_and_report(main, file, config.agent_problems)


clitypes.name_variables(main, "AIRCREW")

"""The ``controltower`` command line."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from wire import clitypes, configfile, logs
from wire.errors import MeshError
from wire.redisconn import RedisTLS

from . import admin
from .private_redis import RedisTLSPort
from .serve import ServeSettings, Tower


@click.group(cls=clitypes.CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """ControlTower: zones, addresses and peer lists for aircrew WireGuard meshes."""


admin.register(main)


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), is_eager=True,
              expose_value=False, callback=configfile.option_callback, envvar="CONTROLTOWER_CONFIG",
              help="TOML file with any of these options (command line > environment > file).")
@click.option("--listen", default="0.0.0.0", show_default=True, envvar="CONTROLTOWER_LISTEN",
              type=clitypes.LISTEN,
              help="IP address the REST API, STUN, the relay and a private Redis listen on "
                   "(0.0.0.0 or :: for every address).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535),
              envvar="CONTROLTOWER_PORT", help="TCP port of the REST API.")
@click.option("--redis-url", default=None, type=clitypes.REDIS_URL,
              envvar="CONTROLTOWER_REDIS_URL",
              help="Redis to use (redis://[:password@]host:port/db, or a Sentinel-managed "
                   "primary: redis+sentinel://[user:password@]host:26379[,host:26379...]"
                   "/<master-name>[/db], or a Redis Cluster: redis+cluster://[user:password@]"
                   "host:port[,host:port...]). Without it a private redis-server is started in "
                   "the data directory.")
@click.option("--redis-wait", default=30.0, show_default=True,
              type=clitypes.FiniteFloat(0, 3600), envvar="CONTROLTOWER_REDIS_WAIT",
              help="Seconds to wait at start for the Redis of --redis-url to answer.")
@click.option("--redis-port", default=6379, show_default=True, type=click.IntRange(1, 65535),
              envvar="CONTROLTOWER_REDIS_PORT", help="Port of the private redis-server.")
@click.option("--data-dir", default="/var/lib/controltower", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), envvar="CONTROLTOWER_DATA_DIR",
              help="Where the private Redis keeps its AOF and the tower its secrets.")
@click.option("--stun-port", default=3478, show_default=True, type=click.IntRange(0, 65534),
              envvar="CONTROLTOWER_STUN_PORT", help="UDP port of the STUN responder (it also answers on the next port, for NAT "
                   "type detection); 0 turns it off.")
@click.option("--relay-port", default=3480, show_default=True, type=click.IntRange(0, 65535),
              envvar="CONTROLTOWER_RELAY_PORT",
              help="UDP port of the relay for nodes that cannot reach each other directly "
                   "(0: no relay in this process).")
@click.option("--relay-public-address", default=None, envvar="CONTROLTOWER_RELAY_PUBLIC_ADDRESS",
              help="Address agents reach the relay at (default: the host they use as --controller).")
@click.option("--relay-region", default="tower", show_default=True,
              envvar="CONTROLTOWER_RELAY_REGION", help="Region name of this relay.")
@click.option("--relay-datapath", default="auto", show_default=True,
              type=click.Choice(["auto", "kernel", "user"]), envvar="CONTROLTOWER_RELAY_DATAPATH",
              help="kernel: nftables forwards relayed data (needs CAP_NET_ADMIN); user: Python "
                   "does; auto: kernel when possible.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(logs.LEVELS, case_sensitive=False), envvar="CONTROLTOWER_LOG_LEVEL",
              help="Least level logged (the API workers' lines too).")
@click.option("--log-format", default="text", show_default=True,
              type=click.Choice(logs.FORMATS, case_sensitive=False),
              envvar="CONTROLTOWER_LOG_FORMAT",
              help="text for people, json for machines (one object per line).")
@click.option("--offline-after", default=30.0, show_default=True, type=clitypes.FiniteFloat(1),
              envvar="CONTROLTOWER_OFFLINE_AFTER",
              help="Seconds without a heartbeat after which a node shows as offline.")
@click.option("--expiry", default=86400.0, show_default=True, type=clitypes.FiniteFloat(10),
              envvar="CONTROLTOWER_EXPIRY",
              help="Seconds without a heartbeat after which a node is removed and its address released.")
@click.option("--publish-window", default=0.02, show_default=True, type=clitypes.FiniteFloat(0, 5),
              envvar="CONTROLTOWER_PUBLISH_WINDOW",
              help="Seconds over which zone changes are coalesced into one update.")
@click.option("--publish-window-max", default=0.25, show_default=True,
              type=clitypes.FiniteFloat(0, 5), envvar="CONTROLTOWER_PUBLISH_WINDOW_MAX",
              help="Longest publish window: while a zone keeps changing, its window "
                   "doubles up to this (fewer, larger updates); at or below "
                   "--publish-window the window stays fixed.")
@click.option("--cluster-replica-acks", default=1, show_default=True, type=click.IntRange(0, 16),
              envvar="CONTROLTOWER_CLUSTER_REPLICA_ACKS",
              help="Redis Cluster: replicas that must have a chunk's writes (WAIT) before its "
                   "replies leave; 0 for a cluster without replicas.")
@click.option("--agent-acl/--no-agent-acl", default=True, show_default=True,
              envvar="CONTROLTOWER_AGENT_ACL",
              help="Give each zone its own least-privilege Redis user for its agents.")
@click.option("--read-auth", default="auto", show_default=True,
              type=click.Choice(["auto", "open", "token"]), envvar="CONTROLTOWER_READ_AUTH",
              help="Whether GET endpoints need the admin token (auto: only off loopback).")
@click.option("--admin-token-file", default=None, type=click.Path(dir_okay=False, path_type=Path),
              envvar="CONTROLTOWER_ADMIN_TOKEN_FILE",
              help="File holding the admin token (default: <data-dir>/admin-token, generated).")
@click.option("--http-tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="CONTROLTOWER_HTTP_TLS_CERT", help="Serve HTTPS with this certificate.")
@click.option("--http-tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="CONTROLTOWER_HTTP_TLS_KEY", help="The HTTPS certificate's private key.")
@click.option("--http-tls-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="CONTROLTOWER_HTTP_TLS_CA",
              help="Require client certificates signed by this CA (mutual TLS).")
@click.option("--redis-tls-ca", type=click.Path(exists=True, dir_okay=False),
              envvar="CONTROLTOWER_REDIS_TLS_CA", help="CA of the Redis server (rediss:// URLs).")
@click.option("--redis-tls-cert", type=click.Path(exists=True, dir_okay=False),
              envvar="CONTROLTOWER_REDIS_TLS_CERT", help="Client certificate for Redis.")
@click.option("--redis-tls-key", type=click.Path(exists=True, dir_okay=False),
              envvar="CONTROLTOWER_REDIS_TLS_KEY", help="Client certificate key for Redis.")
@click.option("--private-redis-tls-port", default=0, show_default=True,
              type=click.IntRange(0, 65535), envvar="CONTROLTOWER_PRIVATE_REDIS_TLS_PORT",
              help="Also serve the private Redis with TLS on this TCP port, for agents on "
                   "networks you do not trust (they use --controller rediss://HOST:PORT); "
                   "0: no TLS port.")
@click.option("--private-redis-tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="CONTROLTOWER_PRIVATE_REDIS_TLS_CERT",
              help="Certificate (PEM) of the private Redis's TLS port.")
@click.option("--private-redis-tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="CONTROLTOWER_PRIVATE_REDIS_TLS_KEY",
              help="Private key (PEM) of that certificate.")
def serve(listen: str, port: int, redis_url: str | None, redis_wait: float, redis_port: int,
          data_dir: Path, stun_port: int, relay_port: int, relay_public_address: str | None,
          relay_region: str, relay_datapath: str, log_level: str, log_format: str,
          offline_after: float, expiry: float,
          publish_window: float, publish_window_max: float, cluster_replica_acks: int,
          agent_acl: bool, read_auth: str,
          admin_token_file: Path | None, http_tls_cert: Path | None, http_tls_key: Path | None,
          http_tls_ca: Path | None, redis_tls_ca: str | None, redis_tls_cert: str | None,
          redis_tls_key: str | None, private_redis_tls_port: int,
          private_redis_tls_cert: Path | None, private_redis_tls_key: Path | None) -> None:
    """Run the ControlTower: REST API, request worker, STUN responder and relay."""
    problems = serve_problems(click.get_current_context().params)
    if problems:
        raise click.UsageError(problems[0])
    logs.setup(log_level, log_format.lower())
    settings = ServeSettings(listen=listen, port=port, redis_url=redis_url or None,
                             redis_wait=redis_wait,
                             redis_port=redis_port, data_dir=data_dir, stun_port=stun_port,
                             relay_port=relay_port, relay_public_address=relay_public_address,
                             relay_region=relay_region, relay_datapath=relay_datapath,
                             log_level=log_level.lower(), log_format=log_format.lower(),
                             offline_after=offline_after,
                             expiry=expiry, publish_window=publish_window,
                             publish_window_max=publish_window_max,
                             cluster_replica_acks=cluster_replica_acks, agent_acl=agent_acl,
                             read_auth=read_auth, admin_token_file=admin_token_file,
                             http_tls_cert=http_tls_cert, http_tls_key=http_tls_key,
                             http_tls_ca=http_tls_ca,
                             redis_tls=RedisTLS(redis_tls_ca, redis_tls_cert, redis_tls_key),
                             private_redis_tls=RedisTLSPort(
                                 private_redis_tls_port, private_redis_tls_cert,
                                 private_redis_tls_key) if private_redis_tls_port else None)
    try:
        sys.exit(Tower(settings).run())
    except MeshError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("relay")
@click.option("--region", required=True, envvar="CONTROLTOWER_RELAY_REGION",
              help="Name of this relay's region (e.g. eu-1).")
@click.option("--redis-url", required=True, type=clitypes.REDIS_URL,
              envvar="CONTROLTOWER_REDIS_URL",
              help="The towers' Redis (the relay reads zone members and announces itself).")
@click.option("--listen", default="0.0.0.0:3480", show_default=True,
              envvar="CONTROLTOWER_RELAY_LISTEN", help="UDP address:port to relay on.")
@click.option("--public-address", default=None, envvar="CONTROLTOWER_RELAY_PUBLIC_ADDRESS",
              help="Address agents reach this relay at (default: the --listen address).")
@click.option("--zones", default="*", show_default=True, envvar="CONTROLTOWER_RELAY_ZONES",
              help="Comma-separated zones to serve, or * for every zone.")
@click.option("--data-dir", default="/var/lib/controltower-relay", show_default=True,
              envvar="CONTROLTOWER_RELAY_DATA_DIR",
              type=click.Path(file_okay=False, path_type=Path), help="Holds the relay's key.")
@click.option("--datapath", default="auto", show_default=True,
              type=click.Choice(["auto", "kernel", "user"]), envvar="CONTROLTOWER_RELAY_DATAPATH",
              help="kernel: nftables forwards relayed data (needs CAP_NET_ADMIN); user: Python "
                   "does; auto: kernel when possible.")
@click.option("--metrics-port", default=0, type=click.IntRange(0, 65535),
              envvar="CONTROLTOWER_RELAY_METRICS_PORT",
              help="Serve Prometheus metrics on this TCP port (0: none).")
@click.option("--key-prefix", default="ct:", show_default=True, envvar="CONTROLTOWER_KEY_PREFIX",
              help="Prefix of the towers' Redis keys (as theirs).")
@click.option("--log-level", default="info", show_default=True, envvar="CONTROLTOWER_LOG_LEVEL",
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="Least level logged.")
def relay_command(region: str, redis_url: str, listen: str, public_address: str | None,
                  zones: str, data_dir: Path, datapath: str, metrics_port: int,
                  key_prefix: str, log_level: str) -> None:
    """Run a relay alone (on another public host), announced to the zones it serves."""
    from .relay.standalone import run_relay
    logs.setup(log_level, "text")
    try:
        sys.exit(run_relay(region=region, redis_url=redis_url, listen=listen,
                           public_address=public_address, zones=zones, data_dir=data_dir,
                           datapath=datapath, metrics_port=metrics_port, key_prefix=key_prefix))
    except MeshError as exc:
        raise click.ClickException(str(exc)) from None


def serve_problems(values: dict[str, Any]) -> list[str]:
    """What is wrong with a combination of serve's settings (flags, environment or a
    config file): the same checks at start and in `config check`."""
    get = values.get
    problems = []
    stun, relay = get("stun_port", 3478), get("relay_port", 3480)
    if stun and relay and relay in (stun, stun + 1):
        problems.append(f"--relay-port {relay} is a STUN port (--stun-port {stun} and the "
                        "port after it): choose another UDP port")
    if bool(get("http_tls_cert")) != bool(get("http_tls_key")):
        problems.append("--http-tls-cert and --http-tls-key go together")
    if get("http_tls_ca") and not get("http_tls_cert"):
        problems.append("--http-tls-ca (client certificates) needs --http-tls-cert")
    if not get("redis_url"):
        if get("agent_acl") is False:
            problems.append("--no-agent-acl needs --redis-url: with the private Redis the only "
                            "other credential is the tower's own full-rights password, which "
                            "agents must never hold")
        ports = {"--port": get("port", 8080), "--redis-port": get("redis_port", 6379)}
        if get("private_redis_tls_port"):
            ports["--private-redis-tls-port"] = get("private_redis_tls_port")
        if len(set(ports.values())) < len(ports):
            problems.append(f"{', '.join(ports)} must be different TCP ports")
        tls = (get("private_redis_tls_cert"), get("private_redis_tls_key"))
        if bool(get("private_redis_tls_port")) != all(tls) or any(tls) != all(tls):
            problems.append("--private-redis-tls-port, --private-redis-tls-cert and "
                            "--private-redis-tls-key go together")
    elif get("private_redis_tls_port"):
        problems.append("--private-redis-tls-port is for the private Redis (no --redis-url)")
    return problems


@main.group("config")
def config_group() -> None:
    """Config files for `serve`: a commented example of every option, and a linter."""


@config_group.command("example")
def config_example() -> None:
    """Print a complete, commented config file (use it with `serve --config FILE`)."""
    click.echo(configfile.example(serve, "controltower serve", "CONTROLTOWER"))


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def config_check(file: Path) -> None:
    """Parse and lint FILE; report every problem with its line."""
    configfile.check_and_report(serve, file, _file_problems)


def _file_problems(values: dict[str, Any]) -> list[str]:
    """serve_problems of a file's values over serve's defaults."""
    defaults = {p.name: configfile.default(p) for p in configfile.options(serve)}
    return serve_problems({**defaults, **values})


# serve's options all have a variable; the admin commands' only their connection options
# (admin.api_command), not those describing the zone, key or route of one call.
clitypes.name_variables(main, "CONTROLTOWER", only=lambda command: command is serve)

"""The Redis ACL rules of every user the tower makes (pure: names in, rule list out).

Measured on Redis 7.0 (docs/security.md, "Redis users"): channel rights cover PUBLISH
and SUBSCRIBE alike, so the one channel a user may publish on sits in a *selector* that
allows PUBLISH only; commands run inside scripts are checked against the caller's
rights, so no user gets EVAL or FCALL; nobody but the tower gets a write command.
"""
from __future__ import annotations

from wire.keys import Keys

# What a client library sends on connect (``extra``: commands only newer servers know,
# such as client|setinfo, added by the caller when the server has them).
CONNECT = ("auth", "hello", "ping", "quit", "reset", "client|setname", "client|id")
# ssubscribe/sunsubscribe: on a Redis Cluster the tower's messages to agents travel on
# sharded pub/sub; channel rules (&...) cover shard channels exactly as classic ones.
NODE_COMMANDS = (*CONNECT, "subscribe", "unsubscribe", "ssubscribe", "sunsubscribe", "get",
                 "hget", "hgetall", "multi", "exec", "discard")
ENROLL_COMMANDS = (*CONNECT, "subscribe", "unsubscribe", "ssubscribe", "sunsubscribe", "get")
TOMBSTONE_COMMANDS = (*CONNECT, "get")
RELAY_COMMANDS = (*CONNECT, "smembers", "hkeys", "hexists", "hset", "hdel", "zadd", "zrem",
                  "zrangebyscore")


def _commands(names: tuple[str, ...], extra: tuple[str, ...]) -> list[str]:
    return ["-@all", *(f"+{c}" for c in (*names, *extra))]


def node(keys: Keys, zone: str, node_id: str, extra: tuple[str, ...] = ()) -> list[str]:
    """A node: read its zone's snapshot, the tower's public key and the relays' records,
    hear its zone's updates and its own replies, publish on its own request channel only."""
    return [*suspended_node(keys, zone, node_id, extra),
            f"(+publish resetchannels &{keys.request_channel(zone, node_id)})"]


def suspended_node(keys: Keys, zone: str, node_id: str, extra: tuple[str, ...] = ()) -> list[str]:
    """A node suspended for flooding: what a node may do but publish."""
    return ["reset", "on", "resetchannels", *_commands(NODE_COMMANDS, extra),
            f"%R~{keys.zone(zone)}", f"%R~{keys.rev(zone)}", f"%R~{keys.published(zone)}",
            f"%R~{keys.peers(zone)}", f"%R~{keys.policy(zone)}", f"%R~{keys.tower_public}",
            f"%R~{keys.relays}", f"%R~{keys.zone_tower(zone)}", f"&{keys.updates(zone)}",
            f"&{keys.reply(zone, node=node_id)}"]


def enroller(keys: Keys, zone: str, cred: str, extra: tuple[str, ...] = ()) -> list[str]:
    """A join key, or the zone secret (``cred`` = ``zone``): ask for enrollment and hear
    the answer; nothing else."""
    return ["reset", "on", "resetchannels", *_commands(ENROLL_COMMANDS, extra),
            f"%R~{keys.tower_public}", f"%R~{keys.zone_tower(zone)}",
            f"&{keys.enrolled_pattern(zone, cred)}",
            f"(+publish resetchannels &{keys.enroll_pattern(zone, cred)})"]


def tombstone(keys: Keys, zone: str, node_id: str, extra: tuple[str, ...] = ()) -> list[str]:
    """A removed node: may log in and read why, nothing else."""
    return ["reset", "on", "resetchannels", *_commands(TOMBSTONE_COMMANDS, extra),
            f"%R~{keys.gone(zone, node_id)}"]


def relay(keys: Keys, extra: tuple[str, ...] = ()) -> list[str]:
    """A relay alone on another host (``controltower relay``): the zones' names and their
    members' keys (HKEYS/HEXISTS: not their records), its own announcement. No channel."""
    return ["reset", "on", "resetchannels", *_commands(RELAY_COMMANDS, extra),
            f"%R~{keys.zones}", f"%R~{keys.peers('*')}", f"~{keys.relays}",
            f"~{keys.relays_seen}"]

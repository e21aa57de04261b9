"""Reading a zone's snapshot from Redis: fields of its hash, its revision, its peer
records (and, for the tower's API, the peers' last heartbeats), in one transaction.

One reader for the tower's store, the tower's ``GET /peers`` cache and the agent, over a
blocking or an asyncio client alike: ``commands`` names the pipeline's commands and
``parse`` reads its replies (both pure); ``queue`` puts the commands on a pipeline::

    read = Read(zone, fields=("cidr",))
    with client.pipeline(transaction=True) as pipe:          # or: async with
        queue(pipe, commands(keys, read))
        snap = parse(read, pipe.execute())                  # or: await pipe.execute()

One field is read with HGET, several with HMGET: the agent's Redis user (see
``controltower.acl``) may run HGET and HGETALL on the zone hash, not HMGET. The replies
are those of a client with ``decode_responses=True``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import messages
from .errors import InvalidInput, NotFound
from .keys import Keys
from .messages import Peer

ZONE_FIELDS = ("name", "description", "cidr", "created")


@dataclass(frozen=True)
class Read:
    """What to read of one zone. The zone exists when its hash has any of ``fields``
    (every zone hash has a name and a CIDR)."""
    zone: str
    fields: tuple[str, ...] = ZONE_FIELDS
    peers: bool = True          # the peer records
    seen: bool = False          # the peers' last heartbeats
    policy: bool = False        # the zone's access policy

    def __post_init__(self) -> None:
        if not self.fields:
            raise InvalidInput("a snapshot read needs at least one field of the zone hash")


@dataclass(frozen=True)
class Command:
    """One redis-py pipeline call: ``getattr(pipe, method)(*args, **options)``."""
    method: str
    args: tuple[Any, ...]
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Snapshot:
    zone: str
    fields: dict[str, str | None]                 # the fields read; None: not in the hash
    rev: int
    records: dict[str, str] = field(default_factory=dict)   # public key -> peer record (JSON)
    seen: dict[str, float] = field(default_factory=dict)    # public key -> last heartbeat
    policy: str | None = None   # the stored policy (``wire.policy.stored``); None: none


def commands(keys: Keys, read: Read) -> list[Command]:
    """The pipeline's commands, in the order ``parse`` expects their replies."""
    zone = read.zone
    if len(read.fields) == 1:
        out = [Command("hget", (keys.zone(zone), read.fields[0]))]
    else:
        out = [Command("hmget", (keys.zone(zone), *read.fields))]
    out.append(Command("get", (keys.rev(zone),)))
    if read.peers:
        out.append(Command("hgetall", (keys.peers(zone),)))
    if read.seen:
        out.append(Command("zrange", (keys.seen(zone), 0, -1), (("withscores", True),)))
    if read.policy:
        out.append(Command("get", (keys.policy(zone),)))
    return out


def queue(pipe: Any, cmds: Sequence[Command]) -> None:
    """Put ``cmds`` on a redis-py pipeline (blocking or asyncio: queuing never waits)."""
    for cmd in cmds:
        getattr(pipe, cmd.method)(*cmd.args, **dict(cmd.options))


def parse(read: Read, replies: Sequence[Any]) -> Snapshot:
    """The snapshot from the replies to ``commands(keys, read)``; NotFound when the zone
    does not exist."""
    replies = list(replies)
    expected = 2 + read.peers + read.seen + read.policy
    if len(replies) != expected:
        raise InvalidInput(f"a snapshot read has {expected} replies, not {len(replies)}")
    first = replies[0]
    values = [first] if len(read.fields) == 1 else list(first)
    if len(values) != len(read.fields):
        raise InvalidInput("a snapshot read's zone fields do not match what was asked")
    fields = dict(zip(read.fields, values))
    if all(value is None for value in values):
        raise NotFound(f"zone {read.zone} does not exist")
    rest = iter(replies[2:])
    records = next(rest) if read.peers else {}
    seen = dict(next(rest)) if read.seen else {}
    policy = next(rest) if read.policy else None
    return Snapshot(read.zone, fields, int(replies[1] or 0), records, seen, policy)


def peers(records: Mapping[str, str],
          on_malformed: Callable[[InvalidInput], None] | None = None) -> dict[str, Peer]:
    """The peer records parsed, by public key. A malformed record raises InvalidInput, or
    is skipped after ``on_malformed(error)`` when that is given."""
    out: dict[str, Peer] = {}
    for record in records.values():
        try:
            peer = messages.parse_peer(record)
        except InvalidInput as exc:
            if on_malformed is None:
                raise
            on_malformed(exc)
            continue
        out[peer.key] = peer
    return out

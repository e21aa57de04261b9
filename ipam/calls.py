"""One step of a store operation, for the caller to send: ``Call``.

A Call holds the Redis commands of one round trip and ``decode``, a pure function of
their replies. The caller (the request worker, or ``ZoneStore.run``) queues calls in its
own pipelines and settles each with ``settle``, which gives one of:

- the operation's result;
- the exception that refused it (a MeshError, see ipam/refusals.py) or failed it,
  returned, not raised, so that one call's failure is its own only;
- the next Call, when the operation needs another round trip: an IPv6 zone's candidate
  address, the write of an endpoint's compare-and-set, a publication after the read of
  its changes, a step again after Redis lost its scripts.

No Call does Redis I/O of its own: every round trip is one its caller sends.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import redis
from redis.client import Pipeline
from redis.commands.core import Script

# A bound on the steps of one operation, whatever its decoders allow.
MAX_STEPS = 128


@dataclass(frozen=True)
class Call:
    # Each command: its arguments, and optionally last a dict of redis-py's options for
    # the reply's parsing (``{"get": True}`` for SET ... GET).
    commands: tuple[tuple[Any, ...], ...]
    decode: Callable[[list[Any]], Any]
    scripts: tuple[Script, ...] = ()     # the scripts ``commands`` run (EVALSHA)
    reload: bool = False                 # send ``scripts`` as EVAL: Redis lost them

    @classmethod
    def script(cls, script: Script, keys: list[str], args: list[Any],
               decode: Callable[[Any], Any]) -> Call:
        """A call of one Lua script; ``decode`` takes the script's reply."""
        return cls((("EVALSHA", script.sha, len(keys), *keys, *args),),
                   lambda replies: decode(replies[0]), (script,))

    @property
    def size(self) -> int:
        """How many replies the call's commands produce in a pipeline."""
        return len(self.commands)


def queue(pipe: Pipeline, call: Call) -> None:
    """Add a call's commands to a pipeline (executed with raise_on_error=False).

    A call whose scripts Redis lost runs them with ``EVAL`` and their source, which also
    caches them again. (Not ``SCRIPT LOAD`` first: it names no key, so a Redis Cluster
    pipeline cannot route it to the node that lost them, a promoted replica say.)"""
    sources = {script.sha: script.script for script in call.scripts} if call.reload else {}
    for command in call.commands:
        if sources and command and command[0] == "EVALSHA" and command[1] in sources:
            command = ("EVAL", sources[command[1]], *command[2:])
        if command and isinstance(command[-1], dict):
            pipe.execute_command(*command[:-1], **command[-1])
        else:
            pipe.execute_command(*command)


def settle(call: Call, replies: list[Any]) -> Any:
    """What a call's replies come to: the result, the next Call, or an exception
    (returned). Connection errors never get here: the pipeline raises them, and the
    calls may then have run or not."""
    if any(isinstance(reply, redis.exceptions.NoScriptError) for reply in replies):
        # Redis lost its scripts (restart, SCRIPT FLUSH): nothing of this call ran.
        return replace(call, reload=True)
    for reply in replies:
        if isinstance(reply, Exception):
            return reply
    try:
        return call.decode(replies)
    except Exception as exc:  # noqa: BLE001 - a refusal, or a malformed record: returned
        return exc


def settle_all(calls: list[Call], replies: list[Any]) -> list[Any]:
    """``settle`` of calls queued one after another; ``replies`` start with theirs."""
    out = []
    at = 0
    for call in calls:
        out.append(settle(call, replies[at:at + call.size]))
        at += call.size
    return out


def replies_of(calls: list[Call]) -> int:
    return sum(call.size for call in calls)

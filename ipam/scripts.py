"""The atomic Lua scripts of the zone store, loaded once per Redis client."""
from __future__ import annotations

from functools import cache
from importlib import resources

from redis import Redis
from redis.commands.core import Script

from wire.redisconn import is_cluster

NAMES = ("candidate", "register", "replace_peer", "remove_peer", "heartbeat", "pending",
         "publish", "create_zone", "delete_zone", "enroll", "remove_node", "admit",
         "zone_hset", "set_policy", "copy_tower", "unenroll")


@cache
def source(name: str) -> str:
    lua = resources.files(__package__) / "lua"
    return (lua / "_lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class Scripts:
    """Registered scripts (their SHA1 is computed here, without Redis): the store's
    ``Call``s run them with EVALSHA (ipam/calls.py)."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        for name in NAMES:
            setattr(self, name, client.register_script(source(name)))

    def load(self) -> None:
        """Load every script into Redis now (one round trip), so that the first
        pipeline of EVALSHA calls finds them. (A call whose script Redis lost later,
        after a restart or SCRIPT FLUSH, is sent again with its script: see
        ipam/calls.py settle.) On a Redis Cluster, into every primary (``SCRIPT LOAD``
        names no key: redis-py sends it to all of them, one at a time)."""
        if is_cluster(self.client):
            for name in NAMES:
                self.client.script_load(getattr(self, name).script)
            return
        with self.client.pipeline(transaction=False) as pipe:
            for name in NAMES:
                pipe.script_load(getattr(self, name).script)
            pipe.execute()

    candidate: Script
    register: Script
    replace_peer: Script
    remove_peer: Script
    heartbeat: Script
    pending: Script
    publish: Script
    create_zone: Script
    delete_zone: Script
    enroll: Script
    unenroll: Script
    remove_node: Script
    admit: Script
    zone_hset: Script
    set_policy: Script
    copy_tower: Script

"""Agents' Redis users against a real Redis: what a node, a join key and the zone secret
may and may not do (every attack of issue 14), revocation, and re-applying from digests."""
from __future__ import annotations

import socket
import threading
import time

import pytest
import redis

from controltower import aclrules
from controltower.acl import AgentCredentials, new_secret
from ipam.registry import Registry
from ipam.store import ZoneStore
from wire import identity
from wire.keys import Keys, node_id
from wire.proof import generate_private_key, public_key_of

MAX_ID = "18446744073709551615-18446744073709551615"


@pytest.fixture
def zones(redis_client):
    """Two zones with their secrets, a node enrolled in zone-blue (its password), a join
    key of zone-blue, and a registered node in zone-red."""
    store = ZoneStore(redis_client)
    creds = AgentCredentials(redis_client, store.keys)
    secrets = {}
    for name, cidr in (("zone-blue", "10.140.0.0/20"), ("zone-red", "172.20.0.0/20")):
        store.create_zone(name, cidr)
        secrets[name] = new_secret()
        creds.set(name, secrets[name])
    store.register("zone-red", "M+BTP8LbMikKLufoTTI7tPL5Jf3SHhNki6SXEXa5Uic=", listen_port=1,
                   session="s")
    key, record = creds.registry.create_join_key("zone-blue", store.get_zone("zone-blue").network,
                                                 reusable=True)
    creds.apply_join_key("zone-blue", record.id, record.sha256)
    public = public_key_of(generate_private_key())
    password = new_secret()
    node = store.run(creds.registry.enroll_call("zone-blue", key.key_id, public,
                                                identity.digest(password), "laptop"))
    creds.apply_node("zone-blue", node)
    return store, creds, secrets, key, node, password


def login(redis_proc, user, password, **kw):
    return redis.Redis(port=redis_proc.port, username=user, password=password,
                       decode_responses=True, **kw)


def refused(call) -> bool:
    try:
        call()
    except redis.exceptions.ResponseError:      # NOPERM is a ResponseError
        return True
    return False


def test_a_node_may_do_its_job(zones, redis_proc):
    store, _, _, _, node, password = zones
    k = store.keys
    c = login(redis_proc, node.user, password)
    assert c.ping()
    with c.pipeline(transaction=True) as pipe:       # the snapshot
        pipe.hget(k.zone("zone-blue"), "cidr")
        pipe.get(k.rev("zone-blue"))
        pipe.hgetall(k.peers("zone-blue"))
        pipe.get(k.policy("zone-blue"))
        assert pipe.execute()[0] == "10.140.0.0/20"
    c.get(k.published("zone-blue"))
    c.get(k.tower_public)
    c.hgetall(k.relays)                              # the relays (issue 13)
    assert c.publish(k.request_channel("zone-blue", node.id), b"x") == 0
    p = c.pubsub()
    p.subscribe(k.updates("zone-blue"), k.reply("zone-blue", node=node.id))
    got = [p.get_message(timeout=1) for _ in range(2)]
    assert [m["type"] for m in got] == ["subscribe", "subscribe"]


def _allowed(admin, user, keys_and_channels) -> set[str]:
    """Every command (and subcommand) Redis knows that ``user`` may run with one of the
    given keys or channels as its first argument (ACL DRYRUN)."""
    conn = admin.connection_pool.get_connection()
    try:
        conn.send_command("COMMAND")
        info = conn.read_response()
    finally:
        admin.connection_pool.release(conn)
    names: list[list[str]] = []
    for entry in info:
        name = entry[0].decode() if isinstance(entry[0], bytes) else entry[0]
        subs = entry[9] if len(entry) > 9 else []
        if subs:
            names += [(s[0].decode() if isinstance(s[0], bytes) else s[0]).split("|") for s in subs]
        else:
            names.append([name])
    allowed = set()
    for parts in names:
        for args in [[t, *extra] for t in keys_and_channels for extra in ([], ["x"], ["x", "y"])] + [[]]:
            try:
                if admin.execute_command("ACL", "DRYRUN", user, *parts, *args) == "OK":
                    allowed.add("|".join(parts))
                    break
            except redis.exceptions.ResponseError:
                pass
    return allowed


def test_a_node_can_run_exactly_the_commands_it_needs(zones, redis_client):
    store, _, _, _, node, _ = zones
    k = store.keys
    targets = [k.zone("zone-blue"), k.peers("zone-blue"), k.requests("zone-blue"),
               k.tower_public, k.tower_private, k.auth("zone-blue"), k.nodes("zone-blue"),
               k.request_channel("zone-blue", node.id), k.updates("zone-blue"),
               k.reply("zone-blue", node=node.id), k.zone("zone-red")]
    assert _allowed(redis_client, node.user, targets) == {
        "auth", "client|id", "client|setname", "discard", "exec", "get", "hello", "hget",
        "hgetall", "multi", "ping", "publish", "quit", "reset", "subscribe", "unsubscribe",
        "ssubscribe", "sunsubscribe"}      # sharded pub/sub: the tower on a Redis Cluster


def test_a_relay_can_run_exactly_the_commands_it_needs(zones, redis_client):
    """``ct-relay`` (a relay on another host): zone names and members' keys, its record."""
    k = zones[0].keys
    redis_client.execute_command("ACL", "SETUSER", "ct-relay", *aclrules.relay(k), ">pw")
    targets = [k.zones, k.peers("zone-blue"), k.relays, k.relays_seen, k.tower_private,
               k.auth("zone-blue"), k.nodes("zone-blue"), k.updates("zone-blue"),
               k.requests("zone-blue")]
    assert _allowed(redis_client, "ct-relay", targets) == {
        "auth", "client|id", "client|setname", "hdel", "hello", "hexists", "hkeys", "hset",
        "ping", "quit", "reset", "smembers", "zadd", "zrangebyscore", "zrem"}


ATTACKS = {
    "exhaust the request stream's ID space": lambda c, k, n: c.xadd(k.requests("zone-blue"), {"m": "x"}, id=MAX_ID),
    "trim others' requests (MAXLEN 0)": lambda c, k, n: c.xadd(k.requests("zone-blue"), {"m": "x"}, maxlen=0),
    "write into db 1": lambda c, k, n: c.execute_command("SELECT", 1),
    "read the zone secret's digest": lambda c, k, n: c.hgetall(k.auth("zone-blue")),
    "read node credential digests": lambda c, k, n: c.hgetall(k.nodes("zone-blue")),
    "read join key digests": lambda c, k, n: c.hgetall(k.joinkeys("zone-blue")),
    "read the tower's private key": lambda c, k, n: c.get(k.tower_private),
    "publish a fake zone update": lambda c, k, n: c.publish(k.updates("zone-blue"), '{"v":1}'),
    "publish a fake reply to itself": lambda c, k, n: c.publish(k.reply("zone-blue", node=n), "x"),
    "publish on another node's channel": lambda c, k, n: c.publish(k.request_channel("zone-blue", "0" * 24), "x"),
    "publish in another zone": lambda c, k, n: c.publish(k.request_channel("zone-red", n), "x"),
    "run a script": lambda c, k, n: c.eval("return 1", 0),
    "call a function": lambda c, k, n: c.execute_command("FCALL", "f", 0),
    "list keys": lambda c, k, n: c.scan(0),
    "read another zone": lambda c, k, n: c.hgetall(k.peers("zone-red")),
    "list the ACL": lambda c, k, n: c.execute_command("ACL", "LIST"),
    "kill clients": lambda c, k, n: c.execute_command("CLIENT", "KILL", "USER", "ct-tower"),
    "read the config": lambda c, k, n: c.config_get("*"),
    "sharded publish": lambda c, k, n: c.execute_command("SPUBLISH", k.updates("zone-blue"), "x"),
    "delete the stream": lambda c, k, n: c.delete(k.requests("zone-blue")),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("who", ["node", "zone secret", "join key"])
def test_no_credential_can_attack(zones, redis_proc, attack, who):
    store, _, secrets, key, node, password = zones
    k = store.keys
    user, pw = {"node": (node.user, password),
                "zone secret": (k.agent_user("zone-blue"), secrets["zone-blue"]),
                "join key": (k.join_user("zone-blue", key.key_id), key.secret)}[who]
    c = login(redis_proc, user, pw)
    assert c.ping()
    assert refused(lambda: ATTACKS[attack](c, k, node.id))


def _subscribe_refused(redis_proc, user, password, channel) -> bool:
    p = login(redis_proc, user, password).pubsub()
    p.subscribe(channel)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            m = p.get_message(timeout=0.2)
        except redis.exceptions.ResponseError:
            return True
        if m and m["type"] == "subscribe":
            return False
    return False


def test_a_node_cannot_hear_what_is_not_its_own(zones, redis_proc):
    store, _, _, _, node, password = zones
    k = store.keys
    for channel in (k.reply("zone-blue", node="0" * 24), k.request_channel("zone-blue", node.id),
                    k.updates("zone-red"), k.enroll_channel("zone-blue", "zone", node.id)):
        assert _subscribe_refused(redis_proc, node.user, password, channel), channel


def test_enrollment_users_may_ask_for_enrollment_only(zones, redis_proc):
    store, _, secrets, key, node, _ = zones
    k = store.keys
    for cred, user, pw in (("zone", k.agent_user("zone-blue"), secrets["zone-blue"]),
                           (key.key_id, k.join_user("zone-blue", key.key_id), key.secret)):
        c = login(redis_proc, user, pw)
        assert c.publish(k.enroll_channel("zone-blue", cred, node.id), "x") == 0
        assert refused(lambda: c.publish(k.enroll_channel("zone-blue", "ffffffffffff", node.id), "x"))
        assert refused(lambda: c.publish(k.request_channel("zone-blue", node.id), "x"))
        assert refused(lambda: c.hgetall(k.peers("zone-blue")))
        assert c.get(k.tower_public) is None
        assert not _subscribe_refused(redis_proc, user, pw, k.enrolled_channel("zone-blue", cred, node.id))
        assert _subscribe_refused(redis_proc, user, pw, k.updates("zone-blue"))


def test_a_150_mb_message_is_refused_before_redis_stores_it(redis_client, redis_proc, zones):
    """With the private Redis's setting (proto-max-bulk-len 1mb) Redis refuses the
    argument at its length header: nothing of it is held."""
    store, _, _, _, node, password = zones
    redis_client.config_set("proto-max-bulk-len", "1mb")
    try:
        before = redis_client.info("memory")["used_memory_peak"]
        s = socket.create_connection(("127.0.0.1", redis_proc.port))
        auth = [b"AUTH", node.user.encode(), password.encode()]
        s.sendall(b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in auth))
        assert s.recv(10).startswith(b"+OK")
        channel = store.keys.request_channel("zone-blue", node.id).encode()
        s.sendall(b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n" % (len(channel), channel,
                                                                      150 * 2**20))
        sent = 0
        try:
            for _ in range(150):
                s.sendall(b"x" * 2**20)
                sent += 1
        except OSError:
            pass
        s.close()
        assert sent < 150
        assert redis_client.info("memory")["used_memory_peak"] - before < 8 * 2**20
    finally:
        redis_client.config_set("proto-max-bulk-len", "512mb")


def test_revocation_cuts_every_connection_and_leaves_only_the_tombstone(zones, redis_proc):
    store, creds, _, _, node, password = zones
    k = store.keys
    clients = [login(redis_proc, node.user, password) for _ in range(3)]
    subs = []
    for c in clients:
        p = c.pubsub()
        p.subscribe(k.updates("zone-blue"))
        p.get_message(timeout=1)
        subs.append(p)
    cut = []

    def watch(p):
        try:
            while True:
                p.connection.read_response()
        except Exception:  # noqa: BLE001 - the cut
            cut.append(time.monotonic())
    threads = [threading.Thread(target=watch, args=(p,), daemon=True) for p in subs]
    for t in threads:
        t.start()
    removed = creds.registry.remove_node("zone-blue", node.id, "removed by an administrator",
                                         sticky=True)
    start = time.monotonic()
    creds.revoke_node("zone-blue", removed)
    for t in threads:
        t.join(5)
    assert len(cut) == 3 and max(cut) - start < 1.0     # measured: milliseconds
    again = login(redis_proc, node.user, password)
    assert "administrator" in again.get(k.gone("zone-blue", node.id))
    assert refused(lambda: again.hget(k.zone("zone-blue"), "cidr"))
    assert refused(lambda: again.publish(k.request_channel("zone-blue", node.id), "x"))


def test_a_removed_node_cannot_enroll_with_an_older_key(zones, redis_proc):
    store, creds, _, key, node, password = zones
    creds.registry.remove_node("zone-blue", node.id, "removed by an administrator", sticky=True)
    with pytest.raises(Exception, match="was removed from zone zone-blue"):
        store.run(creds.registry.enroll_call("zone-blue", key.key_id, node.key, "0" * 64, "x"))
    with pytest.raises(Exception, match="was removed from zone zone-blue"):
        store.run(creds.registry.enroll_call("zone-blue", "zone", node.key, "0" * 64, "x"))
    newer, _ = creds.registry.create_join_key("zone-blue", store.get_zone("zone-blue").network,
                                              now=time.time() + 1)
    again = store.run(creds.registry.enroll_call("zone-blue", newer.key_id, node.key, "0" * 64, "x"))
    assert again.name == "x" and again.removed is None


def test_join_key_limits(zones):
    store, creds, _, _, _, _ = zones
    net = store.get_zone("zone-blue").network
    once, _ = creds.registry.create_join_key("zone-blue", net)
    keys = [public_key_of(generate_private_key()) for _ in range(2)]
    store.run(creds.registry.enroll_call("zone-blue", once.key_id, keys[0], "0" * 64, "a"))
    with pytest.raises(Exception, match=r"used up \(1 of 1 uses\)"):
        store.run(creds.registry.enroll_call("zone-blue", once.key_id, keys[1], "0" * 64, "b"))
    old, _ = creds.registry.create_join_key("zone-blue", net, expires_in=1, now=time.time() - 10)
    with pytest.raises(Exception, match="expired at"):
        store.run(creds.registry.enroll_call("zone-blue", old.key_id, keys[1], "0" * 64, "b"))
    creds.allow_zone_secret("zone-blue", False)
    with pytest.raises(Exception, match="does not accept its zone secret"):
        store.run(creds.registry.enroll_call("zone-blue", "zone", keys[1], "0" * 64, "b"))


def test_names_are_unique(zones):
    store, creds, _, key, node, _ = zones
    names = [store.run(creds.registry.enroll_call(
        "zone-blue", key.key_id, public_key_of(generate_private_key()), "0" * 64, "laptop")).name
        for _ in range(3)]
    assert [node.name, *names] == ["laptop", "laptop-2", "laptop-3", "laptop-4"]


def test_users_are_reapplied_from_digests(zones, redis_client, redis_proc):
    store, creds, secrets, key, node, password = zones
    for user in redis_client.execute_command("ACL", "USERS"):
        if user.startswith("ct:"):
            redis_client.execute_command("ACL", "DELUSER", user)
    assert creds.sync(store.zone_names()) == 4      # 2 zone secrets, 1 join key, 1 node
    assert login(redis_proc, node.user, password).ping()
    assert login(redis_proc, Keys().join_user("zone-blue", key.key_id), key.secret).ping()
    assert login(redis_proc, Keys().agent_user("zone-red"), secrets["zone-red"]).ping()


def test_an_old_zone_digest_moves_out_of_the_zone_hash(zones, redis_client):
    store, creds, secrets, *_ = zones
    k = store.keys
    redis_client.hdel(k.auth("zone-red"), "zone_secret_sha256")
    redis_client.hset(k.zone("zone-red"), "agent_secret_sha256", "ab" * 32)
    creds.sync(["zone-red"])
    assert redis_client.hget(k.zone("zone-red"), "agent_secret_sha256") is None
    assert redis_client.hget(k.auth("zone-red"), "zone_secret_sha256") == "ab" * 32


def test_rules_have_a_publish_only_selector():
    rules = aclrules.node(Keys(), "z", node_id("k"))
    assert rules[-1].startswith("(+publish resetchannels &ct:{z}:req:")
    assert "+publish" not in rules[:-1] and not any(r.startswith(("~", "%W", "%RW")) for r in rules)


def _users(client, zone: str) -> set[str]:
    return {u for u in client.execute_command("ACL", "USERS") if Keys().user_zone(u) == zone}


def test_a_deleted_zone_keeps_no_user_and_takes_no_secret(zones, redis_client):
    store, creds, secrets, key, node, _ = zones
    assert _users(redis_client, "zone-blue") == {
        node.user, Keys().agent_user("zone-blue"), Keys().join_user("zone-blue", key.key_id)}
    store.delete_zone("zone-blue", force=True)
    creds.delete("zone-blue")
    assert _users(redis_client, "zone-blue") == set()
    with pytest.raises(Exception, match="zone zone-blue does not exist"):
        creds.rotate("zone-blue")
    with pytest.raises(Exception, match="zone zone-blue does not exist"):
        creds.allow_zone_secret("zone-blue", False)
    with pytest.raises(Exception, match="zone zone-blue does not exist"):
        creds.registry.create_join_key("zone-blue", store.get_zone("zone-red").network)
    with pytest.raises(Exception, match="zone zone-blue does not exist"):
        creds.apply_node("zone-blue", node)        # an enrollment that lost the race
    assert redis_client.keys("ct:{zone-blue}:*") == []
    assert _users(redis_client, "zone-blue") == set()


def test_a_deletion_after_the_zone_came_back_keeps_the_new_users(zones, redis_client):
    store, creds, secrets, *_ = zones
    store.delete_zone("zone-red", force=True)
    store.create_zone("zone-red", "172.20.0.0/20")
    creds.set("zone-red", secrets["zone-red"])
    creds.delete("zone-red")                          # the first deletion's late clean-up
    assert _users(redis_client, "zone-red") == {Keys().agent_user("zone-red")}


def test_users_of_zones_that_are_gone_are_removed_at_sync(zones, redis_client):
    store, creds, *_ = zones
    redis_client.execute_command("ACL", "SETUSER", Keys().node_user("gone", "ab" * 12), "on",
                                 ">x")
    redis_client.execute_command("ACL", "SETUSER", Keys().agent_user("gone"), "on", ">x")
    creds.sync(store.zone_names())
    assert _users(redis_client, "gone") == set()
    assert _users(redis_client, "zone-blue")

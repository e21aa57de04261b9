"""Zones created, rotated, changed, given join keys and deleted at once, and a zone deleted
and created again under its name: nothing half-written is left (no hash, no Redis user of a
zone that is gone), no stale settings are used (issue 15, item 3)."""
from __future__ import annotations

import threading
import time

from controltower.worker import RequestWorker
from ipam.store import ZoneStore
from wire.keys import Keys
from wire.proof import generate_private_key, public_key_of


def race(*actions) -> None:
    threads = [threading.Thread(target=action) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def check_consistent(tower, redis_client, name: str) -> None:
    """The zone is wholly there (listed, shown, its leases) or wholly gone (404, no key and
    no Redis user of it, and a new POST of its name works and starts with no join key), and
    its zone secret's user exists exactly when it does."""
    status, _ = tower.request("GET", f"/zones/{name}")
    listed = name in [z["Name"] for z in tower.request("GET", "/zones")[1]]
    leases = tower.request("GET", f"/ipam/leases/{name}")[0]
    users = {u for u in redis_client.execute_command("ACL", "USERS")
             if Keys().user_zone(u.decode() if isinstance(u, bytes) else u) == name}
    if status == 200:
        assert listed and leases == 200 and Keys().agent_user(name) in users, name
    else:
        assert status == 404 and not listed and leases == 404 and not users, (name, status)
        assert not redis_client.keys(Keys().zone_pattern(name)), name
        assert tower.request("POST", "/zones", {"Name": name, "CIDR": "10.9.0.0/24"})[0] == 201
        assert tower.request("GET", f"/zones/{name}/join-keys")[1] == []
        tower.request("DELETE", f"/zones/{name}?force=true")


def test_creation_racing_deletion_leaves_no_orphan(module_tower, module_redis):
    client = module_redis.client()
    for round_ in range(60):
        name = f"race-c{round_}"
        race(lambda: module_tower.request("POST", "/zones", {"Name": name, "CIDR": "10.9.0.0/24"}),
             lambda: module_tower.request("DELETE", f"/zones/{name}?force=true"))
        check_consistent(module_tower, client, name)
    assert "Traceback" not in module_tower.log_text()


def test_rotation_racing_deletion_leaves_no_orphan(module_tower, module_redis):
    client = module_redis.client()
    for round_ in range(30):
        name = f"race-r{round_}"
        assert module_tower.request("POST", "/zones", {"Name": name, "CIDR": "10.9.0.0/24"})[0] == 201
        race(lambda: module_tower.request("POST", f"/zones/{name}/rotate-secret"),
             lambda: module_tower.request("DELETE", f"/zones/{name}?force=true"))
        check_consistent(module_tower, client, name)


def test_changes_racing_deletion_leave_no_orphan(module_tower, module_redis):
    """Join keys made and settings changed while the zone is deleted."""
    client = module_redis.client()
    for round_ in range(30):
        name = f"race-j{round_}"
        assert module_tower.request("POST", "/zones", {"Name": name, "CIDR": "10.9.0.0/24"})[0] == 201
        race(lambda: module_tower.request("POST", f"/zones/{name}/join-keys", {"Reusable": True}),
             lambda: module_tower.request("PATCH", f"/zones/{name}",
                                          {"ZoneSecret": round_ % 2 == 0,
                                           "AutoApprove": ["192.168.0.0/16"]}),
             lambda: module_tower.request("DELETE", f"/zones/{name}?force=true"))
        check_consistent(module_tower, client, name)
    assert "Traceback" not in module_tower.log_text()


def test_concurrent_rotations_leave_the_user_with_the_stored_secret(module_tower, module_redis):
    client = module_redis.client()
    assert module_tower.request("POST", "/zones", {"Name": "race-rot", "CIDR": "10.9.0.0/24"})[0] == 201
    answers = []
    race(*[lambda: answers.append(module_tower.request("POST", "/zones/race-rot/rotate-secret"))
           for _ in range(6)])
    import redis
    working = []
    for status, body in answers:
        assert status == 200
        try:
            redis.Redis(port=module_redis.port, username=Keys().agent_user("race-rot"),
                        password=body["AgentSecret"]).ping()
            working.append(body["AgentSecret"])
        except redis.exceptions.AuthenticationError:
            pass
    assert len(working) == 1          # the last rotation's secret, and that one only


def test_a_zone_hash_left_half_written_is_no_zone(module_tower, module_redis):
    """What old races left behind (a zone hash holding one field, a join key of a zone
    that is gone) heals: the zone is absent, and created anew without them."""
    client = module_redis.client()
    client.hset(Keys().zone("race-old"), "agent_secret_sha256", "0" * 64)
    client.hset(Keys().joinkeys("race-old"), "0123456789ab", '{"sha256": "00"}')
    assert module_tower.request("GET", "/zones/race-old")[0] == 404
    assert module_tower.request("GET", "/ipam/leases/race-old")[0] == 404
    assert module_tower.request("POST", "/zones", {"Name": "race-old", "CIDR": "10.9.0.0/24"})[0] == 201
    assert module_tower.request("GET", "/zones/race-old")[1]["IpCidr"] == "10.9.0.0/24"
    assert module_tower.request("GET", "/zones/race-old/join-keys")[1] == []


def test_a_zone_created_again_is_not_served_from_old_settings(redis_client):
    """The worker (or any store) that knew a zone before it was deleted and created again
    with another CIDR gives new nodes addresses of the new CIDR."""
    api, other = ZoneStore(redis_client), ZoneStore(redis_client)
    api.create_zone("z", "10.1.0.0/24")
    worker = RequestWorker(other)
    worker._refresh_zones()
    other.register("z", public_key_of(generate_private_key()), listen_port=1, session="a")
    api.delete_zone("z", force=True)
    time.sleep(0.01)
    api.create_zone("z", "192.168.77.0/24")
    got = other.register("z", public_key_of(generate_private_key()), listen_port=1, session="b")
    assert got.address == "192.168.77.1" and got.cidr == "192.168.77.0/24"
    stale = worker._zone("z")                         # the worker's settings before a refresh
    call = other.register_call(stale, public_key_of(generate_private_key()), listen_port=1,
                               session="c")
    assert other.run(call).cidr == "192.168.77.0/24"
    worker._refresh_zones()
    assert worker._zone("z").cidr == "192.168.77.0/24"

"""The adaptive publish window: the pure rule, then the real worker on a real redis-server.

The worker runs on a clock the test steps by hand, so what is published when is decided
by the counts of steps, not by how fast this machine is.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest

from controltower.worker import PublishWindow, RequestWorker
from ipam.store import ZoneStore
from wire.messages import Request
from wire.proof import generate_private_key, public_key_of

BASE, MAXIMUM = 0.02, 0.25
BODY = {"listen_port": 51820, "endpoint": "203.0.113.7:51820"}


# -- the rule ------------------------------------------------------------------------------

def test_a_quiet_zone_keeps_the_base_window():
    window = PublishWindow(BASE, MAXIMUM)
    assert window.window == BASE
    for gap in (BASE, 1.0, 3600.0, float("inf")):
        assert window.changed(gap) == BASE


def test_a_busy_zone_doubles_its_window_up_to_the_maximum():
    window = PublishWindow(BASE, MAXIMUM)
    grown = [window.changed(0.001) for _ in range(7)]
    assert grown == [BASE, 0.04, 0.08, 0.16, MAXIMUM, MAXIMUM, MAXIMUM]


def test_the_first_quiet_change_goes_back_to_the_base_window():
    window = PublishWindow(BASE, MAXIMUM)
    for _ in range(5):
        window.changed(0.0)
    assert window.window == MAXIMUM
    assert window.changed(BASE) == BASE        # the zone was quiet for a whole base window
    assert [window.changed(BASE / 2) for _ in range(2)] == [BASE, 2 * BASE]


def test_a_maximum_at_or_below_the_base_keeps_the_window_fixed():
    for maximum in (BASE, BASE / 2, 0.0):
        window = PublishWindow(BASE, maximum)
        assert [window.changed(0.0) for _ in range(3)] == [BASE] * 3


def test_a_zero_base_window_publishes_every_change_at_once():
    window = PublishWindow(0.0, MAXIMUM)
    assert [window.changed(0.0) for _ in range(3)] == [0.0] * 3


# -- the worker ------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1e6

    def __call__(self) -> float:
        return self.now


class Zone:
    """A worker with its own clock, stepped by hand, and a subscriber of the zone."""

    def __init__(self, redis_client, maximum: float) -> None:
        self.redis = redis_client
        self.store = ZoneStore(redis_client, expiry=3600)
        self.store.ensure_default_zone()
        self.clock = Clock()
        self.worker = RequestWorker(self.store, publish_window=BASE,
                                    publish_window_max=maximum, zone_refresh=3600,
                                    clock=self.clock)
        self.listener = redis_client.pubsub(ignore_subscribe_messages=True)
        self.listener.subscribe(self.store.keys.updates("default"))
        # Loaded once: every step has requests to read or changes due, so never waits.
        self.worker._refresh_zones()

    def register(self, count: int) -> list[str]:
        keys = []
        with self.redis.pipeline(transaction=False) as pipe:
            for _ in range(count):
                private = generate_private_key()
                key = public_key_of(private)
                request = Request("register", "default", key, BODY, session=uuid.uuid4().hex)
                pipe.xadd(self.store.keys.requests("default"),
                          request.signed(private, self.worker.tower_public))
                keys.append(key)
            pipe.execute()
        return keys

    def step(self, seconds: float) -> None:
        """One worker step (it reads what was queued), then the clock moves on."""
        self.worker.step()
        self.clock.now += seconds

    def updates(self) -> list[dict]:
        """The updates published so far, in order (they are on the socket already)."""
        out = []
        quiet_until = time.monotonic() + 0.3
        while time.monotonic() < quiet_until:
            msg = self.listener.get_message(timeout=0.05)
            if msg is not None:
                out.append(json.loads(msg["data"]))
                quiet_until = time.monotonic() + 0.3
        return out

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def zone_of(redis_client):
    made = []

    def make(maximum: float) -> Zone:
        redis_client.flushall()
        made.append(Zone(redis_client, maximum))
        return made[-1]
    yield make
    for zone in made:
        zone.close()


def burst(zone: Zone, rounds: int = 40) -> list[dict]:
    """Registrations arriving 5 ms apart for 200 ms, then quiet until all is published."""
    for _ in range(rounds):
        zone.register(2)
        zone.step(0.005)
    for _ in range(3):
        if zone.worker._dirty:
            zone.step(MAXIMUM)
    assert not zone.worker._dirty
    return zone.updates()


def changed_keys(updates: list[dict]) -> list[str]:
    return [c["peer"]["key"] for u in updates for c in u["changes"]]


def test_a_burst_goes_out_in_fewer_messages_than_with_a_fixed_window(zone_of):
    fixed = burst(zone_of(BASE))
    adaptive = burst(zone_of(MAXIMUM))
    assert len(changed_keys(fixed)) == len(changed_keys(adaptive)) == 80
    # Fixed: one message per 20 ms of the 200 ms burst; adaptive: at once, then after
    # 20, 40, 80 and 160 ms.
    assert len(fixed) >= 10
    assert len(adaptive) <= 5 < len(fixed)
    revs = [c["rev"] for u in adaptive for c in u["changes"]]
    assert revs == sorted(revs) == list(range(revs[0], revs[0] + 80))


def test_a_lone_change_after_a_burst_is_published_at_once(zone_of):
    zone = zone_of(MAXIMUM)
    burst(zone)
    assert zone.worker._windows["default"].window > BASE
    zone.clock.now += 1.0                   # the zone stays quiet a while
    [key] = zone.register(1)
    zone.step(0.0)                          # the step that handles it also publishes it
    assert not zone.worker._dirty
    assert changed_keys(zone.updates()) == [key]
    assert zone.worker._windows["default"].window == BASE


def test_a_change_soon_after_a_lone_one_waits_the_base_window(zone_of):
    zone = zone_of(MAXIMUM)
    [first] = zone.register(1)
    zone.step(0.005)
    [second] = zone.register(1)
    zone.step(BASE - 0.005)                 # 5 ms after the first publication: held
    assert changed_keys(zone.updates()) == [first]
    assert zone.worker._windows["default"].window == BASE
    zone.step(0.0)                          # 20 ms after it: published
    assert changed_keys(zone.updates()) == [second]

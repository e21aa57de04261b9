"""The adaptive publish window: the pure rule, then the real worker on a real redis-server.

The worker runs on a clock the test steps by hand, so what is published when is decided
by the counts of steps, not by how fast this machine is.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest

from controltower.acl import AgentCredentials
from controltower.publisher import Publisher, PublishWindow
from ipam.calls import Call
from controltower.worker import RequestWorker
from ipam.store import ZoneStore
from wire.messages import Request
from wire.proof import generate_private_key, public_key_of

BASE, MAXIMUM = 0.02, 0.25
BODY = {"listen_port": 51820, "endpoint": "203.0.113.7:51820"}


# -- the rule ------------------------------------------------------------------------------

def publications(window: PublishWindow, gaps: list[float], changes: int = 1) -> list[float]:
    """The window of each publication, its first change ``gap`` after the one before."""
    out = []
    for gap in gaps:
        out.append(window.changed(gap, changes))
        window.published()
    return out


def test_a_quiet_zone_keeps_the_base_window():
    window = PublishWindow(BASE, MAXIMUM)
    assert window.window == BASE
    assert publications(window, [float("inf"), BASE, 1.0, 3600.0]) == [BASE] * 4


def test_a_zone_changing_within_the_base_window_doubles_it_up_to_the_maximum():
    window = PublishWindow(BASE, MAXIMUM)
    assert publications(window, [0.001] * 7) == [BASE, 0.04, 0.08, 0.16, MAXIMUM, MAXIMUM,
                                                 MAXIMUM]


def test_publications_of_several_changes_keep_the_zone_busy_between_them():
    window = PublishWindow(BASE, MAXIMUM)
    # Bursts 50 ms apart: each publication carried a burst, so the next one is busy.
    assert publications(window, [float("inf")] + [0.05] * 5, changes=8) == [
        BASE, BASE, 0.04, 0.08, 0.16, MAXIMUM]


def test_only_the_first_change_after_a_publication_decides():
    window = PublishWindow(BASE, MAXIMUM)
    window.changed(0.001)
    assert window.changed(10.0) == window.changed(10.0, 5) == BASE
    window.published()
    assert window.carried == 7
    assert window.changed(0.1) == 2 * BASE  # busy: 100 ms after a publication of 7
    assert window.busy == 2


def test_the_zone_is_quiet_again_after_lone_changes_or_a_long_pause():
    window = PublishWindow(BASE, MAXIMUM)
    publications(window, [0.0] * 5, changes=3)
    assert window.window == MAXIMUM
    assert publications(window, [MAXIMUM], changes=3) == [BASE]   # quiet for a max window
    publications(window, [0.0] * 5, changes=1)
    assert window.window == MAXIMUM
    # A lone change 100 ms after a publication of one change: quiet.
    assert publications(window, [0.1]) == [BASE]
    assert publications(window, [BASE / 2] * 2) == [BASE, 2 * BASE]


def test_a_maximum_at_or_below_the_base_keeps_the_window_fixed():
    for maximum in (BASE, BASE / 2, 0.0):
        window = PublishWindow(BASE, maximum)
        assert publications(window, [0.0] * 3, changes=5) == [BASE] * 3


def test_a_zero_base_window_publishes_every_change_at_once():
    window = PublishWindow(0.0, MAXIMUM)
    assert publications(window, [0.0] * 3) == [0.0] * 3


# -- the publications under way (pure: no Redis) --------------------------------------------

class Reads:
    """Stands in for the store: each flush_call is a distinct read Call."""

    def __init__(self) -> None:
        self.made: list[Call] = []

    def flush_call(self, zone: str) -> Call:
        self.made.append(Call((("READ", zone, len(self.made)),), lambda replies: 0))
        return self.made[-1]


def publisher(base: float = BASE) -> tuple[Publisher, Clock, list[float]]:
    clock, observed = Clock(), []
    return Publisher(Reads(), base, MAXIMUM, clock, observed.append), clock, observed


def test_a_publication_reads_when_due_then_takes_the_steps_it_is_given():
    pub, clock, observed = publisher()
    assert pub.calls() == [] and pub.wait() is None
    pub.changed("z")
    [read] = pub.calls()
    assert (read.zone, read.call) == ("z", pub.store.made[0])
    assert pub.wait() is None                 # the step is the caller's until settled
    publish = Call((("PUBLISH",),), lambda replies: 1)
    pub.settled([read], [publish])
    assert pub.wait() == 0.0 and pub.unpublished()
    clock.now += 0.003
    [step] = pub.calls()
    assert step.call is publish
    pub.settled([step], [1])
    assert not pub.unpublished() and observed == [pytest.approx(0.003)]


def test_a_zone_due_again_reads_after_its_publication_under_way_and_supersedes_it():
    pub, clock, observed = publisher(base=0.0)
    pub.changed("z")
    [read] = pub.calls()
    pub.settled([read], [Call((("PUBLISH", 1),), lambda replies: 1)])
    pub.changed("z")
    publish, read_again = pub.calls()
    assert publish.call.commands == (("PUBLISH", 1),) and read_again.call.commands[0][0] == "READ"
    # The publication was overtaken ('moved': read again); the read after it already did.
    pub.settled([publish, read_again], [Call((("READ", "z", "again"),), lambda r: 0),
                                        Call((("PUBLISH", 2),), lambda r: 2)])
    [step] = pub.calls()
    assert step.call.commands == (("PUBLISH", 2),) and step.changed_at == read.changed_at
    pub.settled([step], [RuntimeError("boom")])         # logged; tried at the next change
    assert not pub.unpublished() and observed == []


def test_a_publication_that_found_nothing_leaves_the_window_as_it_was():
    pub, clock, observed = publisher()
    pub.changed("z")
    [read] = pub.calls()
    pub.settled([read], [Call((("PUBLISH",),), lambda replies: 1)])
    [step] = pub.calls()
    pub.settled([step], [1])                  # published at 1e6
    clock.now += 0.5
    pub.changed("z")                          # a request that changes the zone a step later
    [empty] = pub.calls()
    pub.settled([empty], [0])                 # its read came first: nothing to publish
    assert not pub.unpublished()
    clock.now += 0.005
    pub.changed("z")                          # its change: the zone has been quiet 0.5 s
    assert pub.wait() == 0.0 and pub.windows["z"].window == BASE
    [read] = pub.calls()
    assert read.call.commands[0][0] == "READ"
    # A busy zone's window, too, is as it was before a read that found nothing.
    pub.settled([read], [Call((("PUBLISH",),), lambda replies: 1)])
    [step] = pub.calls()
    pub.settled([step], [1])
    clock.now += 0.005
    pub.changed("z", 3)                       # 5 ms after a publication: busy
    window = pub.windows["z"]
    assert window.busy == 1 and pub.wait() == pytest.approx(BASE - 0.005)
    clock.now += BASE
    [empty] = pub.calls()
    assert (window.carried, window.busy) == (3, 1)
    pub.settled([empty], [0])
    assert (window.carried, window.busy) == (1, 1)


# -- the worker ------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1e6

    def __call__(self) -> float:
        return self.now


class Zone:
    """A worker with its own clock, stepped by hand, and a subscriber of the zone."""

    def __init__(self, redis_client, maximum: float, identities: bool = False) -> None:
        self.redis = redis_client
        self.store = ZoneStore(redis_client, expiry=3600)
        self.store.ensure_default_zone()
        self.clock = Clock()
        # ``identities``: a tower that manages identities (its register takes two steps).
        credentials = AgentCredentials(redis_client, self.store.keys) if identities else None
        self.worker = RequestWorker(self.store, publish_window=BASE,
                                    publish_window_max=maximum, zone_refresh=3600,
                                    clock=self.clock, credentials=credentials)
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

    def make(maximum: float, identities: bool = False) -> Zone:
        redis_client.flushall()
        made.append(Zone(redis_client, maximum, identities))
        return made[-1]
    yield make
    for zone in made:
        zone.close()


def arrivals(zone: Zone, rounds: int, per_round: int, gap: float) -> list[dict]:
    """``per_round`` registrations every ``gap`` seconds, then quiet until all is published."""
    for _ in range(rounds):
        zone.register(per_round)
        zone.step(gap)
    for _ in range(3):
        if zone.worker.publisher.unpublished():
            zone.step(MAXIMUM)
    assert not zone.worker.publisher.unpublished()
    return zone.updates()


def burst(zone: Zone, rounds: int = 40) -> list[dict]:
    """Registrations arriving 5 ms apart for 200 ms."""
    return arrivals(zone, rounds, 2, 0.005)


def bursts(zone: Zone, rounds: int = 10) -> list[dict]:
    """Four registrations every 50 ms (a worker keeping up with slow clients)."""
    return arrivals(zone, rounds, 4, 0.05)


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


def test_bursts_go_out_in_fewer_messages_than_with_a_fixed_window(zone_of):
    fixed = bursts(zone_of(BASE))
    adaptive = bursts(zone_of(MAXIMUM))
    assert len(changed_keys(fixed)) == len(changed_keys(adaptive)) == 40
    assert [len(u["changes"]) for u in fixed] == [4] * 10
    assert len(adaptive) <= 6


def test_a_lone_change_after_a_burst_is_published_at_once(zone_of):
    zone = zone_of(MAXIMUM)
    burst(zone)
    assert zone.worker.publisher.windows["default"].window > BASE
    zone.clock.now += 1.0                   # the zone stays quiet a while
    [key] = zone.register(1)
    zone.step(0.0)                          # the step that handles it also publishes it
    assert not zone.worker.publisher.unpublished()
    assert changed_keys(zone.updates()) == [key]
    assert zone.worker.publisher.windows["default"].window == BASE


@pytest.mark.parametrize("identities", [False, True])
def test_a_lone_join_is_published_by_the_step_that_handles_it(zone_of, identities):
    zone = zone_of(MAXIMUM, identities)
    for _ in range(3):                      # joins 0.3 s apart, as in bench join
        [key] = zone.register(1)
        zone.step(0.0)
        assert not zone.worker.publisher.unpublished()
        assert changed_keys(zone.updates()) == [key]
        zone.clock.now += 0.3


def test_a_change_soon_after_a_lone_one_waits_the_base_window(zone_of):
    zone = zone_of(MAXIMUM)
    [first] = zone.register(1)
    zone.step(0.005)
    [second] = zone.register(1)
    zone.step(BASE - 0.005)                 # 5 ms after the first publication: held
    assert changed_keys(zone.updates()) == [first]
    assert zone.worker.publisher.windows["default"].window == BASE
    zone.step(0.0)                          # 20 ms after it: published
    assert changed_keys(zone.updates()) == [second]

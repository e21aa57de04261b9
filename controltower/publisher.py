"""When each zone's changes are published, and the publication under way of each zone.

A zone's changes are published once its publish window has elapsed (``PublishWindow``,
adaptive). A publication takes two steps, each riding on a pipeline the request worker
sends anyway: the read of the zone's unpublished changes, then their publication, built
in Python and published only if nothing was published since the read (see
``ZoneStore.flush_call``). ``Publisher`` does no I/O: it hands the worker the step each
zone is due for (``calls``) and takes each step's outcome (``settled``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ipam.calls import Call
from ipam.store import ZoneStore

log = logging.getLogger(__name__)


@dataclass
class PublishWindow:
    """How long a zone's changes wait for others before they are published together.

    A quiet zone uses the ``base`` window: a change is published as soon as the zone's
    last publication is ``base`` old (at once, in a zone quiet for that long). The zone
    is busy when its first change after a publication comes less than ``base`` after it,
    or less than ``maximum`` after a publication that carried several changes; each
    publication in a row that finds it busy doubles the window (``base``, 2x, 4x...) up
    to ``maximum``, so a storm goes out in a few large messages instead of one per
    ``base`` (every subscriber pays per message). Otherwise the zone is quiet: back to
    ``base``. ``maximum`` <= ``base`` keeps the window fixed.
    """
    base: float
    maximum: float
    busy: int = 0         # publications in a row that found the zone busy
    pending: int = 0      # changes waiting for the next publication
    carried: int = 0      # changes the last publication carried

    @property
    def window(self) -> float:
        if not self.busy:
            return self.base
        return max(self.base, min(self.base * 2 ** (self.busy - 1), self.maximum))

    def changed(self, since_publication: float, count: int = 1) -> float:
        """``count`` changes, ``since_publication`` seconds after the zone's last
        publication: returns the window the zone waits now."""
        if not self.pending:
            busy = since_publication < self.base or (
                self.carried > 1 and since_publication < self.maximum)
            self.busy = min(self.busy + 1, 64) if busy else 0
        self.pending += count
        return self.window

    def published(self) -> None:
        self.carried, self.pending = self.pending, 0


@dataclass(frozen=True)
class Step:
    """One step of a zone's publication, sent in a pipeline: the read of the zone's
    unpublished changes, or their publication (ipam/store.py ``flush_call``)."""
    zone: str
    call: Call
    changed_at: float       # when the first change it carries came
    # The zone's window before this publication started (its last start, and the
    # window's ``carried`` and ``busy``): put back when the publication found nothing.
    before: tuple[float | None, int, int] | None = None


class Publisher:
    def __init__(self, store: ZoneStore, base: float, maximum: float,
                 clock: Callable[[], float], observe: Callable[[float], None]) -> None:
        self.store = store
        self.base = base
        self.maximum = maximum
        self.clock = clock
        self.observe = observe          # publish latency: first change -> published
        self.dirty: dict[str, float] = {}     # zone -> time of its first unpublished change
        self.windows: dict[str, PublishWindow] = {}
        self.next: dict[str, Step] = {}       # zone -> the next step of its publication
        self._started: dict[str, float] = {}  # zone -> when its last publication started

    def changed(self, zone: str, count: int = 1) -> None:
        """``count``: requests (or expiries) that may have changed the zone."""
        now = self.clock()
        self.dirty.setdefault(zone, now)
        window = self.windows.get(zone)
        if window is None:
            window = self.windows[zone] = PublishWindow(self.base, self.maximum)
        last = self._started.get(zone)
        window.changed(now - last if last is not None else float("inf"), count)

    def due_at(self, zone: str) -> float:
        """When the changes of a dirty zone are due for publication."""
        last = self._started.get(zone)
        return -float("inf") if last is None else last + self.windows[zone].window

    def wait(self) -> float | None:
        """Seconds until a step is due (0: now), None when nothing waits."""
        if self.next:
            return 0.0
        if not self.dirty:
            return None
        return max(0.0, min(self.due_at(z) for z in self.dirty) - self.clock())

    def unpublished(self) -> bool:
        """Changes wait for their publication, or one is under way."""
        return bool(self.dirty or self.next)

    def calls(self, start: bool = True) -> list[Step]:
        """The steps for the next pipeline, which the caller queues after that
        pipeline's own changes: the next step of each publication under way, then
        (``start``) the first step, a read, of each zone whose window has elapsed. A
        zone may have both: its read comes after its publication, so it reads what is
        left."""
        now = self.clock()
        steps = list(self.next.values())
        self.next = {}
        for zone in [z for z in self.dirty if start and now >= self.due_at(z)]:
            window = self.windows[zone]
            before = (self._started.get(zone), window.carried, window.busy)
            steps.append(Step(zone, self.store.flush_call(zone), self.dirty.pop(zone), before))
            self._started[zone] = now
            window.published()
        return steps

    def settled(self, steps: list[Step], outcomes: list[Any]) -> None:
        """The outcomes of the steps ``calls`` gave, in order: a next step, the number of
        messages published (that publication is over), or the exception that failed it
        (tried again at the zone's next change). When a zone had two steps, the second
        (a read after the first) supersedes any next step of the first."""
        now = self.clock()
        for step, outcome in zip(steps, outcomes):
            if isinstance(outcome, Call):
                earlier = self.next.get(step.zone)
                since = step.changed_at if earlier is None else min(earlier.changed_at,
                                                                     step.changed_at)
                self.next[step.zone] = Step(step.zone, outcome, since, step.before)
                continue
            self.next.pop(step.zone, None)
            if isinstance(outcome, Exception):
                log.error("publishing the changes of zone %s failed (tried again at the "
                          "next change): %s", step.zone, outcome)
            elif outcome:
                self.observe(now - step.changed_at)
            elif step.before is not None and step.zone not in self.next:
                self._found_nothing(step.zone, step.before)

    def _found_nothing(self, zone: str, before: tuple[float | None, int, int]) -> None:
        """A publication that found nothing to publish is none: the zone's window is put
        back as it was. (A request whose change comes a step later, such as the
        register of a tower that manages identities, which reads the node's record
        first, counted as a change already; without this the change would wait a whole
        window, and an idle worker's wait for it is Redis's blocking-read timeout, up
        to 100 ms late at Redis's default ``hz``.)"""
        started, carried, busy = before
        if started is None:
            self._started.pop(zone, None)
        else:
            self._started[zone] = started
        window = self.windows[zone]
        window.carried, window.busy = carried, busy

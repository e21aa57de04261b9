"""wire.logs.Throttle: lines remote input can trigger cost a few lines and a summary."""
from __future__ import annotations

import logging

from wire.logs import Throttle


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_one_summary_per_window(caplog):
    caplog.set_level(logging.INFO)
    clock = Clock()
    throttle = Throttle(logging.getLogger("t"), burst=3, interval=10.0, clock=clock)
    logged = [throttle.log(logging.WARNING, "junk", "junk %d", n, summary="junk lines")
              for n in range(1000)]
    assert logged.count(True) == 3
    assert [r.getMessage() for r in caplog.records] == ["junk 0", "junk 1", "junk 2"]
    clock.now = 10.5
    throttle.tick()
    assert caplog.records[-1].getMessage() == "... and 997 more junk lines in the last 10 s"
    assert caplog.records[-1].levelno == logging.WARNING
    throttle.log(logging.WARNING, "junk", "junk again", summary="junk lines")
    assert caplog.records[-1].getMessage() == "junk again"


def test_kinds_are_counted_apart(caplog):
    caplog.set_level(logging.INFO)
    throttle = Throttle(logging.getLogger("t"), burst=1, interval=10.0, clock=Clock())
    for kind in ("a", "b", "a", "b"):
        throttle.log(logging.INFO, kind, kind, summary=kind)
    assert [r.getMessage() for r in caplog.records] == ["a", "b"]
    throttle.flush()
    assert sorted(r.getMessage() for r in caplog.records[2:]) == [
        "... and 1 more a in the last 0 s", "... and 1 more b in the last 0 s"]

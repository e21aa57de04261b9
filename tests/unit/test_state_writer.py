"""The agent's state-file writer: a change is written within the interval, writes are at
least the interval apart, an urgent change is written at once, and no task or timer is
made per change."""
from __future__ import annotations

import asyncio
import time

from aircrew.statewriter import StateWriter
from tests.looptimers import timers_armed


class Files:
    directory = "/nonexistent"

    def __init__(self) -> None:
        self.writes: list[tuple[float, int]] = []


class State:
    """What ``capture`` returns: writing it notes (when, which version) in the files."""

    def __init__(self, version: int) -> None:
        self.version = version

    def write(self, files: Files) -> None:
        files.writes.append((time.monotonic(), self.version))


class Source:
    def __init__(self) -> None:
        self.version = 0

    def capture(self) -> State:
        return State(self.version)


def writer_for(interval: float) -> tuple[StateWriter, Files, Source]:
    files, source = Files(), Source()
    return StateWriter(files, source.capture, interval), files, source  # type: ignore[arg-type]


def test_changes_are_written_within_the_interval_and_at_least_it_apart():
    interval = 0.2

    async def scenario():
        writer, files, source = writer_for(interval)
        task = asyncio.create_task(writer.run())
        changes = []
        for n in range(1, 16):           # a change every 50 ms for 0.75 s
            source.version = n
            changes.append((time.monotonic(), n))
            writer.changed()
            await asyncio.sleep(0.05)
        await asyncio.sleep(interval * 3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        writer.thread.shutdown()
        return files.writes, changes
    writes, changes = asyncio.run(scenario())
    assert 2 <= len(writes) <= 6, writes
    gaps = [b[0] - a[0] for a, b in zip(writes, writes[1:])]
    assert all(gap >= interval * 0.95 for gap in gaps), gaps
    assert writes[-1][1] == 15                      # the last change was written
    for at, version in changes:                     # each change written soon after it
        written = next(t for t, v in writes if v >= version)
        assert written - at <= interval * 5, (version, written - at)


def test_an_urgent_change_is_written_at_once():
    async def scenario():
        writer, files, source = writer_for(30.0)
        task = asyncio.create_task(writer.run())
        writer.changed()
        await asyncio.sleep(0.05)           # the first write after idle: at once
        source.version = 1
        writer.changed()                    # not urgent: waits for the 30 s interval
        await asyncio.sleep(0.05)
        count_before_urgent = len(files.writes)
        source.version = 2
        writer.changed(urgent=True)
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        writer.thread.shutdown()
        return files.writes, count_before_urgent
    writes, before = asyncio.run(scenario())
    assert before == 1
    assert [v for _, v in writes] == [0, 2]


def test_nothing_is_written_before_run_and_save_writes_what_is_left():
    async def scenario():
        writer, files, source = writer_for(0.01)
        writer.changed()
        await asyncio.sleep(0.05)
        unwritten = len(files.writes)
        assert writer.dirty
        source.version = 7
        await writer.save()
        writer.thread.shutdown()
        return unwritten, files.writes, writer.dirty
    unwritten, writes, dirty = asyncio.run(scenario())
    assert unwritten == 0
    assert [v for _, v in writes] == [7] and not dirty


def test_a_burst_of_changes_arms_one_timer():
    async def scenario():
        writer, files, source = writer_for(30.0)
        task = asyncio.create_task(writer.run())
        writer.changed()
        await asyncio.sleep(0.05)                   # written at once; the next is 30 s away
        loop = asyncio.get_running_loop()
        armed = timers_armed(loop)
        for n in range(100):
            source.version = n
            writer.changed()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        writer.thread.shutdown()
        return armed, files.writes
    armed, writes = asyncio.run(scenario())
    assert len(armed) == 1 and len(writes) == 1

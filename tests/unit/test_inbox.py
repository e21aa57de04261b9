"""The agent's inbox of zone updates: order, waits that end on an item, a wake-up or the
deadline, and one timer for many waits."""
from __future__ import annotations

import asyncio

import pytest

from aircrew.inbox import Inbox
from tests.looptimers import timers_armed


def run(coro):
    return asyncio.run(coro)


def test_items_come_out_in_order():
    inbox: Inbox[int] = Inbox()
    for n in range(5):
        inbox.put_nowait(n)
    assert inbox.qsize() == 5 and not inbox.empty()
    assert [inbox.get_nowait() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert inbox.empty()
    with pytest.raises(asyncio.QueueEmpty):
        inbox.get_nowait()


def test_a_wait_ends_when_an_item_arrives_before_the_deadline():
    async def scenario():
        inbox: Inbox[str] = Inbox()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, inbox.put_nowait, "update")
        started = loop.time()
        await inbox.wait(started + 30)
        return loop.time() - started, inbox.get_nowait()
    waited, item = run(scenario())
    assert item == "update"
    assert waited < 5          # long before the 30 s deadline


def test_a_wait_ends_at_the_deadline_without_an_item():
    async def scenario():
        inbox: Inbox[str] = Inbox()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await inbox.wait(started + 0.1)
        return loop.time() - started, inbox.empty()
    waited, empty = run(scenario())
    assert empty
    assert 0.09 <= waited < 2


def test_wake_ends_a_wait_at_once():
    async def scenario():
        inbox: Inbox[str] = Inbox()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, inbox.wake)
        started = loop.time()
        await inbox.wait(started + 30)
        return loop.time() - started
    assert run(scenario()) < 5


def test_many_waits_for_one_deadline_arm_one_timer():
    """An update per wait must not cost a timer per wait: the timer armed for the
    deadline stays while items come and go; only an earlier deadline replaces it."""
    async def scenario():
        inbox: Inbox[int] = Inbox()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        armed = timers_armed(loop)
        for n in range(50):
            loop.call_soon(inbox.put_nowait, n)
            await inbox.wait(deadline)
            assert inbox.get_nowait() == n
        assert armed == [deadline]
        loop.call_soon(inbox.put_nowait, 50)
        await inbox.wait(deadline - 10)          # an earlier deadline: a new timer
        assert armed == [deadline, deadline - 10]
        inbox.close()
    run(scenario())


def test_get_waits_for_an_item():
    async def scenario():
        inbox: Inbox[str] = Inbox()
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, inbox.wake)         # a wake-up alone does not end get()
        loop.call_later(0.05, inbox.put_nowait, "late")
        return await asyncio.wait_for(inbox.get(), 5)
    assert run(scenario()) == "late"

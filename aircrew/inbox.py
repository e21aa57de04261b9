"""The zone updates a session received and the agent has not applied yet, in order.

The agent's follow loop waits for the next update or its next periodic task (heartbeat,
revision check, ...), whichever comes first. ``Inbox.wait`` does that without a timer
per wait: one timer stays armed for the deadline, however many updates arrive before
it; it is replaced only when a wait asks for an earlier deadline. ``wake`` ends a wait
at once (the connection was lost, the agent is stopping).
"""
from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Inbox(Generic[T]):
    """A FIFO of items for one consumer, which waits with ``wait``."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        self._wake()

    def get_nowait(self) -> T:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> T:
        """The next item, waiting as long as it takes (as ``asyncio.Queue.get``)."""
        while not self._items:
            await self.wait(math.inf)
        return self._items.popleft()

    def wake(self) -> None:
        """End the current wait (if any) without an item."""
        self._wake()

    async def wait(self, deadline: float) -> None:
        """Return when an item is waiting, ``wake`` was called or the event loop's clock
        (``loop.time()``) reaches ``deadline``, whichever comes first. It may return
        earlier than the deadline without an item: the caller checks what is due."""
        if self._items:
            return
        loop = asyncio.get_running_loop()
        if deadline <= loop.time():
            return
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._expired) if deadline < math.inf else None
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        """Cancel the armed timer (the consumer is done)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()

    def _expired(self) -> None:
        self._timer = None
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

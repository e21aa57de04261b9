"""Timers an asyncio loop arms: the unit tests of the agent's inbox and state writer
check that many changes or waits cost one timer, not one each."""
from __future__ import annotations

import asyncio
from typing import Any, Callable


def timers_armed(loop: asyncio.AbstractEventLoop) -> list[float]:
    """From now on, the deadline of every timer ``loop`` arms is appended to the list
    returned (``call_later`` arms through ``call_at`` too)."""
    armed: list[float] = []
    real_call_at = loop.call_at

    def counting_call_at(when: float, callback: Callable[..., Any], *args: Any,
                         **kwargs: Any) -> asyncio.TimerHandle:
        armed.append(when)
        return real_call_at(when, callback, *args, **kwargs)
    loop.call_at = counting_call_at          # type: ignore[method-assign]
    return armed

"""A stand-in for the agent's tower session, without Redis or a tower.

``aircrew.agent.Agent`` uses a ``TowerSession`` for its snapshot, its update inbox, its
requests and the published revision. :class:`StandInSession` gives it all of that from
memory: the snapshot it was made with, updates put into ``updates`` by the caller, a
revision set by the caller, and every request answered ``ok`` (and counted). For
measuring and testing the agent's own work: ``bench reconcile``, ``bench update-cost``.
"""
from __future__ import annotations

import asyncio
from typing import Any

from aircrew.inbox import Inbox
from aircrew.session import ZoneSnapshot
from wire.messages import ZoneUpdate


class StandInSession:
    def __init__(self, snapshot: ZoneSnapshot, session_id: str = "stand-in-session") -> None:
        self.session_id = session_id
        self.updates: Inbox[ZoneUpdate] = Inbox()
        self.lost = asyncio.Event()
        self.published = snapshot.rev          # what ``revision()`` answers
        self.requests: list[str] = []          # the kinds of the requests sent
        self.revision_checks = 0
        self._snapshot = snapshot

    async def snapshot(self) -> ZoneSnapshot:
        return self._snapshot

    async def revision(self) -> int:
        self.revision_checks += 1
        return self.published

    async def request(self, kind: str, body: Any = None, **_: Any) -> dict[str, Any]:
        self.requests.append(kind)
        return {"ok": True, "id": kind}

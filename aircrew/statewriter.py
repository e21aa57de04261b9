"""Writing the agent's state files off its update path (``aircrew.state`` says what they hold).

A change marks the files dirty; ``StateWriter.run`` writes them at most once per
``SAVE_INTERVAL``, at once when a change is urgent (a resync), on a thread of its own
(files are written one at a time, in order). What to write is captured on the event loop
(``AgentState``: immutable), then rendered and written on that thread.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from wire.errors import MeshError
from wire.messages import Peer

from .device import PeerConfig
from .hosts import HostsFile
from .state import Cache, StateFiles
from .wgconf import WgQuickConfig

log = logging.getLogger(__name__)

SAVE_INTERVAL = 1.0     # seconds from the end of one state-file write to the next, at least


@dataclass(frozen=True)
class AgentState:
    """What the state files hold, captured at one moment."""
    zone: str
    private_key: str
    listen_port: int
    cidr: str
    address: str
    prefix_len: int
    rev: int
    session: str
    peers: tuple[Peer, ...]            # the zone, as the cache keeps it
    configs: tuple[PeerConfig, ...]    # what is applied, as wg0.conf shows it
    hosts: HostsFile | None = None     # where the zone's names go (aircrew.hosts)
    policy: str | None = None          # the zone's policy as the cache keeps it

    def write(self, files: StateFiles) -> None:
        cache = Cache(zone=self.zone, cidr=self.cidr, address=self.address,
                      prefix_len=self.prefix_len, listen_port=self.listen_port, rev=self.rev,
                      session=self.session, policy=self.policy)
        files.save(cache, self.peers, WgQuickConfig(
            self.private_key, self.listen_port, (f"{self.address}/{self.prefix_len}",),
            self.configs))
        if self.hosts is not None:
            try:
                self.hosts.write(self.zone, ((p.address, p.name) for p in self.peers if p.name))
            except OSError as exc:
                log.warning("cannot write the zone's names into %s: %s", self.hosts.path, exc)


class StateWriter:
    """Writes ``capture()`` (None: nothing to write yet) into ``files`` after changes.

    No task and no timer per change: the first change after a write arms one timer for
    the moment the next write may start (``interval`` after the end of the last one, at
    once when urgent); later changes only mark the files dirty until it fires. The
    write runs on ``thread``; its end is a callback on the event loop, which arms the
    timer again if something changed meanwhile."""

    def __init__(self, files: StateFiles, capture: Callable[[], AgentState | None],
                 interval: float = SAVE_INTERVAL) -> None:
        self.files = files
        self.capture = capture
        self.interval = interval
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state")
        self.dirty = False              # changed since the last write started
        self._urgent = False
        self._saved_at = float("-inf")  # loop time at the end of the last write
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Future[None] | None = None
        self._running = False

    def changed(self, urgent: bool = False) -> None:
        """Note a change: it is written within ``interval`` (at once if ``urgent``) while
        ``run`` runs."""
        if urgent:
            self._urgent = True
        elif self.dirty and (self._timer is not None or self._writing is not None):
            return      # the common case: a write is already due or under way
        self.dirty = True
        if self._running:
            self._arm()

    async def run(self) -> None:
        """Write the files after changes until cancelled (at most once per ``interval``
        unless urgent); the owner calls ``save`` for what is left on exit."""
        self._running = True
        try:
            if self.dirty:
                self._arm()
            await asyncio.get_running_loop().create_future()    # until cancelled
        finally:
            self._running = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    async def save(self) -> None:
        """Write what ``capture`` gives now, after any write under way; a failure is
        logged (the agent goes on)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.dirty = self._urgent = False
        state = self.capture()
        try:
            if state is not None:
                await asyncio.get_running_loop().run_in_executor(self.thread, state.write,
                                                                 self.files)
        except (OSError, ValueError, MeshError) as exc:
            self._failed(exc)
        finally:
            self._saved_at = asyncio.get_running_loop().time()

    # -- the timer and the write it starts -------------------------------------------------

    def _arm(self) -> None:
        """Arm the timer for the next write, unless a write is under way (its end arms it)."""
        if self._writing is not None:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() if self._urgent else self._saved_at + self.interval
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = loop.call_at(when, self._start)

    def _start(self) -> None:
        self._timer = None
        if not self.dirty:
            return
        self.dirty = self._urgent = False
        loop = asyncio.get_running_loop()
        state = self.capture()
        if state is None:
            self._saved_at = loop.time()
            return
        self._writing = writing = loop.run_in_executor(self.thread, state.write, self.files)
        writing.add_done_callback(self._written)

    def _written(self, writing: asyncio.Future[None]) -> None:
        self._writing = None
        self._saved_at = asyncio.get_running_loop().time()
        if not writing.cancelled():
            exc = writing.exception()
            if isinstance(exc, (OSError, ValueError, MeshError)):
                self._failed(exc)
            elif exc is not None:
                log.error("writing the state files failed", exc_info=exc)
        if self.dirty and self._running:
            self._arm()

    def _failed(self, exc: BaseException) -> None:
        log.warning("cannot write the state files in %s: %s", self.files.directory, exc)

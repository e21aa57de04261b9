"""Writing the agent's state files off its update path (``aircrew.state`` says what they hold).

A change marks the files dirty; ``StateWriter.run`` writes them at most once per
``SAVE_INTERVAL``, at once when a change is urgent (a resync), on a thread of its own
(files are written one at a time, in order). What to write is captured on the event loop
(``AgentState``: immutable), then rendered and written on that thread.
"""
from __future__ import annotations

import asyncio
import logging
import time
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

    def write(self, files: StateFiles) -> None:
        cache = Cache(zone=self.zone, cidr=self.cidr, address=self.address,
                      prefix_len=self.prefix_len, listen_port=self.listen_port, rev=self.rev,
                      session=self.session)
        files.save(cache, self.peers, WgQuickConfig(
            self.private_key, self.listen_port, (f"{self.address}/{self.prefix_len}",),
            self.configs))
        if self.hosts is not None:
            try:
                self.hosts.write(self.zone, ((p.address, p.name) for p in self.peers if p.name))
            except OSError as exc:
                log.warning("cannot write the zone's names into %s: %s", self.hosts.path, exc)


class StateWriter:
    """Writes ``capture()`` (None: nothing to write yet) into ``files`` after changes."""

    def __init__(self, files: StateFiles, capture: Callable[[], AgentState | None],
                 interval: float = SAVE_INTERVAL) -> None:
        self.files = files
        self.capture = capture
        self.interval = interval
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state")
        self.dirty = asyncio.Event()
        self._urgent = asyncio.Event()
        self._saved_at = float("-inf")

    def changed(self, urgent: bool = False) -> None:
        self.dirty.set()
        if urgent:
            self._urgent.set()

    async def run(self) -> None:
        """Write the files after changes: at most once per ``interval`` unless urgent.
        Runs until cancelled; the owner calls ``save`` for what is left on exit."""
        while True:
            await self.dirty.wait()
            delay = self._saved_at + self.interval - time.monotonic()
            if delay > 0 and not self._urgent.is_set():
                try:
                    await asyncio.wait_for(self._urgent.wait(), delay)
                except asyncio.TimeoutError:
                    pass
            await self.save()

    async def save(self) -> None:
        """Write what ``capture`` gives now; a failure is logged (the agent goes on)."""
        self.dirty.clear()
        self._urgent.clear()
        state = self.capture()
        try:
            if state is not None:
                await asyncio.get_running_loop().run_in_executor(self.thread, state.write,
                                                                 self.files)
        except (OSError, ValueError, MeshError) as exc:
            log.warning("cannot write the state files in %s: %s", self.files.directory, exc)
        finally:
            # Counted from the end of a write, so the next one starts ``interval`` after it
            # whatever the writer thread's scheduling delay.
            self._saved_at = time.monotonic()

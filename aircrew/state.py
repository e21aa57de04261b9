"""The agent's files in the state directory (``/etc/wireguard``), named after the interface.

- ``<if>.conf``            wg-quick compatible config of what is applied (0600: holds the key)
- ``<if>-latest-rev.conf``  the zone and revision that config reflects
- ``<if>-cache.json``       the cached zone snapshot and assignment, to rebuild the mesh
                           without the tower
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wire import messages
from wire.errors import InvalidInput
from wire.messages import Peer

from wire.secretfile import write_secret

log = logging.getLogger(__name__)


@dataclass
class Cache:
    zone: str
    cidr: str
    address: str
    prefix_len: int
    listen_port: int
    rev: int
    peers: list[dict[str, Any]] = field(default_factory=list)
    session: str = ""       # the agent session that registered (for `aircrew down`'s leave)

    def peer_map(self) -> dict[str, Peer]:
        out = {}
        for record in self.peers:
            peer = messages.parse_peer(record)
            out[peer.key] = peer
        return out


class StateFiles:
    def __init__(self, directory: Path, interface: str) -> None:
        self.directory = directory
        self.interface = interface

    @property
    def config(self) -> Path:
        return self.directory / f"{self.interface}.conf"

    @property
    def latest_rev(self) -> Path:
        return self.directory / f"{self.interface}-latest-rev.conf"

    @property
    def cache(self) -> Path:
        return self.directory / f"{self.interface}-cache.json"

    def all(self) -> list[Path]:
        return [self.config, self.latest_rev, self.cache]

    def save(self, cache: Cache, wg_quick: str) -> None:
        write_secret(self.config, wg_quick)
        write_secret(self.latest_rev, f"# written by aircrew\nzone = {cache.zone}\n"
                                      f"revision = {cache.rev}\n")
        write_secret(self.cache, json.dumps(asdict(cache), separators=(",", ":")))

    def load(self) -> Cache | None:
        """The cached snapshot, or None when there is none or it is unusable."""
        try:
            data = json.loads(self.cache.read_text())
            cache = Cache(**data)
            messages.zone_name(cache.zone)
            cache.peer_map()
            return cache
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, InvalidInput) as exc:
            log.warning("ignoring the unusable cache %s: %s", self.cache, exc)
            return None

    def remove(self) -> None:
        for path in self.all():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

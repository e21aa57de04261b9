"""The agent's files in the state directory (``/etc/wireguard``), named after the interface.

- ``<if>.conf``            wg-quick compatible config of what is applied (0600: holds the key)
- ``<if>-latest-rev.conf``  the zone and revision that config reflects
- ``<if>-cache.json``       the cached zone snapshot and assignment, to rebuild the mesh
                           without the tower

The agent writes them off its update path, at most about once a second; the text of each
peer is kept and reused while the peer is unchanged, so a write after one change costs a
join over the peers rather than rendering each (``PeerTexts``).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from wire import messages
from wire import policy as policies
from wire.errors import InvalidInput
from wire.messages import Peer
from wire.policy import Policy

from wire.secretfile import write_secret

if TYPE_CHECKING:
    from .device import PeerConfig
    from .wgconf import WgQuickConfig

log = logging.getLogger(__name__)

# Any valid key: peer blocks are rendered with it and cut off the [Interface] part.
_PLACEHOLDER_KEY = "A" * 43 + "="


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
    policy: str | None = None   # the zone's policy, ``{"rev": R, "policy": {...}}``; None: none

    def stored_policy(self) -> tuple[int, Policy] | None:
        return policies.stored(self.policy)

    def peer_map(self) -> dict[str, Peer]:
        """The peers parsed, by key (a copy; parsed once: ``StateFiles.load`` checks them
        and the agent then loads them)."""
        return dict(self._parsed_peers)

    @cached_property
    def _parsed_peers(self) -> dict[str, Peer]:
        out = {}
        for record in self.peers:
            peer = messages.parse_peer(record)
            out[peer.key] = peer
        return out


class PeerTexts:
    """Each peer's text in the two files, reused while the peer is unchanged."""

    def __init__(self) -> None:
        self._records: dict[Peer, str] = {}
        self._blocks: dict[PeerConfig, str] = {}

    def cache_json(self, cache: Cache, records: Iterable[Peer]) -> str:
        """``cache`` as JSON, with ``records`` as its peers (``cache.peers`` is not used)."""
        old = self._records
        self._records = {p: old.get(p) or p.to_json() for p in records}
        head = json.dumps({f.name: getattr(cache, f.name) for f in fields(cache)
                           if f.name != "peers"}, separators=(",", ":"))
        return f'{head[:-1]},"peers":[{",".join(self._records.values())}]}}'

    def wg_quick(self, config: WgQuickConfig) -> str:
        """``wgconf.render(config)``, from the kept text of every unchanged peer."""
        from .wgconf import WgQuickConfig, render
        bare = len(render(WgQuickConfig(_PLACEHOLDER_KEY)))

        def block(peer: PeerConfig) -> str:      # what render appends for one peer
            return render(WgQuickConfig(_PLACEHOLDER_KEY, peers=(peer,)))[bare:]
        old = self._blocks
        self._blocks = {c: old.get(c) or block(c) for c in config.peers}
        head = render(WgQuickConfig(config.private_key, config.listen_port, config.addresses))
        return head + "".join(self._blocks.values())


class StateFiles:
    def __init__(self, directory: Path, interface: str) -> None:
        self.directory = directory
        self.interface = interface
        self._texts = PeerTexts()

    @property
    def config(self) -> Path:
        return self.directory / f"{self.interface}.conf"

    @property
    def latest_rev(self) -> Path:
        return self.directory / f"{self.interface}-latest-rev.conf"

    @property
    def cache(self) -> Path:
        return self.directory / f"{self.interface}-cache.json"

    @property
    def paths(self) -> Path:
        """Each peer's path (direct, relayed, down), for ``aircrew status``."""
        return self.directory / f"{self.interface}-paths.json"

    @property
    def policy_status(self) -> Path:
        """What the firewall applied (``aircrew.firewall``), for ``aircrew status``."""
        return self.directory / f"{self.interface}-policy.json"

    def all(self) -> list[Path]:
        return [self.config, self.latest_rev, self.cache]

    def save_paths(self, status: dict) -> None:
        """Write the path status (no secret in it; replaced atomically)."""
        temp = self.paths.with_name(f".{self.paths.name}.tmp")
        temp.write_text(json.dumps(status, separators=(",", ":")))
        os.replace(temp, self.paths)

    def load_paths(self) -> dict | None:
        try:
            data = json.loads(self.paths.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def save(self, cache: Cache, records: Iterable[Peer], wg_quick: WgQuickConfig) -> None:
        """Write the three files: ``cache`` with ``records`` as its peers, and ``wg_quick``.

        Not thread-safe: one writer at a time (the agent has one thread for it)."""
        write_secret(self.config, self._texts.wg_quick(wg_quick))
        write_secret(self.latest_rev, f"# written by aircrew\nzone = {cache.zone}\n"
                                      f"revision = {cache.rev}\n")
        write_secret(self.cache, self._texts.cache_json(cache, records))

    def load(self) -> Cache | None:
        """The cached snapshot, or None when there is none or it is unusable."""
        try:
            data = json.loads(self.cache.read_text())
            cache = Cache(**data)
            messages.zone_name(cache.zone)
            cache.peer_map()
            cache.stored_policy()
            return cache
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, InvalidInput) as exc:
            log.warning("ignoring the unusable cache %s: %s", self.cache, exc)
            return None

    def remove(self) -> None:
        for path in [*self.all(), self.paths, self.policy_status]:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

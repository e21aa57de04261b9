"""The agent's state files: contents, modes, and the per-peer text reused across writes."""
from __future__ import annotations

import json
import stat

from aircrew.device import PeerConfig
from aircrew.reconcile import Applied
from aircrew.state import Cache, StateFiles
from aircrew.wgconf import WgQuickConfig, parse, render
from wire.messages import Peer
from wire.proof import generate_private_key, public_key_of

OWN = generate_private_key()


def zone(n: int, endpoint_of=lambda i: f"203.0.113.{i % 250 + 1}:51820") -> dict[str, Peer]:
    peers = {}
    for i in range(n):
        key = public_key_of(generate_private_key())
        peers[key] = Peer(key, f"10.9.{i // 250}.{i % 250 + 1}", endpoint_of(i),
                          (f"172.16.{i}.0/24",) if i % 5 == 0 else (), session=f"s{i}")
    return peers


def save(files: StateFiles, peers: dict[str, Peer], rev: int) -> WgQuickConfig:
    config = WgQuickConfig(OWN, 51820, ("10.9.255.254/16",),
                           tuple(Applied.of(public_key_of(OWN), peers).peers.values()))
    files.save(Cache("zone-a", "10.9.0.0/16", "10.9.255.254", 16, 51820, rev, session="me"),
               peers.values(), config)
    return config


def test_files_round_trip_and_are_0600(tmp_path):
    files = StateFiles(tmp_path / "state", "wg0")
    peers = zone(30)
    config = save(files, peers, 7)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files.all()} == {
        "wg0.conf": 0o600, "wg0-latest-rev.conf": 0o600, "wg0-cache.json": 0o600}
    cache = files.load()
    assert (cache.zone, cache.rev, cache.address, cache.session) == ("zone-a", 7, "10.9.255.254", "me")
    assert cache.peer_map() == peers
    text = files.config.read_text()
    assert text == render(config)
    assert parse(text).peers == config.peers
    assert "revision = 7" in files.latest_rev.read_text()


def test_reused_peer_texts_follow_every_change(tmp_path):
    """After joins, leaves and changed peers the files equal a fresh render/dump: no text
    of a peer that changed or left survives."""
    files = StateFiles(tmp_path, "wg0")
    peers = zone(40)
    save(files, peers, 1)
    keys = list(peers)
    del peers[keys[3]]
    moved = peers[keys[5]]
    peers[keys[5]] = Peer(moved.key, moved.address, "192.0.2.55:4000", ("172.31.0.0/24",),
                          session="s5")
    peers.update(zone(2))
    config = save(files, peers, 2)
    assert files.config.read_text() == render(config)
    assert json.loads(files.cache.read_text())["peers"] == [p.to_dict() for p in peers.values()]
    assert files.load().peer_map() == peers
    assert PeerConfig(moved.key, "192.0.2.55:4000", ("10.9.0.6/32", "172.31.0.0/24")) \
        in parse(files.config.read_text()).peers


def test_unusable_cache_is_ignored(tmp_path):
    files = StateFiles(tmp_path, "wg0")
    save(files, zone(3), 1)
    files.cache.write_text('{"zone": "zone-a", "peers": [')
    assert files.load() is None

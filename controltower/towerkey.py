"""The tower's X25519 key pair, shared by every replica through Redis."""
from __future__ import annotations

from redis import Redis

from wire import proof
from wire.keys import Keys


def load_or_create(client: Redis, keys: Keys) -> tuple[str, str]:
    """Return (private, public); the first replica to start creates the pair."""
    private = proof.generate_private_key()
    client.set(keys.tower_private, private, nx=True)
    private = client.get(keys.tower_private)
    public = proof.public_key_of(private)
    client.set(keys.tower_public, public)
    return private, public

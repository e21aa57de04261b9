"""The relay: forwards WireGuard datagrams between nodes of a zone that cannot reach each
other directly, without any key that decrypts them (docs/relay.md).

``table`` decides (pure), ``kernel`` mirrors routes into nftables, ``directory`` is the
relay in Redis (announcement, zone members), ``server`` runs the socket."""

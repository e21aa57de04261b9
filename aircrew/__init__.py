"""aircrew: the node agent. Joins a zone and keeps wg0 equal to the zone's peer list."""

"""IPAM: zones, address leases and child prefixes in Redis, and pure CIDR helpers."""

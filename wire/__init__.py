"""What the ControlTower and aircrew share: the wire protocol (names, messages, proofs,
snapshots), the error hierarchy, and the set-up of Redis connections, logging and config
files.

Neutral on purpose: it imports nothing else of ours, neither Flask nor any device code
(tests/test_layers.py checks it).
"""

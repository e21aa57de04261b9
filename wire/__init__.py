"""The wire protocol shared by the ControlTower and aircrew: names, messages, proofs.

Neutral on purpose: it imports neither Flask nor any device code.
"""

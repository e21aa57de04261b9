"""Logging set-up for the tower's processes."""
from __future__ import annotations

import logging

LEVELS = ("debug", "info", "warning", "error")


def setup(level: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

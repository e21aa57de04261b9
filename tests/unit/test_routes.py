"""aircrew.routes without a link: argument checks (the rest: tests/netns/test_routes.py)."""
from __future__ import annotations

import pytest

from aircrew.routes import LinkConfig
from wire.errors import InvalidInput


def test_invalid_arguments_without_a_link():
    with pytest.raises(InvalidInput):
        LinkConfig("bad name with spaces")
    with pytest.raises(InvalidInput):
        LinkConfig("wg0", mtu=100)

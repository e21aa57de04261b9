"""The one table from domain exceptions to HTTP statuses and protocol codes."""
from __future__ import annotations

import pytest

from wire.errors import (Conflict, Forbidden, InvalidInput, MeshError, NotFound, Superseded,
                         Unauthorized, Unavailable, classify, http_status, protocol_code)
from wire.x25519 import X25519Error


@pytest.mark.parametrize("exc, status, code", [
    (InvalidInput("x"), 400, "invalid"),
    (NotFound("x"), 404, "not-found"),
    (Conflict("x"), 409, "conflict"),
    (Superseded("x"), 409, "superseded"),
    (Unauthorized("x"), 401, "unauthorized"),
    (Forbidden("x"), 403, "forbidden"),
    (Unavailable("x"), 503, "unavailable"),
    (MeshError("x"), 400, "error"),
    (RuntimeError("x"), 500, "error"),
])
def test_each_class_has_one_status_and_code(exc, status, code):
    assert classify(exc) == (status, code)
    assert http_status(exc) == status
    assert protocol_code(exc) == code


def test_an_unlisted_subclass_answers_as_its_nearest_listed_ancestor():
    class ZoneGone(NotFound):
        pass

    class Deeper(Superseded):
        pass

    assert classify(ZoneGone("z")) == (404, "not-found")
    assert classify(Deeper("d")) == (409, "superseded")
    assert classify(X25519Error("bad key")) == (400, "invalid")

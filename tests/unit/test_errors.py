"""The one table from domain exceptions to HTTP statuses and protocol codes."""
from __future__ import annotations

import pytest

from wire.errors import (Conflict, Forbidden, InvalidInput, MeshError, NotFound, Superseded,
                         Unauthorized, Unavailable, class_for_status, classify, code_of,
                         http_status, protocol_code)
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


def test_code_of_a_class_is_the_code_its_errors_travel_with():
    class Gone(NotFound):
        pass

    assert code_of(Superseded) == "superseded"
    assert code_of(Gone) == protocol_code(Gone("g")) == "not-found"
    assert code_of(KeyError) == "error"


@pytest.mark.parametrize("status, cls", [
    (400, InvalidInput), (401, Unauthorized), (403, Forbidden), (404, NotFound),
    (409, Conflict), (503, Unavailable), (500, MeshError), (418, MeshError),
])
def test_class_for_status_reads_the_table_backwards(status, cls):
    assert class_for_status(status) is cls
    if cls is not MeshError:
        assert http_status(cls("x")) == status

"""The OpenAPI document: in step with the Flask routes, and the live API keeps to it."""
from __future__ import annotations

import re
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (not_a_server_error, response_schema_conformance,
                                 status_code_conformance)

from controltower import openapi
from wire.proof import generate_private_key, public_key_of

IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Hypothesis examples per operation and mode: the whole run stays within seconds.
POSITIVE_EXAMPLES = 30
NEGATIVE_EXAMPLES = 15
EXAMPLE_EXAMPLES = 5
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


# `controltower serve`'s settings: agent ACLs and an admin token that reads need too.
PRODUCTION = {"AGENT_ACL": True, "ADMIN_TOKEN": TOKEN, "READ_AUTH": True}


def worker_beats(app) -> None:
    """As if a request worker ran (GET /ready answers 200)."""
    store = app.extensions["zone_store"]
    store.redis.set(store.keys.tower_worker("test"), 1)


def flask_operations(app) -> set[tuple[str, str]]:
    """(method, OpenAPI path template) of every route but static files and the dashboard's
    HTML pages (/ui/: not part of the API, see docs/dashboard.md)."""
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("dashboard."):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        out |= {(method, path) for method in rule.methods - IMPLICIT_METHODS}
    return out


def test_every_route_is_documented_and_nothing_else(app):
    routes = flask_operations(app)
    documented = openapi.operations()
    assert routes - documented == set(), "routes missing from controltower/openapi.py"
    assert documented - routes == set(), "documented operations the app does not have"


def test_document_is_valid_openapi_with_unique_operation_ids(app):
    doc = app.test_client().get("/openapi.json").json
    assert doc == openapi.document()
    assert doc["openapi"].startswith("3.")
    ids = [op["operationId"] for item in doc["paths"].values()
           for key, op in item.items() if key != "parameters"]
    assert len(ids) == len(set(ids))
    # schemathesis refuses a document that is not valid OpenAPI
    schema = schemathesis.openapi.from_dict(doc)
    assert {op.ok().label for op in schema.get_all_operations()}


@pytest.mark.parametrize("app_config", [PRODUCTION], ids=["production"])
def test_api_keeps_to_the_document(app):
    """A bounded schemathesis run: no 5xx, every response as documented.

    Driven through Hypothesis directly (schemathesis' pytest plugin does not run on this
    pytest). The app has the production settings of `controltower serve`: agent ACLs and
    an admin token, which every generated request carries.
    """
    worker_beats(app)
    add_peers(app.extensions["zone_store"])
    add_identities(app.extensions["zone_store"])
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    statuses: dict[str, Counter] = {}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        runs = [(mode.value, operation.as_strategy(generation_mode=mode), examples)
                for mode, examples in ((GenerationMode.POSITIVE, POSITIVE_EXAMPLES),
                                       (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES))]
        runs += [("example", strategy, EXAMPLE_EXAMPLES)
                 for strategy in schema.get_strategies_from_examples(operation)]
        for mode, strategy, examples in runs:
            try:
                run_cases(strategy, examples, statuses.setdefault(operation.label, Counter()))
            except Unsatisfiable:
                pass                # no parameters and no body: nothing negative to send
            except Exception as exc:  # noqa: BLE001 - collect every operation's failure
                failures.append(f"{operation.label} ({mode}): {exc}")
    assert not failures, "\n\n".join(failures)
    # the success path of every operation was exercised, not only its errors
    # (schemathesis leaves out the document's own URL, fetched above)
    succeeded = {label for label, codes in statuses.items() if any(c < 300 for c in codes)}
    expected = {f"{m} {p}" for m, p in openapi.operations()} - {"GET /openapi.json"}
    assert succeeded == expected, statuses


def add_peers(store) -> None:
    """Nodes to list, show and delete: the documented example key and two others."""
    keys = [openapi.EXAMPLE_KEY] + [public_key_of(generate_private_key()) for _ in range(2)]
    for n, key in enumerate(keys):
        store.register("default", key, listen_port=51820, session=f"s{n}",
                       endpoint=f"203.0.113.{n + 1}:51820", child_prefixes=[f"172.24.{n}.0/24"])


def add_identities(store) -> None:
    """The documented example key enrolled (its routes can be approved, its credential
    renewed: the default zone has a key expiry) and a join key with the documented id."""
    import dataclasses
    import time as _time
    from controltower.acl import AgentCredentials
    from ipam.registry import JoinKeyRecord
    creds = AgentCredentials(store.redis, store.keys)
    creds.set("default", "zone-secret-of-the-test")
    store.redis.hset(store.keys.zone("default"), "key_expiry", "86400")
    laptop = public_key_of(generate_private_key())
    store.register("default", laptop, listen_port=51820, session="s", child_prefixes=[])
    store.run(creds.registry.enroll_call("default", "zone", laptop, "0" * 64, "laptop"))
    _, record = creds.registry.create_join_key("default", store.get_zone("default").network)
    record = dataclasses.replace(record, id="0123456789ab", expires=_time.time() + 3600)
    store.redis.hset(store.keys.joinkeys("default"), record.id, record.to_json())


def run_cases(strategy, examples: int, statuses: Counter) -> None:
    @given(case=strategy)
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.generate, Phase.shrink])
    def check(case) -> None:
        response = case.call_and_validate(headers=AUTH, checks=CHECKS)
        statuses[response.status_code] += 1

    check()

"""A stateful schemathesis run against a running tower (`controltower serve`): chains of
calls that follow the OpenAPI links (create a zone, then show, rotate, list, delete it...)
from a known state. 0 answers 5xx, every answer as documented, and no traceback or
ERROR in the tower's log (issue 15, "what this issue must show")."""
from __future__ import annotations

import json
import random
import urllib.request
from collections import Counter

import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import (not_a_server_error, response_schema_conformance,
                                 status_code_conformance)

from controltower import openapi
from ipam.store import ZoneStore
from wire.keys import Keys
from wire.proof import generate_private_key, public_key_of

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
# The chains reached beyond single calls: created zones were shown, rotated, deleted.
CHAINED = {"POST /zones", "GET /zones/{name}", "DELETE /zones/{name}",
           "POST /zones/{name}/rotate-secret", "GET /ipam/leases/{zone}", "GET /peers",
           "GET /peers/{key}"}
PEERS = [openapi.EXAMPLE_KEY, public_key_of(generate_private_key()),
         public_key_of(generate_private_key())]


def reset(tower, store: ZoneStore) -> None:
    """The same state before every example: only the default zone, with three nodes."""
    for zone in tower.request("GET", "/zones")[1]:
        tower.request("DELETE", f"/zones/{zone['Name']}?force=true")
    tower.request("POST", "/zones", {"Name": "default", "CIDR": "10.200.0.0/20",
                                     "Description": "Default zone"})
    store._zone_cache.clear()
    for n, key in enumerate(PEERS):
        store.register("default", key, listen_port=51820, session=f"s{n}",
                       endpoint=f"203.0.113.{n + 1}:51820", child_prefixes=[f"172.24.{n}.0/24"])


def test_stateful_run_against_a_running_tower(tower_proc, redis_client):
    store = ZoneStore(redis_client, Keys())
    with urllib.request.urlopen(tower_proc.api + "/openapi.json", timeout=10) as resp:
        document = json.loads(resp.read())
    assert "links" in document["paths"]["/zones"]["post"]["responses"]["201"]
    schema = schemathesis.openapi.from_url(tower_proc.api + "/openapi.json")
    statuses: Counter = Counter()
    auth = {"Authorization": f"Bearer {tower_proc.token}"}

    class Machine(schema.as_state_machine()):
        def setup(self) -> None:
            reset(tower_proc, store)

        def get_call_kwargs(self, case):
            return {"headers": auth, "timeout": 20}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            statuses[(case.operation.label, response.status_code)] += 1
            case.validate_response(response, checks=CHECKS, headers=auth)

    # Schemathesis draws part of every case from the global random: seeded, so that what
    # ran before in this process changes less. The run still depends on that (each CI
    # context is deterministic but differs from a run alone: one never reached a leases
    # call with a zone that existed), so the chains are asserted by most of them.
    random.seed(0)
    Machine.run(settings=settings(max_examples=60, stateful_step_count=8, deadline=None,
                                  derandomize=True, database=None,
                                  suppress_health_check=list(HealthCheck),
                                  phases=[Phase.generate]))
    assert not [k for k in statuses if k[1] >= 500], statuses
    reached = CHAINED & {label for label, status in statuses if status < 300}
    assert len(reached) >= len(CHAINED) - 2, f"never < 300: {sorted(CHAINED - reached)}; {statuses}"
    text = tower_proc.log_text()
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]

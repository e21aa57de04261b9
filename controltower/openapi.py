"""The OpenAPI 3.1 document of the ControlTower REST API.

One hand-written description of every route in ``controltower/api`` and of the JSON
shapes built by ``controltower/api/render.py``. ``tests/redis/test_openapi.py`` keeps it in
step with the code: every Flask route is documented (methods too) and a schemathesis run
checks that the live API answers as documented. Served at ``GET /openapi.json``.
"""
from __future__ import annotations

import copy
from functools import cache
from importlib import metadata
from typing import Any

from wire.messages import NAT_TYPES

ZONE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
PUBLIC_KEY_PATTERN = r"^[A-Za-z0-9+/]{43}=$"
EXAMPLE_KEY = "M+BTP8LbMikKLufoTTI7tPL5Jf3SHhNki6SXEXa5Uic="

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, example: Any = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"description": description, "content": {JSON: content}}


def _body(schema: str, example: Any) -> dict[str, Any]:
    """A required JSON request body of a schema, with an example."""
    return {"required": True, "content": {JSON: {"schema": _ref(schema), "example": example}}}


def _errors(*codes: str, auth: bool = True) -> dict[str, Any]:
    """References to the shared error responses (503 is possible on every route)."""
    if auth:
        codes = (*codes, "401", "403")
    return {code: {"$ref": f"#/components/responses/{ERROR_RESPONSES[code][0]}"}
            for code in sorted({*codes, "503"})}


ERROR_RESPONSES: dict[str, tuple[str, str]] = {
    "400": ("BadRequest", "Invalid input: a malformed zone name, public key, CIDR or body."),
    "401": ("Unauthorized", "No 'Authorization: Bearer <admin token>' header."),
    "403": ("Forbidden", "The admin token is not valid."),
    "404": ("NotFound", "The zone or peer does not exist."),
    "409": ("Conflict", "The request collides with existing state."),
    "413": ("PayloadTooLarge", "The request body is larger than 64 KiB."),
    "503": ("Unavailable", "The zone store (Redis) is unreachable."),
}

# Writes always need the admin token when the tower has one; reads need it when the
# tower runs with READ_AUTH (controltower serve --read-auth, on by default off loopback).
WRITE_SECURITY: list[dict[str, list[str]]] = [{"adminToken": []}]
READ_SECURITY: list[dict[str, list[str]]] = [{}, {"adminToken": []}]
OPEN_SECURITY: list[dict[str, list[str]]] = []

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "description": "Every error: the message is meant for people and is shown as it is.",
        "properties": {"error": {"type": "string"},
                       "problems": {"type": "array", "description": "An invalid policy: "
                                    "every problem, with its rule index and field.",
                                    "items": _ref("PolicyProblem")}},
        "required": ["error"],
        "additionalProperties": False,
    },
    "ZoneName": {
        "type": "string",
        "pattern": ZONE_NAME_PATTERN,
        "description": "1-63 letters, digits, '-', '_' or '.', starting with a letter or digit.",
        "example": "zone-blue",
    },
    "PublicKey": {
        "type": "string",
        "pattern": PUBLIC_KEY_PATTERN,
        "description": "A WireGuard public key: 32 bytes, base64 (44 characters).",
        "example": EXAMPLE_KEY,
    },
    "NewZone": {
        "type": "object",
        "properties": {
            "Name": _ref("ZoneName"),
            "CIDR": {"type": "string", "description":
                     "The zone's prefix, written as its network address (10.140.0.0/20), "
                     "with at least two usable addresses. Zones may overlap.",
                     "example": "10.140.0.0/20"},
            "Description": {"type": "string", "maxLength": 256, "default": ""},
        },
        "required": ["Name", "CIDR"],
        "additionalProperties": False,
    },
    "Zone": {
        "type": "object",
        "properties": {
            "Name": _ref("ZoneName"),
            "Description": {"type": "string"},
            "IpCidr": {"type": "string", "example": "10.140.0.0/20"},
        },
        "required": ["Name", "Description", "IpCidr"],
        "additionalProperties": False,
    },
    "NewZoneCreated": {
        "type": "object",
        "properties": {
            "Name": _ref("ZoneName"),
            "Description": {"type": "string"},
            "IpCidr": {"type": "string", "example": "10.140.0.0/20"},
            "AgentSecret": _ref("AgentSecret"),
        },
        "required": ["Name", "Description", "IpCidr"],
        "additionalProperties": False,
    },
    "AgentSecret": {
        "type": "string",
        "minLength": 1,
        "description": "The zone's agent credential (aircrew --controller-password). Shown "
                       "once: the tower keeps only its digest. Present when the tower manages "
                       "zone agent users (controltower serve --agent-acl, the default).",
    },
    "RotatedSecret": {
        "type": "object",
        "properties": {"Name": _ref("ZoneName"), "AgentSecret": _ref("AgentSecret")},
        "required": ["Name", "AgentSecret"],
        "additionalProperties": False,
    },
    "PathView": {
        "type": ["object", "null"],
        "description": "One side's report of a pair (null: that side has not reported).",
        "properties": {
            "Path": {"enum": ["direct", "relayed", "down", "unknown"]},
            "Relay": {"type": ["string", "null"]},
            "HandshakeAge": {"type": ["integer", "null"],
                             "description": "Seconds since the pair's last WireGuard handshake."},
            "ReportAge": {"type": "number", "description": "Seconds since the report."},
        },
        "required": ["Path", "Relay", "HandshakeAge", "ReportAge"],
        "additionalProperties": False,
    },
    "ZonePaths": {
        "type": "object",
        "properties": {
            "Zone": _ref("ZoneName"),
            "Relays": {"type": "array", "items": {"type": "object", "properties": {
                "Id": {"type": "string"}, "Region": {"type": ["string", "null"]},
                "Host": {"type": ["string", "null"],
                         "description": "null: agents reach it at the controller's host"},
                "Port": {"type": "integer"}, "SeenAge": {"type": ["number", "null"]}},
                "required": ["Id", "Region", "Host", "Port", "SeenAge"],
                "additionalProperties": False}},
            "Nodes": {"type": "array", "items": {"type": "object", "properties": {
                "PublicKey": {"type": "string"}, "Address": {"type": "string"},
                "Name": {"type": ["string", "null"]},
                "Hostname": {"type": ["string", "null"]},
                "NatType": {"type": ["string", "null"]},
                "Relay": {"type": ["string", "null"], "description": "Its home relay."},
                "Online": {"type": "boolean"}},
                "required": ["PublicKey", "Address", "Name", "Hostname", "NatType", "Relay",
                             "Online"],
                "additionalProperties": False}},
            "Pairs": {"type": "array", "items": {"type": "object", "properties": {
                "A": {"type": "string"}, "B": {"type": "string"},
                "Path": {"enum": ["direct", "relayed", "down", "mixed", "unknown"]},
                "Relay": {"type": ["string", "null"]},
                "AView": _ref("PathView"), "BView": _ref("PathView")},
                "required": ["A", "B", "Path", "Relay", "AView", "BView"],
                "additionalProperties": False}},
            "Counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
        "required": ["Zone", "Relays", "Nodes", "Pairs", "Counts"],
        "additionalProperties": False,
    },
    "ZoneDetail": {
        "type": "object",
        "properties": {
            "Name": _ref("ZoneName"),
            "Description": {"type": "string"},
            "IpCidr": {"type": "string"},
            "Nodes": {"type": "integer", "minimum": 0, "description": "Registered nodes."},
        },
        "required": ["Name", "Description", "IpCidr", "Nodes"],
        "additionalProperties": False,
    },
    "ZoneDeleted": {
        "type": "object",
        "properties": {"Deleted": _ref("ZoneName")},
        "required": ["Deleted"],
        "additionalProperties": False,
    },
    "Peer": {
        "type": "object",
        "properties": {
            "PublicKey": _ref("PublicKey"),
            "EndpointIP": {"type": "string", "description":
                           "ip:port or [ipv6]:port the others reach it at; empty if unknown.",
                           "example": "203.0.113.4:51820"},
            "AllowedIPs": {"type": "string", "description":
                           "Comma-separated: the node address (/32 or /128) and its child "
                           "prefixes.", "example": "10.140.0.1/32,172.24.0.0/24"},
            "Zone": _ref("ZoneName"),
            "NodeAddress": {"type": "string", "example": "10.140.0.1"},
            "ChildPrefix": {"type": "array", "items": {"type": "string"}},
            "LastSeen": {"type": ["string", "null"], "format": "date-time",
                         "description": "Last heartbeat (UTC, ISO 8601); null if never."},
            "Online": {"type": "boolean",
                       "description": "A heartbeat arrived within --offline-after seconds."},
            "NatType": {"type": "string", "enum": list(NAT_TYPES)},
            "Hostname": {"type": "string"},
            "Name": {"type": "string", "description": "Unique in the zone (enrollment); "
                     "empty for a node registered without enrolling.", "example": "laptop"},
            "Tags": {"type": "array", "items": {"type": "string"},
                     "description": "From the join key it enrolled with, or set with "
                                    "PUT /peers/{key}/tags."},
            "Policy": {"type": "object", "description": "(one peer) The state of its zone "
                       "policy rules, as its last heartbeat said (absent: never said).",
                       "properties": {"State": {"enum": ["none", "applied", "failed", "closed"]},
                                      "Revision": {"type": ["integer", "null"]},
                                      "Error": {"type": "string"}}},
            "PendingPrefixes": {"type": "array", "items": {"type": "string"}, "description":
                                "Child prefixes it announced that are not approved: nobody "
                                "routes them (POST /peers/{key}/routes approves)."},
            "KeyExpiry": {"type": ["string", "null"], "format": "date-time",
                          "description": "(one peer) When its credential expires; null: never."},
            "JoinKey": {"type": "string", "description": "(one peer) The id of the join key "
                        "it enrolled with, or 'zone' for the zone secret."},
        },
        "required": ["PublicKey", "EndpointIP", "AllowedIPs", "Zone", "NodeAddress",
                     "ChildPrefix", "LastSeen", "Online", "NatType", "Hostname", "Name",
                     "Tags", "PendingPrefixes"],
        "additionalProperties": False,
    },
    "EnrolledNode": {
        "type": "object",
        "description": "A node enrolled but not registered (yet).",
        "properties": {"PublicKey": _ref("PublicKey"), "Zone": _ref("ZoneName"),
                       "Name": {"type": "string"}, "Tags": {"type": "array",
                                                             "items": {"type": "string"}},
                       "Registered": {"type": "boolean", "const": False},
                       "KeyExpiry": {"type": ["string", "null"]}, "JoinKey": {"type": "string"}},
        "required": ["PublicKey", "Zone", "Name", "Tags", "Registered"],
        "additionalProperties": False,
    },
    "ZoneSettings": {
        "type": "object",
        "properties": {
            "Name": _ref("ZoneName"),
            "ZoneSecret": {"type": "boolean", "description": "The zone secret enrolls new "
                           "nodes (default true; false: join keys only)."},
            "AutoApprove": {"type": "array", "items": {"type": "string"}, "description":
                            "Child prefixes inside these are approved for any node."},
            "KeyExpiryDays": {"type": ["number", "null"], "description":
                              "Credentials enrolled from now on expire after this many days."},
        },
        "additionalProperties": False,
    },
    "ZoneSettingsChange": {
        "type": "object",
        "description": "Every value is checked before any is applied: a 400 changes nothing.",
        "properties": {"ZoneSecret": {"type": "boolean"},
                       "AutoApprove": {"type": "array", "items": {"type": "string"},
                                       "maxItems": 64},
                       "KeyExpiryDays": {"type": ["number", "null"], "exclusiveMinimum": 0}},
        "additionalProperties": False,
    },
    "Route": {
        "type": "object",
        "properties": {"Prefix": {"type": "string"},
                       "State": {"type": "string", "enum": ["approved", "pending"]},
                       "PublicKey": _ref("PublicKey"), "Name": {"type": "string"}},
        "required": ["Prefix", "State", "PublicKey", "Name"],
        "additionalProperties": False,
    },
    "PolicyProblem": {
        "type": "object",
        "properties": {"Rule": {"type": ["integer", "null"]}, "Field": {"type": ["string", "null"]},
                       "Message": {"type": "string"}},
        "required": ["Rule", "Field", "Message"],
    },
    "PolicyDocument": {
        "type": "object",
        "description": "A zone policy (docs/policy.md): allow-only rules; selectors "
                       "tag:NAME, a node name, an address or prefix, '*'; ports tcp/22, "
                       "tcp/8000-8100, udp/53, tcp, udp, icmp, '*'.",
        "properties": {"rules": {"type": "array", "maxItems": 1000, "items": {
            "type": "object",
            "properties": {"from": {"type": "array", "items": {"type": "string"}},
                           "to": {"type": "array", "items": {"type": "string"}},
                           "ports": {"type": "array", "items": {"type": "string"}},
                           "description": {"type": "string"}},
            "required": ["from", "to"]}}},
        "required": ["rules"],
    },
    "Policy": {
        "type": "object",
        "properties": {"Zone": _ref("ZoneName"),
                       "Revision": {"type": ["integer", "null"],
                                    "description": "The zone revision that set it."},
                       "Policy": {"oneOf": [_ref("PolicyDocument"), {"type": "null"}],
                                  "description": "Canonical form; null: no policy "
                                                 "(everything allowed)."},
                       "Warnings": {"type": "array", "items": {"type": "string"},
                                    "description": "PUT only: tags and names no node has."},
                       "Nodes": {"type": "object", "description": "GET only: the nodes' "
                                 "rules as their heartbeats said: counts by state (behind: "
                                 "an older policy applied) and the nodes not applying it.",
                                 "properties": {"Counts": {"type": "object"},
                                                "NotApplying": {"type": "array"}}}},
        "required": ["Zone", "Revision", "Policy"],
    },
    "PolicyDeleted": {
        "type": "object",
        "properties": {"Zone": _ref("ZoneName"), "Deleted": {"type": "boolean"},
                       "Revision": {"type": "integer"}},
        "required": ["Zone", "Deleted", "Revision"],
    },
    "PolicyEnd": {
        "type": "object",
        "properties": {"Address": {"type": "string"}, "Name": {"type": ["string", "null"]},
                       "PublicKey": {"type": ["string", "null"]},
                       "Tags": {"type": "array", "items": {"type": "string"}}},
    },
    "PolicyDecision": {
        "type": "object",
        "properties": {"Zone": _ref("ZoneName"), "From": _ref("PolicyEnd"), "To": _ref("PolicyEnd"),
                       "Port": {"type": "string"}, "Allow": {"type": "boolean"},
                       "Rule": {"type": ["integer", "null"],
                                "description": "The first rule that allows; null: denied "
                                               "(or no policy)."},
                       "Reason": {"type": "string"}},
        "required": ["Allow", "Rule", "Reason"],
    },
    "TagsChange": {
        "type": "object",
        "properties": {"Tags": {"type": "array", "items": {"type": "string"}, "maxItems": 32}},
        "required": ["Tags"],
        "additionalProperties": False,
    },
    "TagsOfNode": {
        "type": "object",
        "properties": {"PublicKey": _ref("PublicKey"), "Name": {"type": "string"},
                       "Tags": {"type": "array", "items": {"type": "string"}}},
    },
    "RouteChange": {
        "type": "object",
        "description": "A node has at most 64 approved prefixes; an approval the tower "
                       "refuses (409: another node routes it) is not kept.",
        "properties": {"Approve": {"type": "array", "items": {"type": "string"}},
                       "Revoke": {"type": "array", "items": {"type": "string"}}},
        "additionalProperties": False,
    },
    "RoutesOfNode": {
        "type": "object",
        "properties": {"PublicKey": _ref("PublicKey"), "Zone": _ref("ZoneName"),
                       "Name": {"type": "string"},
                       "Approved": {"type": "array", "items": {"type": "string"}},
                       "ChildPrefix": {"type": "array", "items": {"type": "string"}},
                       "PendingPrefixes": {"type": "array", "items": {"type": "string"}}},
        "required": ["PublicKey", "Zone", "Name", "Approved", "ChildPrefix", "PendingPrefixes"],
        "additionalProperties": False,
    },
    "Renewed": {
        "type": "object",
        "properties": {"PublicKey": _ref("PublicKey"), "Name": {"type": "string"},
                       "KeyExpiry": {"type": ["string", "null"]}},
        "required": ["PublicKey", "Name", "KeyExpiry"],
        "additionalProperties": False,
    },
    "NewJoinKey": {
        "type": "object",
        "properties": {
            "ExpiresIn": {"type": "number", "minimum": 1, "maximum": 31536000, "default": 86400,
                          "description": "Seconds the key can be used."},
            "Uses": {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 1,
                     "description": "Nodes it may enroll (1: a one-off key)."},
            "Reusable": {"type": "boolean", "default": False,
                         "description": "Any number of nodes until it expires (no Uses)."},
            "Ephemeral": {"type": "boolean", "default": False, "description":
                          "Its nodes are removed EphemeralAfter seconds after going offline."},
            "EphemeralAfter": {"type": "number", "minimum": 5, "default": 300},
            "Tags": {"type": "array", "items": {"type": "string"}, "maxItems": 32},
            "Routes": {"type": "array", "items": {"type": "string"}, "maxItems": 64,
                       "description": "Its nodes' child prefixes inside these are approved."},
            "Description": {"type": "string", "maxLength": 256},
        },
        "additionalProperties": False,
    },
    "JoinKey": {
        "type": "object",
        "properties": {
            "Id": {"type": "string", "pattern": "^[0-9a-f]{12}$"}, "Zone": _ref("ZoneName"),
            "Key": {"type": "string", "description": "The key (ajk1:<zone>:<id>:<secret>): "
                    "only in the answer that creates it; only its digest is kept."},
            "Created": {"type": "string", "format": "date-time"},
            "Expires": {"type": "string", "format": "date-time"},
            "State": {"type": "string", "enum": ["valid", "expired", "used", "revoked"]},
            "Uses": {"type": "integer", "minimum": 0},
            "MaxUses": {"type": ["integer", "null"]}, "Reusable": {"type": "boolean"},
            "Ephemeral": {"type": "boolean"}, "EphemeralAfter": {"type": ["number", "null"]},
            "Tags": {"type": "array", "items": {"type": "string"}},
            "Routes": {"type": "array", "items": {"type": "string"}},
            "Description": {"type": "string"},
        },
        "required": ["Id", "Zone", "Created", "Expires", "State", "Uses", "MaxUses",
                     "Reusable", "Ephemeral", "EphemeralAfter", "Tags", "Routes", "Description"],
        "additionalProperties": False,
    },
    "PeerDeleted": {
        "type": "object",
        "properties": {
            "Deleted": _ref("PublicKey"),
            "Zone": _ref("ZoneName"),
            "Name": {"type": ["string", "null"]},
            "Revoked": {"type": "boolean", "description": "Its credential was revoked (its "
                        "connections cut): it cannot come back without a new join key."},
            "ReleasedAddress": {"type": ["string", "null"]},
            "ReleasedPrefixes": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["Deleted", "Zone", "Name", "Revoked", "ReleasedAddress", "ReleasedPrefixes"],
        "additionalProperties": False,
    },
    "Leases": {
        "type": "object",
        "description": "The seed's shape: every leased address maps to true, and so do the "
                       "network and (IPv4) broadcast addresses, which are never handed out.",
        "properties": {
            "Cidr": {"type": "string"},
            "IPs": {"type": "object", "additionalProperties": {"type": "boolean", "const": True}},
        },
        "required": ["Cidr", "IPs"],
        "additionalProperties": False,
    },
    "Health": {
        "type": "object",
        "properties": {"status": {"type": "string", "const": "ok"}},
        "required": ["status"],
        "additionalProperties": False,
    },
}

ZONE_PARAM = {"name": "name", "in": "path", "required": True, "schema": _ref("ZoneName"),
              "description": "The zone's name.", "example": "zone-blue"}
ZONE_PATH_PARAM = {**ZONE_PARAM, "name": "zone", "example": "default"}
KEY_PARAM = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"},
             "example": EXAMPLE_KEY,
             "description": "The node's name, name.zone, or public key. A key may be written "
                            "as it is ('/' and '+' "
                            "included) or percent-encoded."}
NODE_PARAM = {**KEY_PARAM, "example": "laptop"}
FORCE_PARAM = {"name": "force", "in": "query", "required": False,
               "schema": {"type": "string", "enum": ["true", "false", "1", "0"],
                          "default": "false"},
               "description": "Delete the zone with its nodes (case-insensitive)."}
ZONE_FILTER_PARAM = {"name": "zone", "in": "query", "required": False,
                     "schema": _ref("ZoneName"), "description": "Only the peers of this zone.",
                     "example": "default"}

ZONE_EXAMPLE = {"Name": "zone-blue", "Description": "Tenant - Zone Blue", "IpCidr": "10.140.0.0/20"}


def _create_zone(operation_id: str, summary: str, name: str, cidr: str) -> dict[str, Any]:
    return {
        "tags": ["zones"], "operationId": operation_id, "summary": summary,
        "security": WRITE_SECURITY,
        "requestBody": _body("NewZone", {"Name": name, "Description": f"Tenant - {name}",
                                         "CIDR": cidr}),
        "responses": {"201": {**_json(_ref("NewZoneCreated"), "The zone was created.",
                                      {"Name": name, "Description": f"Tenant - {name}",
                                       "IpCidr": cidr, "AgentSecret": "q4Bm2x...shown-once"}),
                              "links": ZONE_LINKS},
                      **_errors("400", "409", "413")},
    }


# What a client does next with the first peer of a listing.
PEER_LINKS: dict[str, Any] = {
    "ShowPeer": {"operationId": "showPeer", "parameters": {"key": "$response.body#/0/PublicKey"}},
    "DeletePeer": {"operationId": "deletePeer",
                   "parameters": {"key": "$response.body#/0/PublicKey"}},
}

# What a client does next with a zone it created (OpenAPI links; schemathesis's stateful
# run follows them).
ZONE_LINKS: dict[str, Any] = {
    "ShowZone": {"operationId": "showZone", "parameters": {"name": "$response.body#/Name"}},
    "DeleteZone": {"operationId": "deleteZone", "parameters": {"name": "$response.body#/Name"}},
    "RotateZoneSecret": {"operationId": "rotateZoneSecret",
                         "parameters": {"name": "$response.body#/Name"}},
    "ListLeases": {"operationId": "listLeases", "parameters": {"zone": "$response.body#/Name"}},
    "ListPeersOfZone": {"operationId": "listPeers", "parameters": {"zone": "$response.body#/Name"}},
    "SetPolicy": {"operationId": "setPolicy", "parameters": {"name": "$response.body#/Name"}},
    "ShowPolicy": {"operationId": "showPolicy", "parameters": {"name": "$response.body#/Name"}},
}


PATHS: dict[str, Any] = {
    "/zone": {"post": _create_zone(
        "createZoneSeed", "Create a zone (the seed's path; the same as POST /zones)",
        "zone-blue", "10.140.0.0/20")},
    "/zones": {
        "post": _create_zone("createZone", "Create a zone", "zone-green", "10.150.0.0/20"),
        "get": {
            "tags": ["zones"], "operationId": "listZones", "summary": "List zones",
            "security": READ_SECURITY,
            "responses": {"200": _json({"type": "array", "items": _ref("Zone")}, "Every zone.",
                                       [ZONE_EXAMPLE]),
                          **_errors()},
        },
    },
    "/zones/{name}/routes": {
        "parameters": [ZONE_PARAM],
        "get": {
            "tags": ["routes"], "operationId": "listRoutes", "security": READ_SECURITY,
            "summary": "The child prefixes of a zone's nodes, approved or pending",
            "responses": {"200": _json({"type": "array", "items": _ref("Route")}, "By node."),
                          **_errors("400", "404")},
        },
    },
    "/zones/{name}/policy": {
        "parameters": [ZONE_PARAM],
        "get": {
            "tags": ["policy"], "operationId": "showPolicy", "security": READ_SECURITY,
            "summary": "The zone's access policy (null: none, everything allowed)",
            "responses": {"200": _json(_ref("Policy"), "The policy in force."),
                          **_errors("400", "404")},
        },
        "put": {
            "tags": ["policy"], "operationId": "setPolicy", "security": WRITE_SECURITY,
            "summary": "Replace the zone's policy; an invalid one is refused whole (400, "
                       "every problem with rule index and field) and the old one stays",
            "requestBody": _body("PolicyDocument", {"rules": [
                {"from": ["tag:ops"], "to": ["tag:servers"], "ports": ["tcp/22", "icmp"]}]}),
            "responses": {"200": _json(_ref("Policy"), "Stored and sent to the zone's agents."),
                          **_errors("400", "404", "413")},
        },
        "delete": {
            "tags": ["policy"], "operationId": "deletePolicy", "security": WRITE_SECURITY,
            "summary": "Delete the zone's policy: everything allowed again",
            "responses": {"200": _json(_ref("PolicyDeleted"), "Deleted (or there was none)."),
                          **_errors("400", "404")},
        },
    },
    "/zones/{name}/policy/test": {
        "parameters": [ZONE_PARAM,
                       {"name": "from", "in": "query", "required": True, "schema": {"type": "string"},
                        "description": "Node name, public key or address.", "example": "10.200.0.1"},
                       {"name": "to", "in": "query", "required": True, "schema": {"type": "string"},
                        "description": "Node name, public key or address.", "example": "10.200.0.2"},
                       {"name": "port", "in": "query", "required": True, "schema": {"type": "string"},
                        "description": "tcp/PORT, udp/PORT or icmp.", "example": "tcp/22"}],
        "get": {
            "tags": ["policy"], "operationId": "testPolicy", "security": READ_SECURITY,
            "summary": "Would the destination let this connection in? Allow or deny, "
                       "and the rule that decided",
            "responses": {"200": _json(_ref("PolicyDecision"), "The decision."),
                          **_errors("400", "404")},
        },
    },
    "/zones/{name}/join-keys": {
        "parameters": [ZONE_PARAM],
        "post": {
            "tags": ["join keys"], "operationId": "createJoinKey", "security": WRITE_SECURITY,
            "summary": "Create a join key (shown once, as Key)",
            "requestBody": _body("NewJoinKey",
                                 {"ExpiresIn": 3600, "Uses": 1, "Tags": ["servers"]}),
            "responses": {"201": _json(_ref("JoinKey"), "The key, shown this once."),
                          **_errors("400", "404", "409")},
        },
        "get": {
            "tags": ["join keys"], "operationId": "listJoinKeys", "security": READ_SECURITY,
            "summary": "List a zone's join keys (their uses and expiry, never the keys)",
            "responses": {"200": _json({"type": "array", "items": _ref("JoinKey")}, "Oldest first."),
                          **_errors("400", "404", "409")},
        },
    },
    "/zones/{name}/join-keys/{key_id}": {
        "parameters": [{**ZONE_PARAM, "example": "default"}, {"name": "key_id", "in": "path", "required": True,
                                    "schema": {"type": "string", "pattern": "^[0-9a-f]{12}$"},
                                    "example": "0123456789ab"}],
        "delete": {
            "tags": ["join keys"], "operationId": "revokeJoinKey", "security": WRITE_SECURITY,
            "summary": "Revoke a join key (nodes it enrolled keep their own credentials)",
            "responses": {"200": _json(_ref("JoinKey"), "The revoked key."),
                          **_errors("400", "404", "409")},
        },
    },
    "/zones/{name}/rotate-secret": {
        "parameters": [ZONE_PARAM],
        "post": {
            "tags": ["zones"], "operationId": "rotateZoneSecret", "security": WRITE_SECURITY,
            "summary": "Give the zone's agents a new credential (the old one stops working)",
            "description": "Agents already connected keep their connection until it drops; "
                           "give them the new secret before that. 409 when the tower does not "
                           "manage agent credentials (--no-agent-acl).",
            "responses": {"200": _json(_ref("RotatedSecret"), "The new secret, shown once."),
                          **_errors("400", "404", "409")},
        },
    },
    "/zones/{name}/paths": {
        "parameters": [ZONE_PARAM],
        "get": {
            "tags": ["zones"], "operationId": "zonePaths", "security": READ_SECURITY,
            "summary": "How each pair of the zone's nodes reaches each other",
            "description": "Direct, relayed (via which relay) or down, as both nodes of each "
                           "pair last reported on their heartbeats; 'mixed' when they "
                           "disagree, 'unknown' when neither reported (within 60 s).",
            "parameters": [{"name": "node", "in": "query", "required": False,
                            "description": "Only the pairs of this node (public key or name).",
                            "schema": {"type": "string"}}],
            "responses": {"200": _json(_ref("ZonePaths"), "The zone's pairs."),
                          **_errors("400", "404")},
        },
    },
    "/zones/{name}": {
        "parameters": [ZONE_PARAM],
        "get": {
            "tags": ["zones"], "operationId": "showZone", "summary": "Show a zone",
            "security": READ_SECURITY,
            "responses": {"200": _json(_ref("ZoneDetail"), "The zone and its node count.",
                                       {**ZONE_EXAMPLE, "Nodes": 3}),
                          **_errors("400", "404")},
        },
        "patch": {
            "tags": ["zones"], "operationId": "updateZone", "security": WRITE_SECURITY,
            "summary": "Change a zone's identity settings (zone secret, auto-approve, key expiry)",
            "requestBody": _body("ZoneSettingsChange", {"ZoneSecret": False}),
            "responses": {"200": _json(_ref("ZoneSettings"), "The settings now."),
                          **_errors("400", "404", "409")},
        },
        "delete": {
            "tags": ["zones"], "operationId": "deleteZone", "security": WRITE_SECURITY,
            "summary": "Delete a zone (refused while it has nodes, unless force is true)",
            "description": "With force, every node of the zone is removed and its agents are "
                           "told the zone was deleted.",
            "parameters": [FORCE_PARAM],
            "responses": {"200": _json(_ref("ZoneDeleted"), "The zone was deleted.",
                                       {"Deleted": "zone-blue"}),
                          **_errors("400", "404", "409")},
        },
    },
    "/peers": {
        "get": {
            "tags": ["peers"], "operationId": "listPeers", "security": READ_SECURITY,
            "summary": "List peers (of every zone, or of one)",
            "parameters": [ZONE_FILTER_PARAM],
            "responses": {"200": {**_json({"type": "array", "items": _ref("Peer")},
                                          "Peers, by zone then public key."),
                                  "links": PEER_LINKS},
                          "304": {"description": "Not modified: If-None-Match holds the "
                                                 "current ETag (no body)."},
                          **_errors("400", "404")},
        },
    },
    "/peers/{key}": {
        "parameters": [KEY_PARAM],
        "get": {
            "tags": ["peers"], "operationId": "showPeer", "summary": "Show a peer",
            "security": READ_SECURITY,
            "responses": {"200": _json({"oneOf": [_ref("Peer"), _ref("EnrolledNode")]},
                                       "The peer."), **_errors("400", "404", "409")},
        },
        "delete": {
            "tags": ["peers"], "operationId": "deletePeer", "security": WRITE_SECURITY,
            "summary": "Remove a node for good: its credential is revoked at once, it cannot "
                       "come back without a new join key",
            "responses": {"200": _json(_ref("PeerDeleted"), "The peer was removed."),
                          **_errors("400", "404", "409")},
        },
    },
    "/peers/{key}/routes": {
        "parameters": [NODE_PARAM],
        "post": {
            "tags": ["routes"], "operationId": "approveRoutes", "security": WRITE_SECURITY,
            "summary": "Approve a node's child prefixes (or take approvals back)",
            "requestBody": _body("RouteChange", {"Approve": ["172.24.0.0/24"]}),
            "responses": {"200": _json(_ref("RoutesOfNode"), "Its prefixes now."),
                          **_errors("400", "404", "409")},
        },
    },
    "/peers/{key}/tags": {
        "parameters": [NODE_PARAM],
        "put": {
            "tags": ["policy"], "operationId": "setTags", "security": WRITE_SECURITY,
            "summary": "Replace a node's tags (the zone's agents hear one peer upsert)",
            "requestBody": _body("TagsChange", {"Tags": ["ops"]}),
            "responses": {"200": _json(_ref("TagsOfNode"), "Its tags now."),
                          **_errors("400", "404", "409")},
        },
    },
    "/peers/{key}/renew": {
        "parameters": [NODE_PARAM],
        "post": {
            "tags": ["peers"], "operationId": "renewCredential", "security": WRITE_SECURITY,
            "summary": "Renew a node's credential for another key-expiry period",
            "responses": {"200": _json(_ref("Renewed"), "Its new expiry."),
                          **_errors("400", "404", "409")},
        },
    },
    "/ipam/leases/{zone}": {
        "parameters": [ZONE_PATH_PARAM],
        "get": {
            "tags": ["ipam"], "operationId": "listLeases", "summary": "A zone's address leases",
            "security": READ_SECURITY,
            "responses": {"200": _json(
                {"type": "array", "items": _ref("Leases"), "minItems": 1, "maxItems": 1},
                "One entry: the zone's CIDR and its reserved and leased addresses.",
                [{"Cidr": "10.140.0.0/20", "IPs": {"10.140.0.0": True, "10.140.0.1": True,
                                                   "10.140.15.255": True}}]),
                **_errors("400", "404")},
        },
    },
    "/health": {
        "get": {
            "tags": ["operations"], "operationId": "health", "security": OPEN_SECURITY,
            "summary": "Liveness: answers 200 when Redis answers",
            "responses": {"200": _json(_ref("Health"), "Alive.", {"status": "ok"}),
                          **_errors(auth=False)},
        },
    },
    "/ready": {
        "get": {
            "tags": ["operations"], "operationId": "ready", "security": OPEN_SECURITY,
            "summary": "Readiness: 200 when Redis answers and this replica's request worker "
                       "runs (503 otherwise; see docs/observability.md)",
            "responses": {"200": _json(
                {"type": "object", "properties": {"status": {"type": "string", "const": "ready"}},
                 "required": ["status"], "additionalProperties": False},
                "Ready.", {"status": "ready"}),
                **_errors(auth=False)},
        },
    },
    "/metrics": {
        "get": {
            "tags": ["operations"], "operationId": "metrics", "security": OPEN_SECURITY,
            "summary": "Prometheus metrics of this replica (text exposition format; see "
                       "docs/observability.md)",
            "responses": {"200": {"description": "The metrics.",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}},
        },
    },
    "/openapi.json": {
        "get": {
            "tags": ["operations"], "operationId": "openapi", "summary": "This document",
            "security": OPEN_SECURITY,
            "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
        },
    },
}


def _version() -> str:
    try:
        return metadata.version("apex-mesh")
    except metadata.PackageNotFoundError:
        return "0.0.0"


@cache
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ControlTower REST API",
            "version": _version(),
            "description": "Zones, address leases and peers of an aircrew WireGuard mesh. "
                           "Errors are JSON {\"error\": \"...\"} with status 400 (invalid "
                           "input), 404 (unknown zone or peer), 409 (conflict) or 503 (Redis "
                           "unreachable). See docs/api.md.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [{"name": "zones"}, {"name": "peers"}, {"name": "ipam"},
                 {"name": "operations"}],
        "paths": PATHS,
        "security": WRITE_SECURITY,
        "components": {
            "securitySchemes": {"adminToken": {
                "type": "http", "scheme": "bearer",
                "description": "The admin token: <data-dir>/admin-token on the tower, or "
                               "--admin-token-file."}},
            "schemas": SCHEMAS,
            "responses": {name: _json(_ref("Error"), description)
                          for name, description in ERROR_RESPONSES.values()},
        },
    }


def document() -> dict[str, Any]:
    """A fresh copy of the document (callers may change it)."""
    return copy.deepcopy(_document())


def operations(doc: dict[str, Any] | None = None) -> set[tuple[str, str]]:
    """(HTTP method, path template) of every documented operation."""
    doc = doc or _document()
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return {(method.upper(), path) for path, item in doc["paths"].items()
            for method in item if method in methods}

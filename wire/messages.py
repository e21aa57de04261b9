"""Messages on the wire, their validation and (de)serialisation.

Requests (agent -> tower) are stream entries with two fields: ``m``, the JSON message,
and ``mac``, the proof-of-possession MAC over the exact bytes of ``m``.
Replies (tower -> node) and zone updates (tower -> zone) are JSON on pub/sub channels.
See docs/protocol.md for every field.
"""
from __future__ import annotations

import ipaddress
import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from . import addresses, proof
from .errors import BRIEF, InvalidInput, brief  # noqa: F401 (brief: used by others)
from .policy import Policy, PolicyError
from .policy import parse as parse_policy

VERSION = 1
REQUEST_TYPES = ("register", "heartbeat", "endpoint-update", "leave", "enroll")
REQUEST_FIELDS = frozenset({"v", "type", "id", "zone", "key", "session", "ts", "nonce", "body"})
# How a node is reached: STUN's classification (aircrew.nat), or "static" for an endpoint
# given by its operator (--local-endpoint-ip, --internal-network).
NAT_OPEN = "open"
NAT_CONE = "cone"
NAT_SYMMETRIC = "symmetric"
NAT_UNKNOWN = "unknown"
NAT_STATIC = "static"
NAT_TYPES = (NAT_OPEN, NAT_CONE, NAT_SYMMETRIC, NAT_UNKNOWN, NAT_STATIC)
MAX_MESSAGE_BYTES = 16384
MAX_CHILD_PREFIXES = 64
MAX_TAGS = 32
MAX_PATH_REPORT = 512            # peers in one heartbeat's path report
MAX_REPORT_RELAYS = 16
PATH_CODES = ("d", "r", "x")     # direct, relayed, down

_ZONE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_NONCE_RE = re.compile(r"^[0-9a-f]{16,64}$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{0,253}$")
_RELAY_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}-[0-9a-f]{8}$")


# -- field validators (shared by REST, the worker and the agent) ------------------



def zone_name(value: Any) -> str:
    if not isinstance(value, str) or not _ZONE_RE.fullmatch(value):
        raise InvalidInput(
            "zone name must be 1-63 characters of letters, digits, '-', '_' or '.', "
            "starting with a letter or digit")
    return value


def public_key(value: Any, what: str = "public key") -> str:
    proof.decode_key(value, what)
    return value


def endpoint(value: Any) -> str:
    """``ip:port`` or ``[ipv6]:port``, returned in canonical form."""
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidInput("endpoint must be a string 'ip:port' or '[ipv6]:port'")
    host, sep, port_text = value.rpartition(":")
    if not sep or not (port_text.isascii() and port_text.isdigit()):
        raise InvalidInput(f"endpoint {value!r} is not 'ip:port'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidInput(f"endpoint {value!r} does not hold an IP address") from None
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise InvalidInput(f"endpoint {value!r} has a port outside 1-65535")
    addresses.usable_endpoint_ip(ip, "endpoint")
    return format_endpoint(ip, port)


def format_endpoint(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    """A WireGuard endpoint: ``ip:port`` or ``[ipv6]:port``, the address in canonical form
    (ValueError for text that is no IP address)."""
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def port(value: Any, what: str = "listen port") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidInput(f"{what} must be an integer 1-65535")
    return value


def ip_address(value: Any, what: str = "address") -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidInput(f"{what} {brief(value)} is not an IP address") from None


def network(value: Any, what: str = "CIDR") -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR that must be written as its network address (10.0.0.0/24, not 10.0.0.1/24)."""
    if not isinstance(value, str) or "/" not in value:
        raise InvalidInput(f"{what} must be a string like '10.140.0.0/20'")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            net = ipaddress.ip_network(value, strict=False)
            raise InvalidInput(
                f"{what} {brief(value)} has host bits set; did you mean {net}?") from None
        raise InvalidInput(f"{what} {brief(value)} is not a valid CIDR") from None


def _json(payload: bytes | str, what: str) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput(f"{what} is not JSON") from None


MAX_TIMESTAMP = 2**33      # unix time in the year 2242


def timestamp(value: Any, what: str) -> float:
    """A unix time from 0 to ``MAX_TIMESTAMP`` (so no message built from it can carry a
    300-digit number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{what} must be a number")
    if not (isinstance(value, float) and math.isfinite(value) or isinstance(value, int)) \
            or not 0 <= value <= MAX_TIMESTAMP:
        raise InvalidInput(f"{what} is out of range (a unix time)")
    return float(value)


def _optional(value: Any, check, *args):
    return None if value is None else check(value, *args)


def _string(value: Any, what: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidInput(f"{what} is malformed")
    return value


def nat_type(value: Any) -> str | None:
    if value is None:
        return None
    if value not in NAT_TYPES:
        raise InvalidInput(f"nat type must be one of {', '.join(NAT_TYPES)}")
    return value


# -- requests ------------------------------------------------------------------------

@dataclass
class Request:
    type: str
    zone: str
    key: str
    body: dict[str, Any] = field(default_factory=dict)
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ts: float = field(default_factory=time.time)
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> bytes:
        return json.dumps({
            "v": VERSION, "type": self.type, "id": self.id, "zone": self.zone,
            "key": self.key, "session": self.session, "ts": self.ts,
            "nonce": self.nonce, "body": self.body,
        }, separators=(",", ":")).encode()

    def packed(self, node_private: str, tower_public: str) -> bytes:
        """The request as published on the node's request channel: its MAC (hex), a
        newline, the message (``unpack`` splits it)."""
        fields = self.signed(node_private, tower_public)
        return str(fields["mac"]).encode() + b"\n" + bytes(fields["m"])

    def signed(self, node_private: str, tower_public: str) -> dict[str, bytes | str]:
        """Stream entry fields: the message and its MAC."""
        payload = self.to_json()
        return {"m": payload, "mac": proof.sign(proof.mac_key(node_private, tower_public), payload)}


def unpack(data: bytes | str) -> tuple[bytes, str]:
    """(message, MAC) of a published request (``Request.packed``)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    mac, sep, payload = data.partition(b"\n")
    if not sep or len(mac) > 128:
        raise InvalidInput("a request is '<mac>\\n<message>'")
    return payload, mac.decode("ascii", "replace")


def parse_request(payload: bytes) -> Request:
    """Parse and validate a request message (the MAC is checked separately)."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise InvalidInput("request too large")
    data = _json(payload, "request")
    if not isinstance(data, dict):
        raise InvalidInput("request must be a JSON object")
    if data.get("v") != VERSION:
        raise InvalidInput(f"unsupported protocol version {brief(data.get('v'))}")
    unknown = set(data) - REQUEST_FIELDS
    if unknown:
        raise InvalidInput(f"unknown request fields: {', '.join(sorted(map(str, unknown)))[:BRIEF]}")
    kind = data.get("type")
    if kind not in REQUEST_TYPES:
        raise InvalidInput(f"unknown request type {brief(kind)}")
    ts = timestamp(data.get("ts"), "ts")
    body = data.get("body", {})
    if not isinstance(body, dict):
        raise InvalidInput("body must be an object")
    request = Request(
        type=kind,
        zone=zone_name(data.get("zone")),
        key=public_key(data.get("key")),
        body=_BODY_VALIDATORS[kind](body),
        session=_string(data.get("session"), "session", _ID_RE),
        id=_string(data.get("id"), "id", _ID_RE),
        ts=ts,
        nonce=_string(data.get("nonce"), "nonce", _NONCE_RE),
    )
    return request


def _register_body(body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - {"endpoint", "listen_port", "request_ip", "child_prefixes",
                           "nat_type", "hostname"}
    if unknown:
        raise InvalidInput(f"unknown register fields: {', '.join(sorted(unknown))}")
    prefixes = body.get("child_prefixes", [])
    if not isinstance(prefixes, list) or len(prefixes) > MAX_CHILD_PREFIXES:
        raise InvalidInput(f"child_prefixes must be a list of at most {MAX_CHILD_PREFIXES}")
    hostname = body.get("hostname")
    return {
        "endpoint": _optional(body.get("endpoint"), endpoint),
        "listen_port": port(body.get("listen_port")),
        "request_ip": _optional(body.get("request_ip"), ip_address, "requested address"),
        "child_prefixes": sorted({str(network(p, "child prefix")) for p in prefixes}),
        "nat_type": nat_type(body.get("nat_type")),
        "hostname": None if hostname is None else _string(hostname, "hostname", _HOSTNAME_RE),
    }


def relay_id(value: Any) -> str:
    """A relay's id: its region, '-', 8 hex digits of its key's digest."""
    return _string(value, "relay id", _RELAY_ID_RE)


def _endpoint_body(body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - {"endpoint", "nat_type", "relay"}
    if unknown:
        raise InvalidInput(f"unknown endpoint-update fields: {', '.join(sorted(unknown))}")
    out = {"endpoint": endpoint(body.get("endpoint")), "nat_type": nat_type(body.get("nat_type"))}
    if "relay" in body:
        out["relay"] = _optional(body.get("relay"), relay_id)
    return out


PATH_REPORT_FIELDS = ("relay", "relays", "paths")


def _heartbeat_body(body: dict[str, Any]) -> dict[str, Any]:
    """Empty, or any of: a path report (``PATH_REPORT_FIELDS``, ``_path_report``) and the
    state of the node's policy rules (``policy``, ``_policy_state``)."""
    unknown = set(body) - {*PATH_REPORT_FIELDS, "policy"}
    if unknown:
        raise InvalidInput(f"unknown heartbeat fields: {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    if any(name in body for name in PATH_REPORT_FIELDS):
        out.update(_path_report(body))
    if "policy" in body:
        out["policy"] = _policy_state(body["policy"])
    return out


def _path_report(body: dict[str, Any]) -> dict[str, Any]:
    """``{"relay": home relay id or null, "relays": [ids], "paths": [[peer address,
    "d"|"r"|"x", index into relays or null, handshake age s or null], ...]}`` (at most
    MAX_PATH_REPORT peers)."""
    relays = body.get("relays", [])
    if not isinstance(relays, list) or len(relays) > MAX_REPORT_RELAYS:
        raise InvalidInput(f"relays must be a list of at most {MAX_REPORT_RELAYS}")
    relays = [relay_id(r) for r in relays]
    paths = body.get("paths", [])
    if not isinstance(paths, list) or len(paths) > MAX_PATH_REPORT:
        raise InvalidInput(f"paths must be a list of at most {MAX_PATH_REPORT}")
    checked = []
    for entry in paths:
        if not isinstance(entry, list) or len(entry) != 4:
            raise InvalidInput("a path entry is [address, code, relay index, handshake age]")
        address, code, index, age = entry
        if code not in PATH_CODES:
            raise InvalidInput(f"path code must be one of {', '.join(PATH_CODES)}")
        if index is not None and (not _is_int(index) or not 0 <= index < len(relays)):
            raise InvalidInput("path relay index out of range")
        if age is not None and (not _is_int(age) or not 0 <= age < 2**31):
            raise InvalidInput("handshake age must be whole seconds")
        checked.append([ip_address(address, "path peer address"), code, index, age])
    return {"relay": _optional(body.get("relay"), relay_id), "relays": relays, "paths": checked}


def _enroll_body(body: dict[str, Any]) -> dict[str, Any]:
    from .identity import check_digest, node_name
    unknown = set(body) - {"credential_sha256", "name", "hostname"}
    if unknown:
        raise InvalidInput(f"unknown enroll fields: {', '.join(sorted(unknown))}")
    hostname = body.get("hostname")
    return {
        "credential_sha256": check_digest(body.get("credential_sha256")),
        "name": _optional(body.get("name"), node_name),
        "hostname": None if hostname is None else _string(hostname, "hostname", _HOSTNAME_RE),
    }


def _empty_body(body: dict[str, Any]) -> dict[str, Any]:
    if body:
        raise InvalidInput("this request takes no body")
    return {}


POLICY_STATES = ("none", "applied", "failed", "closed")
MAX_POLICY_ERROR = 256


def _policy_state(state: Any) -> dict[str, Any]:
    """``{"rev": R or null, "state": "applied"|"failed"|"closed"|"none", "error": "..."}``."""
    if not isinstance(state, dict) or set(state) - {"rev", "state", "error"}:
        raise InvalidInput("heartbeat policy must be an object with rev, state and error")
    rev, name, error = state.get("rev"), state.get("state"), state.get("error", "")
    if rev is not None and not (_is_int(rev) and rev >= 0):
        raise InvalidInput("heartbeat policy rev must be a revision or null")
    if name not in POLICY_STATES:
        raise InvalidInput(f"heartbeat policy state must be one of {', '.join(POLICY_STATES)}")
    if not isinstance(error, str):
        raise InvalidInput("heartbeat policy error must be a string")
    return {"rev": rev, "state": name, "error": error[:MAX_POLICY_ERROR]}


_BODY_VALIDATORS = {
    "register": _register_body,
    "heartbeat": _heartbeat_body,
    "endpoint-update": _endpoint_body,
    "leave": _empty_body,
    "enroll": _enroll_body,
}


# -- peers ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Peer:
    """One node of a zone, as stored in Redis and sent in snapshots and updates."""
    key: str
    address: str
    endpoint: str | None = None
    child_prefixes: tuple[str, ...] = ()
    listen_port: int = 51820
    nat_type: str | None = None
    session: str = ""
    hostname: str | None = None
    registered: float = 0.0
    name: str | None = None                      # unique in the zone (enrollment)
    tags: tuple[str, ...] = ()                   # from its join key
    pending_prefixes: tuple[str, ...] = ()       # announced, not approved: nobody routes them
    key_expiry: float | None = None              # when its credential expires (zone setting)
    relay: str | None = None        # its home relay (the nearest), when it has one

    def allowed_ips(self) -> tuple[str, ...]:
        # ``address`` is an IP address (``parse_peer`` checks it): IPv6 has colons, IPv4 none.
        host = 128 if ":" in self.address else 32
        return (f"{self.address}/{host}", *self.child_prefixes)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "key": self.key, "address": self.address, "endpoint": self.endpoint,
            "child_prefixes": list(self.child_prefixes), "listen_port": self.listen_port,
            "nat_type": self.nat_type, "session": self.session, "hostname": self.hostname,
            "registered": self.registered,
        }
        # Identity fields only when set: records without them keep their old layout.
        if self.name:
            data["name"] = self.name
        if self.tags:
            data["tags"] = list(self.tags)
        if self.pending_prefixes:
            data["pending_prefixes"] = list(self.pending_prefixes)
        if self.key_expiry:
            data["key_expiry"] = self.key_expiry
        if self.relay:
            data["relay"] = self.relay
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


def parse_peer(data: Any) -> Peer:
    """Validate a peer record (from Redis or an update) into a Peer."""
    if isinstance(data, (bytes, str)):
        data = _json(data, "peer record")
    if not isinstance(data, dict):
        raise InvalidInput("peer record must be an object")
    prefixes = data.get("child_prefixes", [])
    if not isinstance(prefixes, list) or len(prefixes) > MAX_CHILD_PREFIXES:
        raise InvalidInput("peer child_prefixes must be a list")
    registered = timestamp(data.get("registered", 0.0), "peer registered")
    hostname = data.get("hostname")
    name = data.get("name")
    tags = data.get("tags") or []
    pending = data.get("pending_prefixes") or []
    if not isinstance(tags, list) or not isinstance(pending, list) \
            or len(pending) > MAX_CHILD_PREFIXES or len(tags) > MAX_TAGS:
        raise InvalidInput("peer tags and pending_prefixes must be lists")
    return Peer(
        key=public_key(data.get("key")),
        address=ip_address(data.get("address"), "peer address"),
        endpoint=_optional(data.get("endpoint"), endpoint),
        child_prefixes=tuple(str(network(p, "child prefix")) for p in prefixes),
        listen_port=port(data.get("listen_port", 51820)),
        nat_type=nat_type(data.get("nat_type")),
        session=str(data.get("session") or ""),
        hostname=hostname if isinstance(hostname, str) else None,
        registered=registered,
        name=_node_name(name),
        tags=tuple(str(t) for t in tags),
        pending_prefixes=tuple(str(network(p, "child prefix")) for p in pending),
        key_expiry=_optional(data.get("key_expiry"), timestamp, "peer key_expiry"),
        relay=data["relay"] if isinstance(data.get("relay"), str)
        and _RELAY_ID_RE.fullmatch(data["relay"]) else None,
    )


def _node_name(value: Any) -> str | None:
    """A peer's name, or None when it is not a DNS label (names go into hosts files: a
    record with another name is no reason to write it there)."""
    from .identity import node_name
    try:
        return node_name(value)
    except InvalidInput:
        return None


def peer_record(peer: Peer) -> str:
    """A peer record as stored in the zone's peers hash and sent in snapshots and
    updates: every field but ``registered``, the address last."""
    fields = peer.to_dict()
    del fields["registered"]
    fields["address"] = fields.pop("address")
    return _compact(fields)


# An address no peer record can hold: its JSON form marks where the address goes.
_ADDRESS_SLOT = "\x00"
_ADDRESS_SLOT_JSON = json.dumps(_ADDRESS_SLOT)


def peer_record_parts(peer: Peer) -> tuple[str, str]:
    """``peer_record`` split around its address (``peer.address`` is ignored):
    ``before + address + after`` is the record of that address. For the register script,
    which picks an IPv4 zone's new address itself (an IP address needs no JSON escaping)."""
    text = peer_record(replace(peer, address=_ADDRESS_SLOT))
    before, slot, after = text.rpartition(_ADDRESS_SLOT_JSON)   # the address is last
    if not slot:
        raise ValueError("peer record without its address slot")
    return before + '"', '"' + after


def _compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


# -- replies and updates -----------------------------------------------------------------
#
# Every message the tower sends is built here: replies, zone updates and their changes.
# (The Lua scripts of ipam/ return data and publish what they are given.)

def reply(request_id: str, kind: str, ok: bool, **fields: Any) -> str:
    return _compact({"v": VERSION, "id": request_id, "type": kind, "ok": ok, **fields})


def upsert_change(rev: int, record: str) -> str:
    """A change that adds or replaces a peer; ``record``: its ``peer_record`` text."""
    return f'{{"rev":{int(rev)},"op":"upsert","peer":{record}}}'


def remove_change(rev: int, key: str, reason: str) -> str:
    return _compact({"rev": int(rev), "op": "remove", "key": key, "reason": reason})


def policy_change(rev: int, document: str | None) -> str:
    """The zone's policy set (``document``: its canonical JSON) or deleted (None)."""
    return f'{{"rev":{int(rev)},"op":"policy","policy":{document or "null"}}}'


def zone_deleted_change(rev: int) -> str:
    return _compact({"rev": int(rev), "op": "zone-deleted"})


def update(zone: str, since: int, rev: int, changes: list[str]) -> str:
    """A zone update: ``changes`` (texts of the functions above, in revision order)
    take the zone from revision ``since`` to ``rev``."""
    return (f'{{"v":{VERSION},"zone":{json.dumps(zone)},"since":{int(since)},'
            f'"rev":{int(rev)},"changes":[{",".join(changes)}]}}')


def zone_deleted(zone: str, rev: int) -> str:
    """The last update of a deleted zone (``rev``: its revision plus one)."""
    return update(zone, rev - 1, rev, [zone_deleted_change(rev)])


@dataclass(frozen=True)
class Change:
    rev: int
    op: str                      # "upsert" | "remove" | "policy" | "zone-deleted"
    peer: Peer | None = None     # for upsert
    key: str | None = None       # for remove
    reason: str | None = None    # for remove: left, deleted, expired, evicted
    policy: Policy | None = None  # for policy: the new policy (None: deleted)


@dataclass(frozen=True)
class ZoneUpdate:
    zone: str
    since: int                   # the revision these changes apply on top of
    rev: int                     # the revision after them
    changes: tuple[Change, ...]


def parse_update(payload: bytes | str) -> ZoneUpdate:
    data = _json(payload, "update")
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise InvalidInput("update must be a version 1 object")
    since, rev, raw_changes = data.get("since"), data.get("rev"), data.get("changes")
    if not (_is_int(since) and _is_int(rev) and 0 <= since <= rev):
        raise InvalidInput("update revisions are malformed")
    if not isinstance(raw_changes, list):
        raise InvalidInput("update changes must be a list")
    changes = []
    for raw in raw_changes:
        if not isinstance(raw, dict) or not _is_int(raw.get("rev")):
            raise InvalidInput("change must be an object with a revision")
        op = raw.get("op")
        if op == "upsert":
            changes.append(Change(raw["rev"], op, peer=parse_peer(raw.get("peer"))))
        elif op == "remove":
            changes.append(Change(raw["rev"], op, key=public_key(raw.get("key")),
                                  reason=str(raw.get("reason") or "")))
        elif op == "policy":
            document = raw.get("policy")
            changes.append(Change(raw["rev"], op,
                                  policy=None if document is None else policy_doc(document)))
        elif op == "zone-deleted":
            changes.append(Change(raw["rev"], op))
        else:
            raise InvalidInput(f"unknown change op {brief(op)}")
    return ZoneUpdate(zone_name(data.get("zone")), since, rev, tuple(changes))


def policy_doc(document: Any) -> Policy:
    """A policy as sent in a change or a snapshot (already validated by the tower; a
    document this side cannot read is malformed input all the same)."""
    try:
        return parse_policy(document)
    except PolicyError as exc:
        raise InvalidInput(f"policy in update: {exc}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

"""Node identity on the wire: join keys, node credentials, node names (pure).

A join key is ``ajk1:<zone>:<key id>:<secret>``: the zone rides in the key, so an agent
needs no ``--zone`` to enroll. Only the SHA-256 of a secret is ever stored or sent:
Redis keeps ``#<sha256>`` for every ACL user, the tower keeps the same digest in its
registry to re-apply users after a restart or failover.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from .errors import InvalidInput

JOIN_KEY_PREFIX = "ajk1"
KEY_ID_BYTES = 6                 # 12 hex digits
SECRET_BYTES = 32
NAME_MAX = 63
ZONE_SECRET_ID = "zone"          # the credential id of a zone's agent secret

_KEY_ID_RE = re.compile(r"^[0-9a-f]{12}$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{32,128}$")
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


def digest(secret: str) -> str:
    """The SHA-256 (hex) Redis and the tower keep instead of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def check_digest(value: object, what: str = "credential digest") -> str:
    if not isinstance(value, str) or not _DIGEST_RE.fullmatch(value):
        raise InvalidInput(f"{what} must be 64 lower-case hex digits")
    return value


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


@dataclass(frozen=True)
class JoinKey:
    zone: str
    key_id: str
    secret: str

    def __str__(self) -> str:
        return f"{JOIN_KEY_PREFIX}:{self.zone}:{self.key_id}:{self.secret}"

    def __repr__(self) -> str:          # never the secret in a log or traceback
        return f"JoinKey(zone={self.zone!r}, key_id={self.key_id!r})"


def new_join_key(zone: str) -> JoinKey:
    return JoinKey(zone, secrets.token_hex(KEY_ID_BYTES), new_secret())


def parse_join_key(text: str) -> JoinKey:
    """Parse a join key; the error never repeats the key (it is a secret)."""
    from .messages import zone_name
    parts = text.strip().split(":") if isinstance(text, str) else []
    if len(parts) != 4 or parts[0] != JOIN_KEY_PREFIX:
        raise InvalidInput(f"a join key looks like {JOIN_KEY_PREFIX}:<zone>:<id>:<secret> "
                           "(as `controltower joinkey create` prints it)")
    _, zone, key_id, secret = parts
    if not _KEY_ID_RE.fullmatch(key_id) or not _SECRET_RE.fullmatch(secret):
        raise InvalidInput("the join key is malformed (cut short or mistyped?)")
    return JoinKey(zone_name(zone), key_id, secret)


def key_id(value: object) -> str:
    if not isinstance(value, str) or not _KEY_ID_RE.fullmatch(value):
        raise InvalidInput("a join key id is 12 hex digits")
    return value


def node_name(value: object, what: str = "name") -> str:
    """A node name as given (REST, CLI): a DNS label, checked, not rewritten."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise InvalidInput(f"{what} must be 1-{NAME_MAX} characters of a-z, 0-9 and '-', "
                           "not starting or ending with '-'")
    return value


def name_from_host(host: str) -> str:
    """A DNS label made from a host name: lower case, runs of other characters become
    '-', the first label of a dotted name, cut to 63 (leaving room for a suffix)."""
    label = host.strip().split(".")[0].lower()
    label = re.sub(r"[^a-z0-9]+", "-", label).strip("-")
    return label[:NAME_MAX - 4].strip("-") or "node"

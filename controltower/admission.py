"""Admitting request stream entries: parse, check the zone and the proof of possession.

No I/O: the replay guard, the only check that needs Redis, is a step of the worker.
"""
from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wire import messages, proof
from wire.errors import Forbidden, InvalidInput, MeshError
from wire.keys import Keys
from wire.logs import Throttle
from wire.messages import Request

log = logging.getLogger(__name__)

MAC_KEYS = 100_000      # nodes whose MAC key is kept (one X25519 each, else per request)


@dataclass
class Job:
    """One stream entry on its way through a batch. ``request`` is None for an entry that
    is not a valid request; ``error``: why a parsed request is answered at once (a
    MeshError refuses it, anything else fails it); ``reply`` is set once answered, and
    sent to ``channel``."""
    entry_id: str
    request: Request | None = None
    channel: str | None = None
    reply: str | None = None
    error: Exception | None = None

    @property
    def waiting(self) -> bool:
        """A valid request not answered yet."""
        return self.request is not None and self.reply is None


class Admission:
    def __init__(self, keys: Keys, tower_private: str, clock_skew: float,
                 count_invalid: Callable[[], None], throttle: Throttle | None = None) -> None:
        self.keys = keys
        self.throttle = throttle or Throttle(log)
        self.tower_private = tower_private
        self.clock_skew = clock_skew
        self.count_invalid = count_invalid     # called for each malformed registration
        self._mac_keys: OrderedDict[str, bytes] = OrderedDict()

    def admit(self, zone: str, entry_id: str, fields: dict[str, Any]) -> Job:
        """Parse and authenticate one entry. A malformed entry is answered at once when
        it names a key (``reply`` set) and dropped otherwise; a request refused for its
        zone or proof carries its ``error``."""
        job = Job(entry_id)
        try:
            payload = fields.get("m", "")
            payload = payload.encode() if isinstance(payload, str) else payload
            try:
                request = messages.parse_request(payload)
            except InvalidInput as exc:
                self._refuse_unparsed(job, zone, payload, str(exc))
                return job
        except Exception as exc:  # noqa: BLE001 - a poison entry is dropped (acknowledged)
            self.throttle.log(logging.WARNING, ("poison", zone),
                              "dropped request entry %s of zone %s: %s: %s", entry_id, zone,
                              type(exc).__name__, exc,
                              summary=f"unreadable request entries dropped on zone {zone}")
            return job
        job.request, job.channel = request, self.keys.reply(zone, request.key)
        try:
            if request.zone != zone:
                raise Forbidden(f"request for zone {request.zone} sent on the stream of "
                                f"zone {zone}")
            self._authenticate(request, payload, str(fields.get("mac", "")))
        except Exception as exc:  # noqa: BLE001 - that request's refusal or failure only
            job.error = exc
        return job

    def authenticate(self, request: Request, payload: bytes, mac: str) -> None:
        """Refuse (Forbidden) a request not signed by its key's private key, or too old."""
        self._authenticate(request, payload, mac)

    def _authenticate(self, request: Request, payload: bytes, mac: str) -> None:
        if not proof.verify(self._mac_key(request.key), payload, mac):
            raise Forbidden("bad proof of possession: the request is not signed by the "
                            "private key of this public key")
        skew = time.time() - request.ts
        if abs(skew) > self.clock_skew:
            off = f"{skew:+.0f}s" if abs(skew) < 86400 else "more than a day"
            raise Forbidden(f"request timestamp is {off} off the tower's clock "
                            f"(allowed: {self.clock_skew:.0f}s)")

    def _mac_key(self, public_key: str) -> bytes:
        key = self._mac_keys.get(public_key)
        if key is None:
            key = proof.mac_key(self.tower_private, public_key)
            self._mac_keys[public_key] = key
            if len(self._mac_keys) > MAC_KEYS:
                self._mac_keys.popitem(last=False)
        return key

    def refuse_unparsed(self, job: Job, zone: str, payload: bytes, error: str) -> None:
        self._refuse_unparsed(job, zone, payload, error)

    def _refuse_unparsed(self, job: Job, zone: str, payload: bytes, error: str) -> None:
        """Answer a malformed request when it names a valid key, else log and drop it."""
        try:
            data = json.loads(payload)
            if data.get("type") == "register":
                self.count_invalid()
            key = messages.public_key(data.get("key"))
            request_id = str(data.get("id", ""))[:64]
        except (ValueError, TypeError, AttributeError, RecursionError, MeshError):
            self.throttle.log(logging.WARNING, ("dropped", zone),
                              "dropped a malformed request on zone %s: %s", zone, error,
                              summary=f"malformed requests dropped on zone {zone}")
            return
        self.throttle.log(logging.INFO, ("malformed", zone),
                          "refused a malformed request from %s: %s", key, error,
                          summary=f"malformed requests refused on zone {zone}")
        job.channel = self.keys.reply(zone, key)
        job.reply = messages.reply(request_id, "error", False, error=error, code="invalid")

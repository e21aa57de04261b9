"""A small client of the ControlTower REST API (standard library only: urllib + ssl).

Used by the admin commands (``controltower zone|peer|leases``). Errors come in two
kinds, both in the ``wire.errors`` hierarchy: :class:`ApiError` when the API answered with
an error (its ``error`` message, as it is; also an instance of the class the status
stands for in the error table, e.g. ``NotFound`` for 404) and :class:`ApiUnreachable`
(an ``Unavailable``) when no answer came.
"""
from __future__ import annotations

import functools
import ipaddress
import json
import logging
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wire.errors import MeshError, Unavailable, class_for_status

log = logging.getLogger(__name__)

DEFAULT_API_URL = "http://127.0.0.1:8080"


class ApiError(MeshError):
    """The API answered with an error status. Made with ``ApiError.of``, an error is also
    an instance of the table's class for its status (``except NotFound`` catches a 404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @classmethod
    def of(cls, status: int, message: str) -> ApiError:
        return _api_error_class(class_for_status(status))(status, message)


@functools.cache
def _api_error_class(kind: type[MeshError]) -> type[ApiError]:
    if kind is MeshError:
        return ApiError
    return type(f"Api{kind.__name__}", (ApiError, kind), {"__module__": __name__})


class ApiUnreachable(Unavailable):
    """No HTTP answer: refused, timed out, TLS failure, bad URL."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The API never redirects; following one could carry the token elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def any(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file))

    def context(self) -> ssl.SSLContext:
        """Verify the server (system CAs, or ca_file); present a client certificate if given."""
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.cert_file:
            context.load_cert_chain(str(self.cert_file),
                                    str(self.key_file) if self.key_file else None)
        return context


class ApiClient:
    def __init__(self, base_url: str = DEFAULT_API_URL, token: str | None = None,
                 tls: TlsFiles | None = None, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the API URL must be http(s)://host[:port], not {base_url!r}")
        self.tls = tls or TlsFiles()
        if self.tls.key_file and not self.tls.cert_file:
            raise ValueError("a TLS key file needs its certificate file too")
        if self.tls.any and parts.scheme != "https":
            raise ValueError("TLS files were given but the API URL is not https://")
        if token is not None and (not token or any(c.isspace() or not c.isprintable() for c in token)):
            raise ValueError("the token must be one line of printable characters without spaces")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if parts.scheme == "https":
            try:
                handlers.append(urllib.request.HTTPSHandler(context=self.tls.context()))
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot load the TLS files: {exc}") from None
        self._opener = urllib.request.build_opener(*handlers)

    @property
    def is_loopback(self) -> bool:
        host = urllib.parse.urlsplit(self.base_url).hostname or ""
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host == "localhost"

    def url(self, path: str, query: dict[str, str] | None = None) -> str:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        return url

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, str] | None = None) -> Any:
        """The decoded JSON answer of a 2xx response; ApiError or ApiUnreachable otherwise."""
        url = self.url(path, query)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        log.debug("%s %s", method, url)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return _decode(resp.status, resp.read(), url)
        except urllib.error.HTTPError as exc:
            raise _api_error(exc) from None
        except urllib.error.URLError as exc:
            raise ApiUnreachable(f"cannot reach the ControlTower at {self.base_url}: "
                                 f"{_reason(exc.reason)}") from None
        except (TimeoutError, socket.timeout):
            raise ApiUnreachable(f"the ControlTower at {self.base_url} did not answer within "
                                 f"{self.timeout:g}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise ApiUnreachable(f"cannot reach the ControlTower at {self.base_url}: "
                                 f"{_reason(exc)}") from None

    # -- the API's operations ----------------------------------------------------------

    def create_zone(self, name: str, cidr: str, description: str | None = None) -> Any:
        body = {"Name": name, "CIDR": cidr}
        if description is not None:
            body["Description"] = description
        return self.request("POST", "/zones", body)

    def list_zones(self) -> Any:
        return self.request("GET", "/zones")

    def show_zone(self, name: str) -> Any:
        return self.request("GET", f"/zones/{_segment(name)}")

    def delete_zone(self, name: str, force: bool = False) -> Any:
        return self.request("DELETE", f"/zones/{_segment(name)}",
                            query={"force": "true"} if force else None)

    def zone_paths(self, name: str, node: str | None = None) -> Any:
        return self.request("GET", f"/zones/{_segment(name)}/paths",
                            query={"node": node} if node else None)

    def rotate_secret(self, name: str) -> Any:
        return self.request("POST", f"/zones/{_segment(name)}/rotate-secret")

    def list_peers(self, zone: str | None = None) -> Any:
        return self.request("GET", "/peers", query={"zone": zone} if zone else None)

    def show_peer(self, key: str) -> Any:
        return self.request("GET", f"/peers/{_segment(key)}")

    def delete_peer(self, key: str) -> Any:
        return self.request("DELETE", f"/peers/{_segment(key)}")

    def leases(self, zone: str) -> Any:
        return self.request("GET", f"/ipam/leases/{_segment(zone)}")

    def update_zone(self, name: str, settings: dict[str, Any]) -> Any:
        return self.request("PATCH", f"/zones/{_segment(name)}", settings)

    def zone_routes(self, name: str) -> Any:
        return self.request("GET", f"/zones/{_segment(name)}/routes")

    def create_join_key(self, zone: str, options: dict[str, Any]) -> Any:
        return self.request("POST", f"/zones/{_segment(zone)}/join-keys", options)

    def list_join_keys(self, zone: str) -> Any:
        return self.request("GET", f"/zones/{_segment(zone)}/join-keys")

    def revoke_join_key(self, zone: str, key_id: str) -> Any:
        return self.request("DELETE", f"/zones/{_segment(zone)}/join-keys/{_segment(key_id)}")

    def approve_routes(self, node: str, approve: list[str], revoke: list[str]) -> Any:
        return self.request("POST", f"/peers/{_segment(node)}/routes",
                            {"Approve": approve, "Revoke": revoke})

    def renew(self, node: str) -> Any:
        return self.request("POST", f"/peers/{_segment(node)}/renew")

    def set_tags(self, node: str, tags: list[str]) -> Any:
        return self.request("PUT", f"/peers/{_segment(node)}/tags", {"Tags": tags})

    def show_policy(self, zone: str) -> Any:
        return self.request("GET", f"/zones/{_segment(zone)}/policy")

    def set_policy(self, zone: str, document: Any) -> Any:
        return self.request("PUT", f"/zones/{_segment(zone)}/policy", document)

    def delete_policy(self, zone: str) -> Any:
        return self.request("DELETE", f"/zones/{_segment(zone)}/policy")

    def test_policy(self, zone: str, source: str, dest: str, port: str) -> Any:
        return self.request("GET", f"/zones/{_segment(zone)}/policy/test",
                            query={"from": source, "to": dest, "port": port})


def _segment(value: str) -> str:
    """One path segment: '/', '+', '=' and the rest percent-encoded."""
    return urllib.parse.quote(value, safe="")


def _decode(status: int, raw: bytes, url: str) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        raise ApiError.of(status, f"the answer from {url} is not JSON "
                                  "(is --api-url the ControlTower's REST API?)") from None


def _api_error(exc: urllib.error.HTTPError) -> ApiError:
    try:
        raw = exc.read()
    except OSError:
        raw = b""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return ApiError.of(exc.code, data["error"])
    return ApiError.of(exc.code, f"HTTP {exc.code} {exc.reason}")


def _reason(reason: object) -> str:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed ({reason.verify_message}); see --ca-file"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)

"""Hostile input to a running tower's REST API: always a JSON 4xx, never a 500 or an HTML
page, never unbounded work (issue 15, item 2)."""
from __future__ import annotations

import http.client
import json
import socket
import time

import pytest


def raw(tower, method: str, path: str, body: bytes = b"", headers: dict | None = None,
        timeout: float = 20) -> tuple[int, str, bytes]:
    """One request on its own connection: (status, Content-Type, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", tower.port, timeout=timeout)
    try:
        conn.request(method, path, body=body,
                     headers={"Authorization": f"Bearer {tower.token}", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def json_error(status: int, content_type: str, body: bytes) -> str:
    assert content_type.startswith("application/json"), (status, content_type, body[:200])
    return json.loads(body)["error"]


@pytest.mark.parametrize("body, words", [
    ('{"Name": "z1", "CIDR": "10.1.0.0/24", "Description": "\\ud800"}', "Description is not valid"),
    ('{"Name": "\\udfff", "CIDR": "10.1.0.0/24"}', "Name is not valid"),
    ('{"Name": "z1", "CIDR": "\\ud800/24"}', "CIDR"),
    ('{"\\ud800": 1}', "unknown fields"),
    ("[" * 60_000, "nested too deeply"),                  # under the 64 KiB limit
    ('{"CIDR": "10.1.0.0/24", "Name": ' + "[" * 500 + "]" * 500 + "}", "Name must be a str"),
    ("\xff\xfe", "not valid JSON"),
])
def test_bad_bodies_are_400(module_tower, body, words):
    data = body.encode("utf-8", "surrogatepass") if "\xff" not in body else b"\xff\xfe"
    status, content_type, answer = raw(module_tower, "POST", "/zones", data,
                                       {"Content-Type": "application/json"})
    assert status == 400 and words in json_error(status, content_type, answer)


def test_a_huge_body_is_refused_unread(module_tower):
    """10 MB announced: 413 at once, before the body is sent (nothing of it is read)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", module_tower.port), timeout=10) as conn:
        conn.sendall(f"POST /zones HTTP/1.1\r\nHost: tower\r\nContent-Length: 10000000\r\n"
                     f"Authorization: Bearer {module_tower.token}\r\n"
                     "Content-Type: application/json\r\n\r\n".encode() + b" " * 1000)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"application/json" in head, head
    assert json.loads(body)["error"]
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("path, headers, status", [
    ("/zones/" + "a" * 9000, {}, 414),
    ("/zones", {"X-Big": "b" * 20_000}, 431),
])
def test_gunicorns_own_refusals_are_json(module_tower, path, headers, status):
    got, content_type, answer = raw(module_tower, "GET", path, headers=headers)
    assert got == status and json_error(got, content_type, answer)


def test_nothing_above_left_a_traceback(module_tower):
    for body in ('{"Name": "z1", "CIDR": "10.1.0.0/24", "Description": "\\ud800"}',
                 "[" * 60_000):
        raw(module_tower, "POST", "/zones", body.encode("utf-8", "surrogatepass"))
    text = module_tower.log_text()
    assert "Traceback" not in text and " 500 " not in text

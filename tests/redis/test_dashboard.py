"""The dashboard at /ui/ through Flask's test client on a real Redis: login with the admin
token (session cookie, constant-time compare, logout ends the session), --read-auth,
CSRF on every write, join keys shown once, node removal, live updates (304 until the
zone changes), and no dashboard without an admin token."""
from __future__ import annotations

import re

import pytest

from controltower.dashboard import login as dashboard_login
from testbed import zonefill

TOKEN = "admin-token-for-the-dashboard-tests"


@pytest.fixture
def app_config():
    return {"ADMIN_TOKEN": TOKEN, "READ_AUTH": True, "AGENT_ACL": True}


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def log_in(client, token: str = TOKEN):
    page = client.get("/ui/login")
    return client.post("/ui/login", data={"token": token, "csrf": csrf_of(page.text)})


def test_pages_need_a_login_with_the_admin_token(client):
    first = client.get("/ui/zones/default")
    assert first.status_code == 302
    assert first.headers["Location"].startswith("/ui/login?next=/ui/zones/default")
    assert client.get("/ui/live").status_code == 401           # live polls: no redirect
    wrong = log_in(client, "not-the-token")
    assert wrong.status_code == 403 and "not valid" in wrong.text
    assert client.get("/ui/").status_code == 302
    right = log_in(client)
    assert right.status_code == 303 and right.headers["Location"] == "/ui/"
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie
    assert "Secure" not in cookie                               # plain HTTP here
    page = client.get("/ui/")
    assert page.status_code == 200 and ">default</a>" in page.text
    assert "no-store" in page.headers["Cache-Control"]
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


def test_the_login_goes_back_only_to_a_dashboard_page(client):
    page = client.get("/ui/login?next=//evil.example/x")
    answer = client.post("/ui/login", data={"token": TOKEN, "csrf": csrf_of(page.text),
                                            "next": "//evil.example/x"})
    assert answer.headers["Location"] == "/ui/"
    page = client.get("/ui/login")
    answer = client.post("/ui/login", data={"token": TOKEN, "csrf": csrf_of(page.text),
                                            "next": "/ui/zones/default"})
    assert answer.headers["Location"] == "/ui/zones/default"


def test_logout_ends_the_session_even_for_a_copied_cookie(app, client):
    log_in(client)
    cookie = client.get_cookie(dashboard_login.COOKIE, path="/ui/").value
    page = client.get("/ui/")
    assert page.status_code == 200
    assert client.post("/ui/logout", data={"csrf": csrf_of(page.text)}).status_code == 303
    assert client.get("/ui/").status_code == 302
    replay = app.test_client()
    replay.set_cookie(dashboard_login.COOKIE, cookie, path="/ui/")
    assert replay.get("/ui/").status_code == 302               # the session is gone in Redis


def test_a_write_without_the_csrf_token_is_refused_and_does_nothing(app, client, store):
    log_in(client)
    node = zonefill.add_node(store, "default", "victim", "cone")
    for data in ({"key": node.key}, {"key": node.key, "csrf": "forged"}):
        answer = client.post("/ui/zones/default/remove", data=data)
        assert answer.status_code == 403 and "CSRF" in answer.text
    assert [p.key for p in store.peers("default")] == [node.key]
    page = client.get("/ui/zones/default")
    foreign = client.post("/ui/zones/default/remove", headers={"Origin": "http://evil.example"},
                          data={"key": node.key, "csrf": csrf_of(page.text)})
    assert foreign.status_code == 403 and "another origin" in foreign.text
    assert [p.key for p in store.peers("default")] == [node.key]


def test_remove_a_node_after_confirmation(client, store):
    log_in(client)
    node = zonefill.add_node(store, "default", "doomed", "cone")
    keep = zonefill.add_node(store, "default", "kept", "open")
    zone_page = client.get("/ui/zones/default")
    assert "doomed" in zone_page.text and "kept" in zone_page.text
    confirm = client.get("/ui/zones/default/remove", query_string={"key": node.key})
    assert confirm.status_code == 200 and "Remove node doomed" in confirm.text
    assert {p.key for p in store.peers("default")} == {node.key, keep.key}   # asked only
    done = client.post("/ui/zones/default/remove",
                       data={"key": node.key, "csrf": csrf_of(confirm.text)})
    assert done.status_code == 303
    assert [p.key for p in store.peers("default")] == [keep.key]
    bad = client.get("/ui/zones/default/remove", query_string={"key": "not-a-key"})
    assert bad.status_code == 400 and "<!doctype html>" in bad.text


def test_join_key_is_shown_once_then_revoked(client):
    log_in(client)
    page = client.get("/ui/zones/default")
    made = client.post("/ui/zones/default/join-keys",
                       data={"csrf": csrf_of(page.text), "description": "for the lab",
                             "tags": "lab web", "expires": "7d"})
    assert made.status_code == 201
    key = re.search(r'id="new-key" class="secret" readonly value="([^"]+)"', made.text).group(1)
    key_id = re.search(r"<dt>Id</dt><dd>([^<]+)</dd>", made.text).group(1)
    again = client.get("/ui/zones/default")
    assert key_id in again.text and key not in again.text and "for the lab" in again.text
    assert "lab, web" in again.text
    revoked = client.post(f"/ui/zones/default/join-keys/{key_id}/revoke",
                          data={"csrf": csrf_of(again.text)})
    assert revoked.status_code == 303
    assert "key-revoked" in client.get("/ui/zones/default").text
    bad = client.post("/ui/zones/default/join-keys", data={"csrf": csrf_of(again.text),
                                                           "expires": "forever"})
    assert bad.status_code == 400 and "expiry must be one of" in bad.text


def test_live_part_is_304_until_the_zone_changes(client, store):
    log_in(client)
    page = client.get("/ui/zones/default")
    version = re.search(r'data-version="([^"]+)"', page.text).group(1)
    same = client.get("/ui/zones/default/live", headers={"If-None-Match": f'"{version}"'})
    assert same.status_code == 304 and not same.data
    zonefill.add_node(store, "default", "newcomer", "cone")
    changed = client.get("/ui/zones/default/live", headers={"If-None-Match": f'"{version}"'})
    assert changed.status_code == 200 and "newcomer" in changed.text
    assert changed.headers["ETag"].strip('"') != version
    assert "<html" not in changed.text                      # a fragment, not a page
    zones = client.get("/ui/")
    zversion = re.search(r'data-version="([^"]+)"', zones.text).group(1)
    assert client.get("/ui/live", headers={"If-None-Match": f'"{zversion}"'}).status_code == 304


def test_pending_prefix_approved_from_the_nodes_table(app, client, store):
    log_in(client)
    node = zonefill.add_node(store, "default", "router", "cone", pending=("192.168.77.0/24",))
    # Approval is the registry's: enroll-less nodes are refused with a clear message.
    page = client.get("/ui/zones/default")
    assert "192.168.77.0/24" in page.text and "pending" in page.text
    answer = client.post("/ui/zones/default/approve", data={
        "csrf": csrf_of(page.text), "key": node.key, "prefix": "192.168.77.0/24"})
    assert answer.status_code == 409 and "not enrolled" in answer.text


def test_api_bearer_auth_is_unchanged(client):
    assert client.get("/zones").status_code == 401
    assert client.get("/zones", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    log_in(client)
    assert client.get("/zones").status_code == 401          # a dashboard cookie is no token


@pytest.mark.parametrize("app_config", [{"ADMIN_TOKEN": TOKEN, "READ_AUTH": False}])
def test_open_reads_show_pages_but_writes_need_a_login(client, store):
    node = zonefill.add_node(store, "default", "visible", "cone")
    page = client.get("/ui/zones/default")
    assert page.status_code == 200 and "visible" in page.text
    csrf = csrf_of(client.get("/ui/login").text)
    answer = client.post("/ui/zones/default/remove", data={"key": node.key, "csrf": csrf})
    assert answer.status_code == 302 and "/ui/login" in answer.headers["Location"]
    assert [p.key for p in store.peers("default")] == [node.key]


@pytest.mark.parametrize("app_config", [{"ADMIN_TOKEN": None, "READ_AUTH": False}])
def test_without_an_admin_token_the_dashboard_refuses(client):
    for path in ("/ui/", "/ui/login", "/ui/zones/default"):
        answer = client.get(path)
        assert answer.status_code == 403 and "no admin token" in answer.text
    assert client.get("/ui/static/dashboard.js").status_code == 200


@pytest.mark.parametrize("app_config", [{"ADMIN_TOKEN": TOKEN, "READ_AUTH": True,
                                         "SESSION_COOKIE_SECURE": True}])
def test_cookie_is_secure_when_the_tower_serves_https(client):
    assert "Secure" in log_in(client).headers["Set-Cookie"]


def test_a_new_admin_token_ends_every_session(redis_proc):
    from controltower.app import create_app
    first = create_app({"REDIS_URL": redis_proc.url, "ADMIN_TOKEN": TOKEN, "READ_AUTH": True})
    first.extensions["zone_store"].ensure_default_zone()
    client = first.test_client()
    log_in(client)
    cookie = client.get_cookie(dashboard_login.COOKIE, path="/ui/").value
    second = create_app({"REDIS_URL": redis_proc.url, "ADMIN_TOKEN": "another", "READ_AUTH": True})
    other = second.test_client()
    other.set_cookie(dashboard_login.COOKIE, cookie, path="/ui/")
    assert other.get("/ui/").status_code == 302

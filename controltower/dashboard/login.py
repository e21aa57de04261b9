"""Who may use the dashboard: a login with the admin token makes a session, a CSRF token
guards every write.

The session cookie (Flask's, signed with a key derived from the admin token, so a new
token ends every session) holds a random session id and the CSRF token; the session is
valid while Redis holds the id's digest (``SESSION_SECONDS``, ended at once by logout).
The cookie is HttpOnly, SameSite=Strict, limited to /ui/, and Secure when the tower
serves HTTPS. Reads need a login when the API's reads need the token (``READ_AUTH``);
writes always do. Without an admin token the dashboard refuses everything: nobody could
log in, and an open write surface in a browser is what CSRF attacks are made of.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import timedelta

from flask import Flask, current_app, request, session

from wire.keys import Keys

log = logging.getLogger(__name__)

SESSION_SECONDS = 12 * 3600
COOKIE = "ct_dashboard"


class Refused(Exception):
    """A dashboard request refused: ``status`` and a message for people."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def init_app(app: Flask) -> None:
    token = app.config.get("ADMIN_TOKEN")
    if token:
        app.secret_key = hmac.new(token.encode(), b"controltower dashboard session",
                                  hashlib.sha256).digest()
    app.config.update(SESSION_COOKIE_NAME=COOKIE, SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_PATH="/ui/",
                      PERMANENT_SESSION_LIFETIME=timedelta(seconds=SESSION_SECONDS))
    app.config.setdefault("SESSION_COOKIE_SECURE", False)


def _redis_key(sid: str) -> str:
    keys: Keys = current_app.extensions["zone_store"].keys
    return keys.dashboard_session(hashlib.sha256(sid.encode()).hexdigest())


def _redis():
    return current_app.extensions["zone_store"].redis


def token_configured() -> bool:
    return bool(current_app.config.get("ADMIN_TOKEN"))


def csrf_token() -> str:
    """This browser's CSRF token (made on its first page)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def check_csrf() -> None:
    expected = session.get("csrf")
    given = request.form.get("csrf", "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Refused(403, "this form is stale or did not come from the dashboard "
                           "(CSRF token missing or wrong): reload the page and try again")
    origin = request.headers.get("Origin")
    if origin and origin != "null" and origin.rstrip("/") != request.host_url.rstrip("/"):
        raise Refused(403, f"a write from another origin ({origin}) is refused")


def logged_in() -> bool:
    sid = session.get("sid")
    return bool(sid) and bool(_redis().exists(_redis_key(sid)))


def log_in(given: str) -> bool:
    """Constant-time compare of ``given`` with the admin token; a new session if equal."""
    token = current_app.config.get("ADMIN_TOKEN") or ""
    if not token or not hmac.compare_digest(given.strip().encode(), token.encode()):
        log.warning("dashboard login refused from %s", request.remote_addr)
        return False
    sid = secrets.token_urlsafe(32)
    _redis().set(_redis_key(sid), "1", ex=SESSION_SECONDS)
    session.clear()
    session.permanent = True
    session["sid"] = sid
    session["csrf"] = secrets.token_urlsafe(24)        # a new one: none from before login
    log.info("dashboard login from %s", request.remote_addr)
    return True


def log_out() -> None:
    sid = session.get("sid")
    if sid:
        _redis().delete(_redis_key(sid))
    session.clear()


def reads_need_login() -> bool:
    return bool(current_app.config.get("READ_AUTH"))

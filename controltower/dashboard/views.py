"""The dashboard's pages and forms (blueprint ``dashboard``, mounted at /ui/)."""
from __future__ import annotations

import logging
import time
from typing import Any

from flask import (Blueprint, Response, current_app, make_response, redirect, render_template,
                   request, url_for)

from wire import messages
from wire.errors import InvalidInput, MeshError, http_status

from .. import joinkeys
from ..db import credentials, nodes, store
from . import login, zoneview
from .login import Refused

log = logging.getLogger(__name__)

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")

PAGE_SIZE = 100
OPEN_ENDPOINTS = ("dashboard.static", "dashboard.login_page", "dashboard.login_submit",
                  "dashboard.logout")
LIVE_ENDPOINTS = ("dashboard.zones_live", "dashboard.zone_live")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
EXPIRES = {"1h": 3600, "1d": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


# -- who may do what ---------------------------------------------------------------------

@bp.before_request
def guard() -> Response | None:
    if request.endpoint == "dashboard.static":
        return None
    if not login.token_configured():
        raise Refused(403, "the tower has no admin token configured, so nobody can log in: "
                           "start it with --admin-token-file (controltower serve makes one)")
    if request.method == "POST":
        login.check_csrf()
    if request.endpoint in OPEN_ENDPOINTS or login.logged_in():
        return None
    if request.method == "POST" or login.reads_need_login():
        if request.endpoint in LIVE_ENDPOINTS:
            raise Refused(401, "log in first")
        return redirect(url_for(".login_page", next=request.full_path.rstrip("?")))
    return None


@bp.after_request
def headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(Refused)
def refused(exc: Refused):
    return _error(str(exc), exc.status)


@bp.errorhandler(MeshError)
def mesh_error(exc: MeshError):
    return _error(str(exc), http_status(exc))


def _error(message: str, status: int):
    if request.endpoint in LIVE_ENDPOINTS:
        return Response(message, status, mimetype="text/plain")
    return render_template("error.html", message=message, status=status), status


@bp.app_context_processor
def context() -> dict[str, Any]:
    return {"csrf_token": login.csrf_token, "logged_in": login.logged_in,
            "reads_need_login": login.reads_need_login}


@bp.app_template_filter("ago")
def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "never"
    seconds = max(0, int((now or time.time()) - ts))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 172800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


@bp.app_template_filter("when")
def when(ts: float | None) -> str:
    if not ts:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


# -- login ---------------------------------------------------------------------------------

def _next(default: str) -> str:
    target = request.values.get("next", "")
    # Only a path of the dashboard itself: never an open redirect.
    if target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


@bp.get("/login")
def login_page():
    return render_template("login.html", next=_next(""), failed=False)


@bp.post("/login")
def login_submit():
    if login.log_in(request.form.get("token", "")):
        return redirect(_next(url_for(".zones")), 303)
    return render_template("login.html", next=_next(""), failed=True), 403


@bp.post("/logout")
def logout():
    login.log_out()
    return redirect(url_for(".login_page"), 303)


# -- zones -------------------------------------------------------------------------------

@bp.get("/")
def zones():
    return render_template("zones.html", rows=zoneview.zones(store()),
                           version=zoneview.zones_version(store()))


@bp.get("/live")
def zones_live():
    version = zoneview.zones_version(store())
    if _unchanged(version):
        return _not_modified(version)
    return _live(render_template("_zones_live.html", rows=zoneview.zones(store())), version)


def _offline_after() -> float:
    return float(current_app.config["OFFLINE_AFTER"])


def _page() -> int:
    try:
        page = int(request.args.get("page", "1"))
    except ValueError:
        raise InvalidInput("page must be a number") from None
    if page < 1:
        raise InvalidInput("page must be 1 or more")
    return page


def _zone_context(name: str) -> dict[str, Any]:
    view = zoneview.zone_view(store(), credentials(), messages.zone_name(name), time.time(),
                              _offline_after())
    page = _page()
    pages = max(1, -(-len(view.nodes) // PAGE_SIZE))
    page = min(page, pages)
    return {"view": view, "page": page, "pages": pages,
            "rows": view.nodes[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]}


@bp.get("/zones/<name>")
def zone(name: str):
    return render_template("zone.html", **_zone_context(name))


@bp.get("/zones/<name>/live")
def zone_live(name: str):
    zone_name = store().get_zone(messages.zone_name(name)).name
    version = zoneview.version(store(), zone_name, time.time(), _offline_after())
    if _unchanged(version):
        return _not_modified(version)
    ctx = _zone_context(zone_name)
    return _live(render_template("_zone_live.html", **ctx), ctx["view"].version)


def _unchanged(version: str) -> bool:
    return request.headers.get("If-None-Match", "").strip('"') == version


def _not_modified(version: str) -> Response:
    response = Response(status=304)
    response.headers["ETag"] = f'"{version}"'
    return response


def _live(html: str, version: str) -> Response:
    response = make_response(html)
    response.headers["ETag"] = f'"{version}"'
    return response


# -- writes --------------------------------------------------------------------------------

@bp.post("/zones/<name>/join-keys")
def create_join_key(name: str):
    zone_ = store().get_zone(messages.zone_name(name))
    form = request.form
    expires = form.get("expires", "1d")
    if expires not in EXPIRES:
        raise InvalidInput(f"expiry must be one of {', '.join(EXPIRES)}")
    options: dict[str, Any] = {"ExpiresIn": EXPIRES[expires],
                               "Reusable": form.get("reusable") == "on",
                               "Ephemeral": form.get("ephemeral") == "on",
                               "Description": form.get("description", "").strip(),
                               "Tags": [t for t in form.get("tags", "").replace(",", " ").split()]}
    key, record = joinkeys.create(credentials(), zone_, options)
    log.info("dashboard: join key %s of zone %s created", record.id, zone_.name)
    return render_template("join_key.html", zone=zone_, key=key, record=record), 201


@bp.post("/zones/<name>/join-keys/<key_id>/revoke")
def revoke_join_key(name: str, key_id: str):
    zone_name = store().get_zone(messages.zone_name(name)).name
    joinkeys.revoke(credentials(), zone_name, key_id)
    return redirect(url_for(".zone", name=zone_name) + "#join-keys", 303)


def _found(name: str):
    zone_name = store().get_zone(messages.zone_name(name)).name
    key = messages.public_key(request.values.get("key", ""))
    return nodes().find(key, zone_name)


@bp.get("/zones/<name>/remove")
def confirm_remove(name: str):
    found = _found(name)
    return render_template("remove.html", found=found,
                           label=zoneview.label(found.peer) if found.peer else
                           (found.node.name if found.node else found.key))


@bp.post("/zones/<name>/remove")
def remove(name: str):
    found = _found(name)
    nodes().remove(found, "deleted")
    log.info("dashboard: node %s of zone %s removed", found.key, found.zone)
    return redirect(url_for(".zone", name=found.zone), 303)


@bp.post("/zones/<name>/approve")
def approve(name: str):
    found = _found(name)
    prefix = request.form.get("prefix", "")
    nodes().approve(found, [prefix], [])
    return redirect(url_for(".zone", name=found.zone) + "#nodes", 303)

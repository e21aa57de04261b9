"""``dashboard``: the dashboard of a 1,000-node zone in headless Chromium.

Against a real redis-server and ``controltower serve`` (reads need the token): a zone of
``--nodes`` nodes (written by the register script, a mix of NAT types, 1 in 50 offline)
and a zone of 16 (every pair drawn); every online node has sent its path report (direct
to its online peers, as many as an agent's report holds). One headless Chromium (Debian's, through selenium)
logs in and loads each zone page ``--rounds`` times. Reported per zone, from the
browser's Navigation Timing: the time to the load event (request sent to page laid out
and scripts run; target <= 1 s at 1,000 nodes), the server's share (to the last response
byte), the page's bytes (HTML; its CSS and JS are ~10 kB more, cached after the first
load), and the SVG elements drawn. ``first_load_ms``: the very first load of the large
zone, when the tower reads every path report (~12 MB at 1,000 nodes); later loads reuse
that reading until the zone's version changes (a node on- or offline, or 10 s passed,
when one of the 10 loads pays it again). Then the live updates' cost: ``--polls`` conditional
requests of the 1,000-node zone's live part (the zone unchanged: answered 304, but for
the refresh of a large zone's paths every 10 s, counted apart), and one answered 200
after a node joined (its bytes).
"""
from __future__ import annotations

import argparse
import http.cookiejar
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ipam.store import ZoneStore
from testbed import browser, zonefill
from testbed.redisserver import RedisProcess
from testbed.tower import TowerProcess

from .report import Target, percentile

TARGETS = [Target("load_ms_p50", "<=", 1000.0), Target("first_load_ms", "<=", 1000.0)]
HEADLINE = ["nodes", "load_ms_p50", "load_ms_max", "server_ms_p50", "first_load_ms", "html_bytes",
            "svg_elements", "small_load_ms_p50", "small_html_bytes", "poll_304_ms_p50",
            "poll_304_ms_p99", "poll_200_bytes"]
SMALL = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=1000, help="nodes of the large zone")
    parser.add_argument("--rounds", type=int, default=10, help="page loads per zone")
    parser.add_argument("--polls", type=int, default=200, help="conditional polls timed")


def _loads(b: browser.Browser, url: str, rounds: int) -> dict[str, Any]:
    load, server, timing = [], [], {}
    for _ in range(rounds):
        b.get(url)
        b.wait(lambda: b.timing()["load"] > 0, 30, "the load event")
        timing = b.timing()
        load.append(timing["load"])
        server.append(timing["response"])
    svg = b.driver.execute_script("return document.querySelectorAll('svg#topology *').length;")
    return {"load_ms_p50": round(percentile(load, 50), 1), "load_ms_max": round(max(load), 1),
            "server_ms_p50": round(percentile(server, 50), 1),
            "html_bytes": int(timing["body"]), "svg_elements": int(svg)}


def _polls(base: str, token: str, zone: str, store: ZoneStore, polls: int) -> dict[str, Any]:
    """Conditional polls as the page's script makes them, with a logged-in session."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base}/ui/login").read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"token": token, "csrf": csrf}).encode()
    opener.open(f"{base}/ui/login", data=data).read()
    first = opener.open(f"{base}/ui/zones/{zone}/live")
    first.read()
    etag = first.headers["ETag"]
    times, refreshed = [], 0
    for _ in range(polls):
        request = urllib.request.Request(f"{base}/ui/zones/{zone}/live",
                                         headers={"If-None-Match": etag})
        started = time.perf_counter()
        try:
            answer = opener.open(request)
            answer.read()
            etag = answer.headers["ETag"]       # a large zone's 10 s refresh of its paths
            refreshed += 1
            continue
        except urllib.error.HTTPError as exc:
            if exc.code != 304:
                raise
        times.append((time.perf_counter() - started) * 1000)
    zonefill.add_node(store, zone, "late-joiner", "cone")
    store.flush(zone)
    changed = opener.open(urllib.request.Request(f"{base}/ui/zones/{zone}/live",
                                                 headers={"If-None-Match": etag}))
    body = changed.read()
    return {"poll_304_ms_p50": round(percentile(times, 50), 2),
            "poll_304_ms_p99": round(percentile(times, 99), 2),
            "poll_200_bytes": len(body), "polls": polls, "polls_refreshed": refreshed}


def run(args: argparse.Namespace) -> dict[str, Any]:
    why = browser.missing()
    if why:
        return {"not_run": why}
    root = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    redis_proc = RedisProcess(root / "redis").start()
    tower = TowerProcess(redis_proc.url, root / "tower",
                         extra=["--stun-port", "0", "--read-auth", "token"])
    try:
        tower.start()
        store = ZoneStore(redis_proc.client())
        store.create_zone("big", "10.160.0.0/16")
        store.create_zone("small", "10.170.0.0/24")
        started = time.monotonic()
        zonefill.fill(store, "big", args.nodes, offline_every=50)
        zonefill.fill(store, "small", SMALL, offline_every=8)
        fill_s = time.monotonic() - started
        with browser.Browser() as b:
            b.login(tower.api, tower.token)
            b.get(f"{tower.api}/ui/zones/big")            # CSS and JS now cached, as in use
            b.wait(lambda: b.timing()["load"] > 0, 30, "the load event")
            first = b.timing()                           # and the tower read the reports
            big = _loads(b, f"{tower.api}/ui/zones/big", args.rounds)
            big["first_load_ms"] = round(first["load"], 1)
            big["first_server_ms"] = round(first["response"], 1)
            small = _loads(b, f"{tower.api}/ui/zones/small", args.rounds)
        polls = _polls(tower.api, tower.token, "big", store, args.polls)
        return {"nodes": args.nodes, **big,
                **{f"small_{k}": v for k, v in small.items()}, "small_nodes": SMALL,
                **polls, "rounds": args.rounds, "fill_s": round(fill_s, 1)}
    finally:
        tower.stop()
        redis_proc.cleanup()

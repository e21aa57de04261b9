"""The dashboard in headless Chromium against a real ``controltower serve`` (reads need
the token): the login, the picture of a zone (every node, edge colours by path: direct,
relayed, down, from the nodes' path reports), a node
joining shows within 2 s without a reload, a write without the CSRF token is refused,
keyboard use and contrast. Screenshots go to ``browser.screenshot_dir()`` (``make
screenshots``: docs/images/, shown in README and docs/dashboard.md).

The nodes are written into the zone store as the request worker would; real agents
in the lab are tests/netns/test_dashboard_lab.py."""
from __future__ import annotations

import time

import pytest

from controltower.relay.directory import Directory, RelayRecord
from ipam.store import ZoneStore
from testbed import browser, zonefill
from testbed.tower import TowerProcess

pytestmark = pytest.mark.slow
if browser.missing():
    pytestmark = [pytestmark, pytest.mark.skip(reason=browser.missing())]

IMAGES = browser.screenshot_dir()
COLOURS = {"direct": "rgb(26, 127, 55)", "down": "rgb(207, 34, 46)",
           "relayed": "rgb(154, 103, 0)"}
JOIN_WITHIN = 8.0
RELAY = "tower-0a1b2c3d"          # the target is 2 s; headroom for a busy machine


@pytest.fixture(scope="module")
def tower(module_redis, tmp_path_factory):
    proc = TowerProcess(module_redis.url, tmp_path_factory.mktemp("tower"),
                        extra=["--stun-port", "0", "--read-auth", "token"])
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def zones(module_redis, tower):
    store = ZoneStore(module_redis.client())
    store.create_zone("lab", "10.150.0.0/24", "Lab zone")
    lab = {name: zonefill.add_node(store, "lab", name, nat, endpoint, online, **extra)
           for name, nat, endpoint, online, extra in (
               ("pub1", "open", "203.0.113.10:51820", True, {"tags": ("server",)}),
               ("pub2", "open", "203.0.113.11:51820", True, {}),
               ("laptop", "cone", "203.0.113.100:51820", True,
                {"child_prefixes": ("192.168.50.0/24",), "pending": ("192.168.60.0/24",)}),
               ("phone", "symmetric", "203.0.113.101:40112", True, {}),
               ("nas", "cone", "203.0.113.102:51820", False, {}))}
    # The tower's relay, and each online node's path report as its agent sends it: the
    # laptop (cone NAT) and the phone (symmetric NAT) reach each other through the relay.
    Directory(store.redis, RelayRecord(RELAY, "tower", None, 3480, zonefill.fake_key("relay"),
                                       ("*",), time.time())).announce()
    up = ("pub1", "pub2", "laptop", "phone")
    for name in up:
        zonefill.report(store, "lab", lab[name], {
            lab[other].address: ("r", RELAY) if {name, other} == {"laptop", "phone"}
            else ("d", None) for other in up if other != name})
    store.flush("lab")
    return store, lab


@pytest.fixture(scope="module")
def chrome():
    with browser.Browser() as b:
        yield b


def edge(b: browser.Browser, a: str, c: str):
    index = {n.get_attribute("data-key"): n.get_attribute("data-i")
             for n in b.css("svg#topology a.node")}
    found = [e for e in b.css("svg#topology .edge[data-a]")
             if {e.get_attribute("data-a"), e.get_attribute("data-b")} == {index[a], index[c]}]
    assert len(found) == 1, f"{len(found)} edges between {a} and {c}"
    return found[0]


def test_no_token_gives_the_login_page_and_a_wrong_token_is_refused(tower, chrome):
    chrome.get(f"{tower.api}/ui/zones/lab")
    assert "/ui/login" in chrome.driver.current_url
    assert chrome.one("label[for=token]").text == "Admin token"
    chrome.screenshot(IMAGES / "dashboard-login.png", full_page=False)
    chrome.one("#token").send_keys("wrong-token")
    chrome.one("#login-form button[type=submit]").click()
    error = chrome.wait(lambda: chrome.css("#login-error"), 10, "the refusal")[0]
    assert "not valid" in error.text
    assert "/ui/login" in chrome.driver.current_url
    chrome.get(f"{tower.api}/ui/")
    assert "/ui/login" in chrome.driver.current_url              # still not in


def test_the_picture_shows_every_node_and_edge_colours_by_path(tower, zones, chrome):
    store, lab = zones
    chrome.login(tower.api, tower.token)
    chrome.get(f"{tower.api}/ui/")
    row = [r for r in chrome.css("#zones tbody tr") if r.text.startswith("lab")][0]
    assert "5" in row.text and "5 / 254" in row.text
    chrome.screenshot(IMAGES / "dashboard-zones.png", full_page=False)
    chrome.get(f"{tower.api}/ui/zones/lab")
    drawn = {a.get_attribute("data-key") for a in chrome.css("svg#topology a.node:not(.relay)")}
    assert drawn == {n.key for n in lab.values()}
    assert len(chrome.css("svg#topology .edge[data-a]")) == 10
    counts = chrome.one("#summary").text
    assert "5 direct" in counts and "1 relayed" in counts and "4 down" in counts
    direct = edge(chrome, lab["pub1"].key, lab["laptop"].key)
    relayed = edge(chrome, lab["laptop"].key, lab["phone"].key)
    down = edge(chrome, lab["phone"].key, lab["nas"].key)
    assert "direct" in direct.get_attribute("class")
    assert direct.value_of_css_property("stroke") == COLOURS["direct"]
    assert "relayed" in relayed.get_attribute("class")
    assert relayed.value_of_css_property("stroke") == COLOURS["relayed"]
    assert RELAY in relayed.find_element("css selector", "title").get_attribute("textContent")
    relay = chrome.one("svg#topology a.node.relay")
    assert relay.get_attribute("data-key") == RELAY
    odd = chrome.css("#odd-pairs-table tbody tr")
    assert [({r.get_attribute("data-a"), r.get_attribute("data-b")}, r.text.split()[-2:])
            for r in odd] == [({lab["laptop"].key, lab["phone"].key}, ["relayed", RELAY])]
    assert "down" in down.get_attribute("class")
    assert down.value_of_css_property("stroke") == COLOURS["down"]
    assert down.value_of_css_property("stroke-dasharray") != "none"   # not colour alone
    badges = {a.get_attribute("data-key"): a.find_element("css selector", ".nat-text").text
              for a in chrome.css("svg#topology a.node")}
    assert badges[lab["phone"].key] == "sym" and badges[lab["pub1"].key] == "open"
    table = {r.get_attribute("data-key"): r.text for r in chrome.css("#nodes-table tbody tr")}
    assert "192.168.60.0/24" in table[lab["laptop"].key] and "pending" in table[lab["laptop"].key]
    assert "offline" in table[lab["nas"].key] and "server" in table[lab["pub1"].key]
    assert len(chrome.css(".leasemap li.cell.full")) == 5
    # A join key made in the page is shown once, then listed by id only.
    chrome.one("#jk-description").send_keys("laptops of the lab")
    chrome.one("#jk-tags").send_keys("lab laptop")
    chrome.one("#create-join-key").click()
    key = chrome.wait(lambda: chrome.one("#new-key").get_attribute("value"), 10, "the new key")
    chrome.get(f"{tower.api}/ui/zones/lab")
    assert "laptops of the lab" in chrome.one("#join-keys-table").text
    assert key not in chrome.driver.page_source
    chrome.screenshot(IMAGES / "dashboard-zone.png")


def test_a_joining_node_appears_without_reload(tower, zones, chrome):
    store, lab = zones
    chrome.login(tower.api, tower.token)
    chrome.get(f"{tower.api}/ui/zones/lab")
    chrome.driver.execute_script("window.notReloaded = true;")
    started = time.monotonic()
    node = zonefill.add_node(store, "lab", "newcomer", "cone", "203.0.113.103:51820")
    store.flush("lab")
    chrome.wait(lambda: chrome.css(f'#nodes-table tr[data-key="{node.key}"]')
                and chrome.css(f'svg#topology a.node[data-key="{node.key}"]'),
                JOIN_WITHIN, "the new node in the table and the picture")
    # A path that changes shows too: the laptop-phone pair goes direct.
    for name, other in (("laptop", "phone"), ("phone", "laptop")):
        zonefill.report(store, "lab", lab[name], {lab[other].address: ("d", None)})
    chrome.wait(lambda: "direct" in edge(chrome, lab["laptop"].key,
                                         lab["phone"].key).get_attribute("class"),
                JOIN_WITHIN, "laptop - phone to turn direct")
    took = time.monotonic() - started
    assert chrome.driver.execute_script("return window.notReloaded === true;")
    assert took < JOIN_WITHIN
    print(f"node joined -> shown in {took:.2f} s")
    assert len(chrome.css("svg#topology .edge[data-a]")) == 15


def test_a_write_without_the_csrf_token_is_refused(tower, zones, chrome):
    store, lab = zones
    chrome.login(tower.api, tower.token)
    chrome.get(f"{tower.api}/ui/zones/lab")
    row = chrome.one(f'#nodes-table tr[data-key="{lab["pub2"].key}"]')
    row.find_element("css selector", "a.button.danger").click()
    chrome.wait(lambda: chrome.css("#confirm-remove"), 10, "the confirmation page")
    chrome.driver.execute_script(
        "document.querySelector('form[action$=\"/remove\"] input[name=csrf]').remove();")
    chrome.one("#confirm-remove").click()
    chrome.wait(lambda: "CSRF" in chrome.driver.page_source, 10, "the refusal")
    assert lab["pub2"].key in {p.key for p in store.peers("lab")}


def test_keyboard_reaches_the_skip_link_and_the_picture(tower, zones, chrome):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    chrome.login(tower.api, tower.token)
    chrome.get(f"{tower.api}/ui/zones/lab")
    active = lambda: chrome.driver.switch_to.active_element  # noqa: E731
    ActionChains(chrome.driver).send_keys(Keys.TAB).perform()
    assert active().get_attribute("class") == "skip"
    reached = set()
    for _ in range(40):
        ActionChains(chrome.driver).send_keys(Keys.TAB).perform()
        cls = active().get_attribute("class") or ""
        if "node" in cls.split():
            reached.add(active().get_attribute("data-key"))
            outline = active().find_element("css selector", ".shape").value_of_css_property("stroke-width")
            assert float(outline.rstrip("px")) >= 4          # focus is visible
            break
    assert reached, "Tab never reached a node of the picture"


CONTRAST = """
function lum(c) { var v = c.match(/[\\d.]+/g).slice(0, 3).map(function (x) { x = x / 255;
  return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
  return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; }
function bg(e) { while (e) { var b = getComputedStyle(e).backgroundColor;
  if (b && b !== 'rgba(0, 0, 0, 0)' && b !== 'transparent') return b; e = e.parentElement; }
  return 'rgb(255, 255, 255)'; }
var out = [];
document.querySelectorAll(arguments[0]).forEach(function (e) {
  if (!e.textContent.trim()) return;
  var a = lum(getComputedStyle(e).color), b = lum(bg(e));
  out.push([e.tagName + '.' + e.className, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)]); });
return out;
"""


def test_text_contrast_is_at_least_aa(tower, zones, chrome):
    chrome.login(tower.api, tower.token)
    chrome.get(f"{tower.api}/ui/zones/lab")
    found = chrome.driver.execute_script(
        CONTRAST, "td, th, p, label, .badge, .tag, .status, .hint, caption, .legend li, a, button")
    assert len(found) > 30
    low = [(what, round(ratio, 2)) for what, ratio in found if ratio < 4.5]
    assert low == []


def test_a_zone_of_1000_nodes_is_grouped_and_paged(tower, zones, chrome):
    store, _ = zones
    store.create_zone("big", "10.160.0.0/16", "1,000 nodes")
    zonefill.fill(store, "big", 1000, offline_every=50)
    chrome.login(tower.api, tower.token)
    started = time.monotonic()
    chrome.get(f"{tower.api}/ui/zones/big")
    took = time.monotonic() - started
    assert chrome.one("svg#topology").get_attribute("data-mode") == "groups"
    assert len(chrome.css("svg#topology .group")) == 4
    assert len(chrome.css("svg#topology .edge[data-a]")) <= 30
    assert len(chrome.css("#nodes-table tbody tr")) == 100
    assert "1,000 nodes" in chrome.one("#topology-desc").get_attribute("textContent")
    assert took < 5.0                               # bench dashboard: the 1 s target
    IMAGES.mkdir(parents=True, exist_ok=True)
    chrome.driver.set_window_size(1280, 1600)
    try:
        chrome.one("section[aria-labelledby=picture-heading]").screenshot(
            str(IMAGES / "dashboard-1000-nodes.png"))
    finally:
        chrome.driver.set_window_size(1280, 900)


def test_last_seen_keeps_counting_between_changes(tower, zones, chrome):
    store, lab = zones
    chrome.login(tower.api, tower.token)
    chrome.get(f"{tower.api}/ui/zones/lab")
    cell = f'#nodes-table tr[data-key="{lab["nas"].key}"] .ago'
    first = chrome.one(cell).text
    assert first.endswith("min ago") or first.endswith("h ago")
    pub1 = f'#nodes-table tr[data-key="{lab["pub1"].key}"] .ago'
    before = int(chrome.one(pub1).text.split()[0])
    chrome.wait(lambda: int(chrome.one(pub1).text.split()[0]) >= before + 2, 10,
                "pub1's last heartbeat to age on the page")

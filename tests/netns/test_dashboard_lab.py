"""The dashboard of a real tower (with its relay) in the lab, with real agents
(wireguard-go), seen from headless Chromium outside the lab through a loopback port
forward: every node and its edges as the agents report their paths (direct, the laptop
behind a cone NAT and the phone behind a symmetric NAT relayed, down once an agent
stops), a joining agent shown without reload, and a node removed in the dashboard gone
from every other agent's wg0."""
from __future__ import annotations

import time

import pytest

from testbed import browser, portforward
from testbed.lab import Lab
from testbed.mesh import Mesh, wait_for

pytestmark = pytest.mark.slow
if browser.missing():
    pytestmark = [pytestmark, pytest.mark.skip(reason=browser.missing())]

IMAGES = browser.screenshot_dir()
SHOWN_WITHIN = 8.0           # target 2 s; headroom for a busy machine
OFFLINE_AFTER = 4            # seconds (agents heartbeat every 2 s)


@pytest.fixture(scope="module")
def world():
    with Lab() as lab:
        tower = lab.add_public_host("tower")
        hosts = {name: lab.add_public_host(name) for name in ("pub1", "pub2", "pub3")}
        hosts["laptop"] = lab.add_private_host("laptop", lab.add_nat("nat1", "cone"))
        hosts["phone"] = lab.add_private_host("phone", lab.add_nat("nat2", "symmetric"))
        mesh = Mesh(lab, tower)
        mesh.start_tower("--offline-after", str(OFFLINE_AFTER))
        forward, port = portforward.start(tower.ns)
        try:
            yield lab, mesh, hosts, f"http://127.0.0.1:{port}"
        finally:
            forward.kill()
            forward.wait()


@pytest.fixture(scope="module")
def chrome(world):
    _, mesh, _, base = world
    with browser.Browser() as b:
        b.login(base, mesh._tower_file("admin-token"))
        yield b


def edge_path(b: browser.Browser, a: str, c: str) -> str | None:
    index = {n.get_attribute("data-key"): n.get_attribute("data-i")
             for n in b.css("svg#topology a.node")}
    if a not in index or c not in index:
        return None
    for e in b.css("svg#topology .edge[data-a]"):
        if {e.get_attribute("data-a"), e.get_attribute("data-b")} == {index[a], index[c]}:
            return e.get_attribute("class").split()[1]
    return None


def edge_colour(b: browser.Browser, a: str, c: str) -> str | None:
    index = {n.get_attribute("data-key"): n.get_attribute("data-i")
             for n in b.css("svg#topology a.node")}
    for e in b.css("svg#topology .edge[data-a]"):
        if {e.get_attribute("data-a"), e.get_attribute("data-b")} == {index.get(a), index.get(c)}:
            return e.value_of_css_property("stroke")
    return None


def drawn(b: browser.Browser) -> set[str]:
    return {a.get_attribute("data-key") for a in b.css("svg#topology a.node:not(.relay)")}


def test_dashboard_of_a_real_mesh(world, chrome):
    lab, mesh, hosts, base = world
    agents = {name: mesh.start_agent(hosts[name]) for name in ("pub1", "pub2", "laptop", "phone")}
    for agent in agents.values():
        mesh.wait_address(agent)
    keys = {name: a.public_key for name, a in agents.items()}
    for name, agent in agents.items():
        mesh.wait_peers(agent.host, set(keys.values()) - {keys[name]})

    chrome.get(f"{base}/ui/zones/default")
    chrome.wait(lambda: drawn(chrome) == set(keys.values()), 10, "every agent in the picture")
    chrome.wait(lambda: edge_path(chrome, keys["pub1"], keys["laptop"]) == "direct", 20,
                "pub1 - laptop direct")
    chrome.wait(lambda: edge_path(chrome, keys["laptop"], keys["phone"]) == "relayed", 30,
                "laptop - phone relayed")
    assert edge_colour(chrome, keys["laptop"], keys["phone"]) == "rgb(154, 103, 0)"
    assert edge_colour(chrome, keys["pub1"], keys["laptop"]) == "rgb(26, 127, 55)"
    assert chrome.css("svg#topology a.node.relay")              # the tower's relay, drawn
    nat = {r.get_attribute("data-key"): r.text for r in chrome.css("#nodes-table tbody tr")}
    assert "cone" in nat[keys["laptop"]] and "symmetric" in nat[keys["phone"]]
    chrome.screenshot(IMAGES / "dashboard-lab.png")

    # A node joining shows without a reload.
    chrome.driver.execute_script("window.notReloaded = true;")
    pub3 = mesh.start_agent(hosts["pub3"])
    mesh.wait_address(pub3)
    registered = time.monotonic()
    chrome.wait(lambda: pub3.public_key in drawn(chrome), SHOWN_WITHIN, "pub3 in the picture")
    print(f"registered -> shown in {time.monotonic() - registered:.2f} s")
    assert chrome.driver.execute_script("return window.notReloaded === true;")
    keys["pub3"] = pub3.public_key

    # An agent that stops heartbeating: its pairs turn down.
    agents["laptop"].proc.stop()
    chrome.wait(lambda: edge_path(chrome, keys["pub1"], keys["laptop"]) == "down",
                OFFLINE_AFTER + SHOWN_WITHIN + 4, "pub1 - laptop down")
    assert edge_path(chrome, keys["pub1"], keys["pub2"]) == "direct"
    assert edge_colour(chrome, keys["pub1"], keys["laptop"]) == "rgb(207, 34, 46)"

    # Removing a node in the dashboard removes it from every other agent's wg0.
    row = chrome.one(f'#nodes-table tr[data-key="{keys["pub2"]}"]')
    row.find_element("css selector", "a.button.danger").click()
    chrome.wait(lambda: chrome.css("#confirm-remove"), 10, "the confirmation page")
    chrome.one("#confirm-remove").click()
    chrome.wait(lambda: "/remove" not in chrome.driver.current_url, 10, "back on the zone page")
    for name in ("pub1", "pub3", "phone"):
        mesh.wait_peers(hosts[name],
                        {keys[n] for n in ("pub1", "pub3", "laptop", "phone")} - {keys[name]})
    chrome.wait(lambda: keys["pub2"] not in drawn(chrome), SHOWN_WITHIN, "pub2 gone from the picture")
    wait_for(lambda: not agents["pub2"].proc.running, 30, "the removed agent to stop")

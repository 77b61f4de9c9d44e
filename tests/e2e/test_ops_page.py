"""The ops page in headless Chromium against a real stack: it renders live figures and charts."""

from __future__ import annotations

import json

import pytest

from tests.browser import ARTIFACTS
from tests.support import Stack, Subscriber, wait_for

pytestmark = pytest.mark.e2e


def updates(page, count: int) -> None:
    """Wait until the page has drawn `count` summaries (the page's CSP forbids wait_for_function's eval)."""
    wait_for(lambda: int(page.locator("body").get_attribute("data-updates") or 0) >= count, timeout=15, interval=0.1)


@pytest.fixture
def busy(stack: Stack, subscribers):
    """A restaurant with a watcher, two orders and a registered printer that came online."""
    rid = stack.add_restaurant("Ops Page Bistro", "page@example.com")
    admin = stack.http(stack.api_token("user-page", "admin", rid))
    menu = admin.post(f"/restaurants/{rid}/menus", json={"name": "Main"}).json()
    item = admin.post(f"/restaurants/{rid}/menu-items", json={"menu_id": menu["id"], "name": "Tea", "price_cents": 300})
    watcher = Subscriber(stack.settings.mqtt_port, "page-watcher", stack.mqtt_token("page-watcher", "staff", rid))
    subscribers.append(watcher)
    assert watcher.connect() == 0
    assert watcher.subscribe(f"restaurant/{rid}/#") != 0x80
    for _ in range(2):
        response = admin.post(
            f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": item.json()["id"], "quantity": 1}]}
        )
        assert response.status_code == 201, response.text
    device = admin.post(
        f"/restaurants/{rid}/devices", json={"id": "page-printer", "kind": "printer", "name": "Bar", "station": "bar"}
    )
    assert device.status_code == 201, device.text
    printer = Subscriber(stack.settings.mqtt_port, "page-printer", device.json()["token"])
    subscribers.append(printer)
    assert printer.connect() == 0
    printer.client.publish(f"restaurant/{rid}/devices/page-printer/status", b'{"state": "online"}', qos=1, retain=True)
    wait_for(lambda: admin.get(f"/restaurants/{rid}/devices").json()["data"][0]["presence"] == "online")
    return {"rid": rid, "admin": admin, "item": item.json()["id"]}


def test_the_ops_page_renders_live_figures_and_charts(stack: Stack, busy, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    try:
        page.goto(f"{stack.base_url}/ops")
        assert page.title() == "orderbus ops"
        updates(page, 2)
        # more traffic while the page watches: the rate chart has something to show
        for _ in range(3):
            busy["admin"].post(
                f"/restaurants/{busy['rid']}/orders", json={"items": [{"menu_item_id": busy["item"], "quantity": 1}]}
            )
        updates(page, 4)

        summary = stack.http().get("/ops/summary").json()
        connections = page.locator("#tile-connections").inner_text()
        assert int(connections.replace(",", "")) == summary["connections"]["total"] >= 4  # relay, ingest, 2 clients
        assert page.locator("#broker-up").inner_text() == "up"
        assert page.locator("#database-up").inner_text() == "up"
        assert page.locator("#tile-online").inner_text() == "1"
        assert page.locator("#tile-pending").inner_text() == "0"
        assert float(page.locator("#tile-rate-out").inner_text().replace(",", "")) >= 0

        for chart in ("chart-connections", "chart-rates", "chart-lag"):
            points = page.locator(f"#{chart} polyline.series-0").get_attribute("points") or ""
            assert len(points.split()) >= 3, (chart, points)
            description = page.locator(f"#{chart} desc").text_content() or ""
            assert description.startswith("Latest:"), description
        assert page.locator("#chart-rates polyline").count() == 2
        assert "In" in page.locator("#chart-rates .legend").inner_text()

        printer_row = page.locator("#devices tbody tr", has_text="printer")
        assert printer_row.locator("td").nth(0).inner_text() == "1"  # online
        assert page.locator("#refusals tbody tr").count() >= 1
        assert "Updated" in page.locator("#status").inner_text()

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ops-page.png"), full_page=True)
        assert not problems, problems
    finally:
        context.close()


def test_the_ops_page_is_accessible_markup(stack: Stack, browser):
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{stack.base_url}/ops")
        updates(page, 1)
        report = page.evaluate(
            """() => {
                const ids = (value) => (value || "").split(/\\s+/).filter(Boolean);
                const charts = [...document.querySelectorAll("figure.chart")].map((figure) => {
                    const svg = figure.querySelector("svg");
                    const labelled = ids(svg.getAttribute("aria-labelledby"));
                    return {
                        role: svg.getAttribute("role"),
                        labels: labelled.map((id) => (document.getElementById(id) || {}).textContent || ""),
                        caption: figure.querySelector("figcaption").textContent,
                        table: Boolean(figure.querySelector("details table caption")),
                    };
                });
                return {
                    lang: document.documentElement.lang,
                    h1: document.querySelectorAll("h1").length,
                    main: document.querySelectorAll("main").length,
                    status: document.getElementById("status").getAttribute("role"),
                    live: document.getElementById("status").getAttribute("aria-live"),
                    tablesWithoutCaption: [...document.querySelectorAll("table")].filter((t) => !t.caption).length,
                    headersWithoutScope: [...document.querySelectorAll("th")].filter((th) => !th.scope).length,
                    charts,
                };
            }"""
        )
        assert report["lang"] == "en" and report["h1"] == 1 and report["main"] == 1
        assert report["status"] == "status" and report["live"] == "polite"
        assert report["tablesWithoutCaption"] == 0 and report["headersWithoutScope"] == 0
        assert len(report["charts"]) == 3
        for chart in report["charts"]:
            assert chart["role"] == "img" and chart["table"]
            assert chart["labels"][0] == chart["caption"] and chart["labels"][1].startswith("Latest:")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip"
    finally:
        context.close()


def test_the_ops_page_says_so_when_it_cannot_read_the_figures(stack: Stack, browser):
    context = browser.new_context()
    page = context.new_page()
    try:
        page.route("**/api/v1/ops/summary", lambda route: route.fulfill(status=503, body="down"))
        page.goto(f"{stack.base_url}/ops")
        wait_for(lambda: "error" in (page.locator("#status").get_attribute("class") or ""), timeout=10)
        assert "HTTP 503" in page.locator("#status").inner_text()
        page.unroute("**/api/v1/ops/summary")
        wait_for(lambda: "error" not in (page.locator("#status").get_attribute("class") or ""), timeout=10)
    finally:
        context.close()


def test_an_admin_lists_their_clients_on_the_ops_page_and_disconnects_one(stack: Stack, busy, browser):
    token = stack.api_token("user-page", "admin", busy["rid"])
    session = json.dumps({"token": token, "expiresAt": 4102444800000})
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    context.add_init_script(f"sessionStorage.setItem('orderbus.session', {session!r});")
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        page.goto(f"{stack.base_url}/ops")
        row = page.locator("#clients tbody tr", has_text="page-printer")
        row.wait_for(timeout=15_000)
        assert "printer" in row.inner_text() and "127.0.0.1:" in row.inner_text()
        assert page.locator("#clients tbody tr", has_text="page-watcher").count() == 1  # staff of the same restaurant
        row.get_by_role("button", name="Disconnect page-printer").click()
        page.locator("#clients-status", has_text="Disconnected page-printer").wait_for(timeout=15_000)
        root = stack.http(stack.api_token("root", "super_admin", None))
        wait_for(lambda: all(c["client_id"] != "page-printer" for c in root.get("/ops/clients").json()["data"]))
    finally:
        context.close()

"""/docs and /redoc in headless Chromium with every request beyond this machine cut off, as on a
restaurant network with no internet: both pages render the API's operations from the app's own assets.

Screenshots go to artifacts/screenshots/ (api-docs-swagger.png, api-docs-redoc.png).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, expect

from api.openapi import DESCRIPTIONS
from tests.browser import ARTIFACTS
from tests.support import Stack

pytestmark = pytest.mark.e2e

LOCAL = {"127.0.0.1", "localhost"}


class Offline:
    """A page whose requests to any other host are aborted (and recorded), and whose failures are kept."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.blocked: list[tuple[str, str]] = []  # (resource type, url)
        self.failed: list[str] = []
        self.errors: list[str] = []
        page.route("**/*", self._only_local)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("requestfailed", self._failed)

    def _only_local(self, route: Route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in ("http", "https") and urlsplit(url).hostname not in LOCAL:
            self.blocked.append((route.request.resource_type, url))
            route.abort("internetdisconnected")
        else:
            route.continue_()

    def _failed(self, request) -> None:
        if request.url not in [url for _, url in self.blocked]:
            self.failed.append(f"{request.url}: {request.failure}")

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=name.endswith("swagger"))


@pytest.fixture
def offline(browser, stack: Stack):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = Offline(context.new_page())
    yield page
    context.close()


def test_swagger_ui_renders_every_operation_offline(offline: Offline, stack: Stack):
    spec = stack.http().get("/openapi.json").json()
    operations = sum(len(methods) for methods in spec["paths"].values())
    response = offline.page.goto(f"{stack.base_url}/docs")
    assert response is not None and response.ok
    blocks = offline.page.locator(".opblock")
    expect(blocks.first).to_be_visible(timeout=20_000)
    expect(blocks).to_have_count(operations)
    expect(offline.page.locator(".opblock-summary-description", has_text="List Orders")).to_be_visible()
    expect(offline.page.get_by_text("orders-list_orders", exact=True)).to_be_attached()  # displayOperationId
    offline.screenshot("api-docs-swagger")
    assert offline.errors == [] and offline.failed == [], (offline.errors, offline.failed)
    assert offline.blocked == []  # it asked for nothing beyond this machine


def test_redoc_renders_the_operations_offline(offline: Offline, stack: Stack):
    response = offline.page.goto(f"{stack.base_url}/redoc")
    assert response is not None and response.ok
    menu = offline.page.locator("[role=menuitem]", has_text="List Orders")
    expect(menu.first).to_be_visible(timeout=20_000)
    expect(offline.page.locator("h2", has_text="List Menu Items").first).to_be_attached()
    conflict = offline.page.get_by_text(DESCRIPTIONS[409]).first  # a documented error response
    expect(conflict).to_be_attached()
    offline.screenshot("api-docs-redoc")
    assert offline.errors == [] and offline.failed == [], (offline.errors, offline.failed)
    # Redoc's footer ("API docs by Redocly") shows the vendor's logo from its CDN; a missing picture
    # there is all that the lack of internet costs: no script, style, font or data comes from outside
    assert [kind for kind, _ in offline.blocked if kind != "image"] == [], offline.blocked

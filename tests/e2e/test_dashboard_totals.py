"""The dashboard's header shows the restaurant's day: orders, revenue, refunds and net of its business
day, read again when orders change on the bus (a new order, a cancel, a refund)."""

from __future__ import annotations

from playwright.sync_api import BrowserContext, expect

from tests.e2e.test_dashboard import context, login, open_page, place, shop, watched
from tests.support import Stack

__all__ = ["context", "shop", "watched"]


def test_the_header_shows_the_days_totals_and_follows_the_orders(
    stack: Stack, shop: dict, context: BrowserContext, watched: list
):
    page = open_page(context, watched).page
    login(page, stack, shop["email"])
    totals = page.locator("#day-totals")
    expect(totals).to_be_visible()

    def shown(name: str):
        return totals.locator(f"[data-total='{name}']")

    expect(shown("orders")).to_have_text("0 orders")
    expect(shown("net")).to_have_text("0.00")

    first = place(shop, "burger", 2)  # 24.00
    expect(shown("orders")).to_have_text("1 order")
    expect(shown("revenue")).to_have_text("24.00")
    expect(shown("day")).to_have_text(first["business_date"])

    second = place(shop, "fries", 1)  # 4.00
    expect(shown("orders")).to_have_text("2 orders")
    expect(shown("revenue")).to_have_text("28.00")

    rid, admin = shop["rid"], shop["admin"]
    assert admin.post(f"/restaurants/{rid}/orders/{second['id']}/status", json={"status": "cancelled"}).is_success
    expect(shown("revenue")).to_have_text("24.00")  # a cancelled order brings nothing in
    expect(shown("orders")).to_have_text("2 orders")
    assert admin.post(f"/restaurants/{rid}/orders/{first['id']}/pay").is_success  # only a paid order is refunded
    assert admin.post(f"/restaurants/{rid}/orders/{first['id']}/refunds", json={"amount_cents": 250}).is_success
    expect(shown("refunds")).to_have_text("2.50")
    expect(shown("net")).to_have_text("21.50")

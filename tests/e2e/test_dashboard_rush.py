"""The dashboard at a rush, in headless Chromium at 1366x900 against a real stack (issue 15): 40 open
orders and 41 notifications. Compact cards, oldest first, each with its timer, all of them on the
screen or one scroll of the orders away; a status filter and a search; notifications grouped by
kind and station with "mark all read"; a ticket that prints late clears its notification; the
low-stock banner survives a reload; no debugging details unless asked (`?debug=1`).

Screenshots go to artifacts/screenshots/ (12-… to 15-…).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from playwright.sync_api import BrowserContext, Page, expect
from sqlmodel import col, select

from core.models import Ticket, utcnow
from core.services import tickets
from core.unit_of_work import UnitOfWork
from tests.e2e.test_dashboard import PASSWORD, Watched, ignored_count, login, open_order_ids, publish, shot, wait_state
from tests.support import Stack, add_burger_and_fries, wait_for

SCREEN = {"width": 1366, "height": 900}
OPEN_ORDERS = 40
GRILL_EVERY = 4  # every fourth order is a steak, cooked at the grill


@pytest.fixture
def rush(stack: Stack) -> dict:
    """40 open orders (10 at the grill, 3 ready, 5 preparing), every ticket late: 40 "not confirmed"
    notifications, and the Burger below its threshold: one "Low stock" notification."""
    rid = stack.add_restaurant("Rush Diner", "rush@example.com", PASSWORD)
    admin = stack.http(stack.api_token("user-r", "admin", rid))
    burger, fries = add_burger_and_fries(admin, rid, stock=10, low_stock=3)
    steak = stack.add_menu_item(rid, "Steak", station="grill")
    placed = []
    for n in range(OPEN_ORDERS):
        items = [{"menu_item_id": steak if n % GRILL_EVERY == 0 else fries["id"], "quantity": 1}]
        if n == 1:
            items.append({"menu_item_id": burger["id"], "quantity": 8})  # 10 -> 2: low; on the fries' ticket
        answer = admin.post(f"/restaurants/{rid}/orders", json={"items": items, "table_name": f"T{n + 1}"})
        assert answer.status_code == 201, answer.text
        placed.append(answer.json())
    for order, path in [(o, ["preparing", "ready"]) for o in placed[1:4]] + [(o, ["preparing"]) for o in placed[4:9]]:
        for status in path:
            moved = admin.post(f"/restaurants/{rid}/orders/{order['id']}/status", json={"status": status})
            assert moved.status_code == 200, moved.text
    with UnitOfWork(stack.engine) as uow:
        tickets.expire_unacknowledged(uow, 30, now=utcnow() + timedelta(hours=1))
        uow.commit()
    with UnitOfWork(stack.engine) as uow:
        rows = uow.session.exec(select(Ticket).where(Ticket.restaurant_id == rid).order_by(col(Ticket.id))).all()
        stations = Counter(ticket.station for ticket in rows if ticket.state == "unacknowledged")
    assert sum(stations.values()) == OPEN_ORDERS and stations["grill"] == OPEN_ORDERS // GRILL_EVERY, stations
    unread = admin.get(f"/restaurants/{rid}/notifications", params={"unread": True, "limit": 100}).json()
    assert unread["count"] == OPEN_ORDERS + 1, unread["count"]
    return {"rid": rid, "admin": admin, "orders": placed, "stations": stations, "steak": steak, "burger": burger["id"]}


@pytest.fixture
def screen(browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=SCREEN)
    yield ctx
    ctx.close()


def order_area(page: Page) -> dict:
    """The orders list's box, scroll extent and every card's box (relative to the list's content)."""
    return page.evaluate(
        """() => {
          const list = document.getElementById('order-list');
          const r = list.getBoundingClientRect();
          return {
            top: r.top, bottom: r.bottom, client: list.clientHeight, scroll: list.scrollHeight,
            vw: innerWidth, vh: innerHeight, pageWidth: document.documentElement.scrollWidth,
            cards: [...list.children].map(c => {
              const b = c.getBoundingClientRect();
              return {top: b.top - r.top + list.scrollTop, bottom: b.bottom - r.top + list.scrollTop, right: b.right};
            }),
          };
        }"""
    )


def shown_ids(page: Page) -> list[int]:
    return open_order_ids(page)


def groups(page: Page) -> list[str]:
    return page.eval_on_selector_all("#notification-list > li .title", "els => els.map(e => e.textContent)")


def test_forty_open_orders_fit_one_screen_and_one_scroll_oldest_first_with_timers(stack: Stack, rush, screen):
    watched = Watched(screen.new_page())
    page = watched.page
    login(page, stack, "rush@example.com")
    ids = [order["id"] for order in rush["orders"]]
    wait_for(lambda: len(shown_ids(page)) == OPEN_ORDERS, timeout=10)
    assert shown_ids(page) == ids, "oldest first"

    area = order_area(page)
    assert len(area["cards"]) == OPEN_ORDERS
    assert area["pageWidth"] <= area["vw"], "no sideways scrolling"
    assert all(card["right"] <= area["vw"] for card in area["cards"])
    assert area["top"] > 0 and area["bottom"] <= area["vh"], f"the orders area is on the screen: {area['bottom']}"
    visible = [card for card in area["cards"] if card["bottom"] <= area["client"]]
    assert len(visible) >= OPEN_ORDERS // 2, f"only {len(visible)} cards on the first screen"
    assert area["scroll"] <= 2 * area["client"], "every other card is one scroll of the orders away"
    shot(page, "12-rush-40-orders")

    page.eval_on_selector("#order-list", "list => { list.scrollTop = list.clientHeight; }")
    last = page.locator(f"#order-list > li[data-order-id='{ids[-1]}']")
    expect(last).to_be_in_viewport()
    page.eval_on_selector("#order-list", "list => { list.scrollTop = 0; }")

    first = page.locator(f"#order-list > li[data-order-id='{ids[0]}'] .elapsed")
    assert re.fullmatch(r"\d+:\d\d", first.inner_text()), first.inner_text()
    before = first.inner_text()
    wait_for(lambda: first.inner_text() != before, timeout=5)  # it ticks

    # staff see no debugging details: no event numbers, no Debug link, no activity log
    expect(page.get_by_role("link", name="Debug")).to_be_hidden()
    expect(page.locator("#activity")).to_be_hidden()
    assert "event #" not in page.inner_text("#connection")
    page.goto(stack.base_url + "/?debug=1")  # asked for: shown
    wait_state(page, "live")
    expect(page.get_by_role("link", name="Debug")).to_be_visible()
    expect(page.locator("#activity")).to_be_visible()
    expect(page.locator("#connection-detail")).to_contain_text("event #")
    watched.check()


def test_filter_chips_and_search_narrow_the_orders(stack: Stack, rush, screen):
    watched = Watched(screen.new_page())
    page = watched.page
    login(page, stack, "rush@example.com")
    orders = rush["orders"]
    wait_for(lambda: len(shown_ids(page)) == OPEN_ORDERS, timeout=10)
    chips = page.locator("#status-filter")
    expect(chips.get_by_role("button", name=re.compile("^Ready"))).to_contain_text("3")

    chips.get_by_role("button", name=re.compile("^Ready")).click()
    assert shown_ids(page) == [o["id"] for o in orders[1:4]]
    chips.get_by_role("button", name=re.compile("^Preparing")).click()
    assert shown_ids(page) == [o["id"] for o in orders[4:9]]
    expect(chips.get_by_role("button", name=re.compile("^Preparing"))).to_have_attribute("aria-pressed", "true")
    chips.get_by_role("button", name=re.compile("^All")).click()
    assert len(shown_ids(page)) == OPEN_ORDERS

    search = page.get_by_label("Search orders")
    search.fill("steak")
    assert shown_ids(page) == [o["id"] for n, o in enumerate(orders) if n % GRILL_EVERY == 0]
    search.fill("T17")
    assert shown_ids(page) == [orders[16]["id"]]
    shot(page, "13-rush-search")
    search.fill(f"#{orders[5]['id']}")
    assert orders[5]["id"] in shown_ids(page)
    search.fill("no such thing <b>")  # junk in the search: no match, said so, nothing breaks
    assert shown_ids(page) == []
    expect(page.locator("#orders-none-match")).to_be_visible()
    search.fill("")
    assert len(shown_ids(page)) == OPEN_ORDERS

    # a new order during the search: it is kept and shows once the search is cleared
    chips.get_by_role("button", name=re.compile("^Ready")).click()
    late = rush["admin"].post(
        f"/restaurants/{rush['rid']}/orders", json={"items": [{"menu_item_id": rush["steak"], "quantity": 1}]}
    )
    assert late.status_code == 201, late.text
    expect(chips.get_by_role("button", name=re.compile("^All"))).to_contain_text(str(OPEN_ORDERS + 1))
    assert late.json()["id"] not in shown_ids(page)
    chips.get_by_role("button", name=re.compile("^All")).click()
    assert shown_ids(page)[-1] == late.json()["id"], "the newest is last"
    watched.check()


def test_notifications_are_grouped_a_late_print_clears_one_and_mark_all_read_persists(stack: Stack, rush, screen):
    watched = Watched(screen.new_page())
    page = watched.page
    login(page, stack, "rush@example.com")
    stations = rush["stations"]
    grill = stations["grill"]
    other = next(station for station in stations if station != "grill")
    expect(page.locator("#unread-count")).to_have_text(str(OPEN_ORDERS + 1))
    expect(page.locator("#notification-list > li")).to_have_count(3)  # not 41
    assert sorted(groups(page)) == sorted(
        [
            f"{grill} tickets not confirmed at grill",
            f"{stations[other]} tickets not confirmed at {other}",
            "Low stock: Burger",
        ]
    )
    shot(page, "14-rush-notifications")

    # the first grill ticket prints after all: its notification clears on the screen too
    with UnitOfWork(stack.engine) as uow:
        query = select(Ticket).where(Ticket.restaurant_id == rush["rid"], Ticket.station == "grill")
        ticket = uow.session.exec(query.order_by(col(Ticket.id))).first()
        assert ticket is not None
        tickets.record_printed(uow, tickets.get_ticket(uow, rush["rid"], ticket.id or 0), "printer-grill")
        uow.commit()
    expect(page.locator("#unread-count")).to_have_text(str(OPEN_ORDERS))
    expect(page.locator("#notification-list")).to_contain_text(f"{grill - 1} tickets not confirmed at grill")

    # junk on the notifications topic changes nothing and breaks nothing
    before = ignored_count(page)
    publish(stack, f"restaurant/{rush['rid']}/notifications", b'{"v": 1, "type": "notification", "data": 7}')
    wait_for(lambda: ignored_count(page) > before, timeout=10)
    expect(page.locator("#unread-count")).to_have_text(str(OPEN_ORDERS))

    page.get_by_role("button", name="Mark all read").click()
    expect(page.locator("#unread-count")).to_have_text("0")
    expect(page.locator("#notifications-empty")).to_be_visible()
    expect(page.get_by_role("button", name="Mark all read")).to_be_hidden()
    unread = rush["admin"].get(f"/restaurants/{rush['rid']}/notifications", params={"unread": True}).json()
    assert unread["count"] == 0

    page.reload()
    wait_state(page, "live")
    expect(page.locator("#unread-count")).to_have_text("0")
    watched.check()


def test_the_low_stock_banner_comes_back_after_a_reload(stack: Stack, rush, screen):
    watched = Watched(screen.new_page())
    page = watched.page
    login(page, stack, "rush@example.com")
    banner = page.locator("#alert-list > li[role='alert']")
    expect(banner).to_have_count(1)
    expect(banner).to_contain_text("Low stock: Burger, 2 left (alert at 3)")
    page.get_by_role("button", name="Dismiss low stock alert for Burger").click()
    expect(banner).to_have_count(0)

    page.reload()  # from the state (the snapshot's items), not from an event this page saw
    wait_state(page, "live")
    expect(banner).to_have_count(1)
    expect(banner).to_contain_text("Low stock: Burger, 2 left")
    shot(page, "15-rush-after-reload")

    answer = rush["admin"].post(f"/restaurants/{rush['rid']}/inventory/{rush['burger']}/adjust", json={"delta": 18})
    assert answer.status_code == 200, answer.text
    expect(banner).to_have_count(0)  # restocked: the banner goes by itself
    watched.check()

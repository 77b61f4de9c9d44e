"""The KDS as a kitchen display (issue 15): cards in columns at 80x24 and 160x48 with 30 open orders.

The orders are real: placed through the order service on a real SQLite database, and their outbox
envelopes (what the bridge publishes) fed to the tablet's board as its MQTT side receives them. The
screen runs headless through Textual's Pilot with the board's clock injected; its SVG screenshots go
to artifacts/screenshots/ and are read back by the test.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from sqlalchemy import Engine
from sqlmodel import col, select
from textual.containers import VerticalScroll
from textual.widgets import Static

from config.settings import Settings
from core import topics
from core.commands import MenuIn, MenuItemIn, OrderIn, OrderItemIn
from core.domain import OrderStatus
from core.models import Menu, OutboxEvent, Restaurant
from core.services import menu as menu_service
from core.services import orders
from core.unit_of_work import UnitOfWork
from devices.kds import KdsApp, OrderCard
from devices.kds_board import Board
from devices.kds_client import KdsClient
from scripts.ports import free_port
from tests.support import run_async, sqlite_engine

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
MENU = ["Burger", "Fries", "Caesar salad", "Lemonade", "Pad thai with extra peanuts and lime"]
NOTES = ["", "nut allergy: no peanuts at all, ask the guest before plating", "extra crispy", ""]


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC) + timedelta(seconds=30)

    def __call__(self) -> datetime:
        return self.now


def restaurant(engine: Engine, name: str) -> tuple[int, dict[str, int]]:
    with UnitOfWork(engine) as uow:
        row = Restaurant(name=name)
        uow.session.add(row)
        uow.session.flush()
        assert row.id is not None
        menu = menu_service.create_row(uow, Menu, row.id, MenuIn(name="Menu"))
        items = {
            name: menu_service.create_item(uow, row.id, MenuItemIn(menu_id=menu.id, name=name, price_cents=500)).id
            for name in MENU
        }
        uow.commit()
        return row.id, items  # type: ignore[return-value]


def place(engine: Engine, rid: int, items: dict[str, int], i: int) -> None:
    lines = [
        OrderItemIn(
            menu_item_id=items[MENU[(i + k) % len(MENU)]],
            quantity=1 + (i + k) % 3,
            modifiers=["no onion", "sauce on the side"] if k == 0 and i % 2 else [],
            notes=NOTES[(i + k) % len(NOTES)],
        )
        for k in range(1 + i % 3)
    ]
    body = OrderIn(items=lines, table_name=f"T{i + 1}", server_name=["Ana", "Bo", "Chidi"][i % 3])
    with UnitOfWork(engine) as uow:
        orders.place_order(uow, rid, body)
        uow.commit()


def envelopes(engine: Engine, rid: int) -> list[dict]:
    with UnitOfWork(engine) as uow:
        rows = uow.session.exec(
            select(OutboxEvent).where(OutboxEvent.restaurant_id == rid).order_by(col(OutboxEvent.seq))
        )
        return [row.envelope for row in rows]


@pytest.fixture
def kitchen(tmp_path) -> Iterator[tuple[Engine, int, dict[str, int]]]:
    """Two restaurants ordering interleaved: the first one's numbers still go 1..30."""
    engine = sqlite_engine(Settings(data_dir=tmp_path / "data"))
    rid, items = restaurant(engine, "Rush")
    other, other_items = restaurant(engine, "Next door")
    for i in range(30):
        place(engine, rid, items, i)
        if i % 4 == 0:
            place(engine, other, other_items, i)
    yield engine, rid, items
    engine.dispose()


def app_for(rid: int, clock: Clock, settle_seconds: float = 600) -> KdsApp:
    """A real client for a broker that is not there (it keeps reconnecting); the board is fed directly."""
    token = jwt.encode({"sub": "kds-rush", "rid": rid, "role": "tablet"}, "not-checked-here")
    client = KdsClient(token, "127.0.0.1", free_port(), Board(clock=clock))
    return KdsApp(client, tick_seconds=0.5, flash_seconds=600, settle_seconds=settle_seconds)


def feed(app: KdsApp, rid: int, events: list[dict]) -> None:
    """As the MQTT thread does: each envelope on the orders topic, under the client's lock."""
    for envelope in events:
        with app.client.lock:
            app.board.receive(topics.orders(rid), json.dumps(envelope).encode())
    app.post_message(KdsApp.BoardChanged())


async def until(condition, timeout: float = 10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := condition()):
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)
    return value


def rendered(card: OrderCard) -> list[str]:
    """The card's lines as the screen draws them, without the border."""
    strips = card.render_lines(card.region.reset_offset.shrink(card.styles.gutter))
    return [strip.text.rstrip() for strip in strips]


def words(text: str) -> list[str]:
    return text.split()


def check_layout(app: KdsApp, size: tuple[int, int], numbers: list[int]) -> None:
    cards = list(app.query(OrderCard))
    # every open order in one card, oldest first across the columns
    assert [card.card.number for card in cards if card.card] != []
    columns = list(app.query(".column").results(VerticalScroll))
    assert len(columns) == app.column_count() and len(columns) >= (2 if size[0] == 80 else 4)
    order = []
    for row in range(max(len(column.children) for column in columns)):
        order += [column.children[row] for column in columns if row < len(column.children)]
    assert [view.card.number for view in order] == numbers  # type: ignore[attr-defined]
    for view in cards:
        card = view.card
        # inside the screen and its column: no line runs past the card
        column = view.parent
        assert isinstance(column, VerticalScroll)
        assert view.region.width <= column.region.width and column.region.right <= size[0] - app.ALL_DAY_WIDTH
        lines = rendered(view)
        assert all(len(line) <= view.content_region.width for line in lines)
        drawn = words(" ".join(lines))
        for item in card.lines:  # every item whole, in the card, its words in order (wrapped, not cut)
            expected = words(f"{item.quantity} x {item.name}") + [w for m in item.modifiers for w in ["+", *m.split()]]
            assert " ".join(expected) in " ".join(drawn), (card.number, lines)
            if item.notes:
                assert " ".join(words(item.notes)) in " ".join(drawn), (card.number, lines)
        assert f"#{card.number}" in drawn[0] and card.table_name in drawn and card.server_name in drawn


async def reachable(app: KdsApp, pilot) -> None:
    """Every card can be brought on screen by scrolling its own column (once, to it)."""
    for view in app.query(OrderCard):
        column = view.parent
        assert isinstance(column, VerticalScroll)
        column.scroll_to_widget(view, animate=False, immediate=True)
        await pilot.pause()
        assert column.region.contains_region(view.region), (view.card.number, view.region, column.region)


def legible(svg: str, text: str) -> bool:
    """The text's colour in the SVG is not its background's (a panel once drew its text in its own colour)."""
    found = re.search(r'<text class="([^"]+)" x="([\d.]+)" y="[\d.]+"[^>]*>' + re.escape(text), svg)
    assert found, text
    fill = re.search(r"\." + found[1] + r" \{ fill: (#[0-9a-f]+)", svg)
    x = float(found[2])
    backgrounds = re.findall(r'<rect fill="(#[0-9a-f]+)" x="' + re.escape(found[2]) + '"', svg) or re.findall(
        r'<rect fill="(#[0-9a-f]+)" x="' + f"{x - 12.2:g}" + '"', svg
    )
    return fill is not None and fill[1] not in backgrounds


def screenshot_numbers(svg: str) -> set[int]:
    return {int(n) for n in re.findall(r"#(\d+)", svg.replace("&#160;", " "))}


async def rush(app: KdsApp, rid: int, events: list[dict], clock: Clock, size: tuple[int, int]) -> None:
    async with app.run_test(size=size) as pilot:
        feed(app, rid, events)
        await until(lambda: len(app.query(OrderCard)) == 30)
        await pilot.pause()
        numbers = list(range(1, 31))
        check_layout(app, size, numbers)
        # all day: the open orders' quantities per item
        wanted: Counter[str] = Counter()
        for view in app.query(OrderCard):
            for line in view.card.lines:
                wanted[line.name] += line.quantity
        panel = str(app.query_one("#allday", Static).content)
        for name, quantity in wanted.items():
            assert f"{quantity:>3} {name}" in panel
        # the key legend is on screen
        footer = app.export_screenshot()
        for key in ("Bump", "Recall", "Quit"):
            assert key in footer
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = f"kds-{size[0]}x{size[1]}-30-orders.svg"
        app.save_screenshot(name, str(ARTIFACTS))
        svg = (ARTIFACTS / name).read_text()
        assert 1 in screenshot_numbers(svg) and "ALL&#160;DAY" in svg and "Bump" in svg
        assert legible(svg, "ALL&#160;DAY") and legible(svg, "KDS&#160;kds-rush")
        assert not app.query(".flash")  # the orders at start are no new tickets
        visible = {view.card.number for view in app.query(OrderCard) if app.screen.region.contains_region(view.region)}
        assert visible and visible <= screenshot_numbers(svg)
        await reachable(app, pilot)

        # age colours: green, then amber past warn, red past late (the injected clock)
        first = app.card(next(iter(app.board.cards)))
        assert first is not None and first.has_class("normal")
        clock.now += timedelta(minutes=app.board.warn_minutes)
        await until(lambda: first.has_class("warn"))
        clock.now += timedelta(minutes=app.board.late_minutes)
        await until(lambda: first.has_class("late"))
        await pilot.press("q")


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_thirty_open_orders_fit_as_cards(kitchen, size):
    engine, rid, _items = kitchen
    clock = Clock()
    app = app_for(rid, clock)
    run_async(rush(app, rid, envelopes(engine, rid), clock, size))


async def new_ticket(app: KdsApp, engine: Engine, rid: int, items: dict[str, int], events: list[dict]) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        feed(app, rid, events)
        await until(lambda: len(app.query(OrderCard)) == 30)
        assert app.new_tickets == 0 and not app.query(".flash")
        place(engine, rid, items, 30)
        feed(app, rid, envelopes(engine, rid)[len(events) :])  # the new order's events, as they come live
        await until(lambda: len(app.query(OrderCard)) == 31)
        latest = app.card(max(app.board.cards))
        assert latest is not None and latest.card.number == 31
        await until(lambda: latest.has_class("flash"))
        assert [view.card.number for view in app.query(".flash").results(OrderCard)] == [31]
        assert app.new_tickets == 1

        # order #1 is cooked: its items leave the all-day counts, nothing else does
        before = all_day(app)
        first = app.board.orders()[0]
        for status in (OrderStatus.PREPARING, OrderStatus.READY):
            with UnitOfWork(engine) as uow:
                orders.change_status(uow, rid, first.order_id, status)
                uow.commit()
        seen = len(envelopes(engine, rid)) - 2
        feed(app, rid, envelopes(engine, rid)[seen:])
        await until(lambda: "READY" in str(latest_of(app, first.order_id).content))
        cooked = Counter({line.name: line.quantity for line in first.lines})
        assert all_day(app) == {name: n - cooked[name] for name, n in before.items() if n - cooked[name]}
        assert app.new_tickets == 1  # a changed order is no new ticket
        await pilot.press("q")


def all_day(app: KdsApp) -> dict[str, int]:
    panel = str(app.query_one("#allday", Static).content).splitlines()[1:]
    return {
        name: int(count) for count, name in (line.split(maxsplit=1) for line in panel if line[:3].strip().isdigit())
    }


def latest_of(app: KdsApp, order_id: int) -> OrderCard:
    view = app.card(order_id)
    assert view is not None
    return view


def test_a_new_ticket_flashes_and_rings_once(kitchen):
    engine, rid, items = kitchen
    app = app_for(rid, Clock())
    run_async(new_ticket(app, engine, rid, items, envelopes(engine, rid)))


async def first_order(app: KdsApp, rid: int, events: list[dict]) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: app._started)  # settled with no open orders
        assert not app.query(OrderCard)
        feed(app, rid, [next(e for e in events if e["type"] == "new_order")])
        await until(lambda: app.query(".flash"))
        assert app.new_tickets == 1 and [view.card.number for view in app.query(".flash").results(OrderCard)] == [1]
        await pilot.press("q")


def test_the_first_order_on_a_quiet_screen_is_a_new_ticket(kitchen):
    engine, rid, _items = kitchen
    app = app_for(rid, Clock(), settle_seconds=0.01)
    run_async(first_order(app, rid, envelopes(engine, rid)))


async def bad_input(app: KdsApp, rid: int, good: dict) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        order = good["data"]["order"]
        huge = {**order, "id": 9001, "number": 77, "notes": "gluten " + "very long note " * 300}
        bad = [
            {**good, "id": "no-order", "data": {}},  # no order at all
            {**good, "id": "no-status", "data": {"order": {k: v for k, v in order.items() if k != "status"}}},
            {**good, "id": "odd-status", "data": {"order": {**order, "id": 9002, "status": "flambéed"}}},
            {
                **good,
                "id": "bad-qty",
                "data": {"order": {**order, "id": 9003, "items": [{"name": "X", "quantity": "lots"}]}},
            },
        ]
        before = app.board.ignored
        feed(app, rid, [*bad, {**good, "id": "huge", "data": {"order": huge}}])
        with app.client.lock:
            app.board.receive(topics.orders(rid), b"{not json")
        app.post_message(KdsApp.BoardChanged())
        await until(lambda: app.card(9001) is not None)
        await pilot.pause()
        assert app.board.ignored - before == 5  # four malformed events and one that is not JSON, each counted
        assert sorted(app.board.cards) == [9001]  # nothing of the bad ones on the board
        await until(lambda: "5 bad messages ignored" in str(app.query_one("#connection", Static).content))
        view = app.card(9001)
        assert view is not None and view.card.number == 77
        lines = rendered(view)
        assert all(len(line) <= view.content_region.width for line in lines)
        assert "!! gluten very long note" in " ".join(lines)  # an allergy note, wrapped inside the card
        await pilot.press("q")


def test_bad_events_are_counted_and_do_not_break_the_screen(kitchen):
    engine, rid, _items = kitchen
    good = next(e for e in envelopes(engine, rid) if e["type"] == "new_order")
    app = app_for(rid, Clock())
    run_async(bad_input(app, rid, good))

"""Editing a placed order, as a service, on SQLite and on PostgreSQL: the lines, the stock, the total, one
version bump, one `order_updated` with before/after, and the kitchen's chits; a refused edit writes nothing."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import col, select

from core.commands import CategoryIn, MenuIn, MenuItemIn, OrderEditIn, OrderIn, OrderItemIn
from core.domain import DomainError, NotFound, OrderStatus
from core.models import Category, Menu, MenuItem, Order, OrderItem, OutboxEvent, Restaurant, Ticket
from core.services import menu as menu_service
from core.services import order_edits, orders, tickets
from core.unit_of_work import UnitOfWork


@dataclass
class Site:
    engine: Engine
    rid: int
    burger: int  # grill, 10 in stock, 12.00
    spritz: int  # bar, 5 in stock, 7.00
    bread: int  # no station (kitchen), not tracked, 3.00


@pytest.fixture
def site(db: Engine) -> Site:
    with UnitOfWork(db) as uow:
        restaurant = Restaurant(name="Edits")
        uow.session.add(restaurant)
        uow.session.flush()
        rid = restaurant.id
        assert rid is not None
        menu = menu_service.create_row(uow, Menu, rid, MenuIn(name="Dinner"))
        grill = menu_service.create_row(uow, Category, rid, CategoryIn(name="Mains", station="grill"))
        bar = menu_service.create_row(uow, Category, rid, CategoryIn(name="Drinks", station="bar"))

        def item(name: str, price: int, category: int | None, stock: int | None) -> int:
            body = MenuItemIn(
                menu_id=menu.id,
                category_id=category,
                name=name,
                price_cents=price,
                enable_stock_tracking=stock is not None,
                stock_quantity=stock or 0,
            )
            row = menu_service.create_item(uow, rid, body)
            assert row.id is not None
            return row.id

        made = Site(
            db, rid, item("Burger", 1200, grill.id, 10), item("Spritz", 700, bar.id, 5), item("Bread", 300, None, None)
        )
        uow.commit()
        return made


def place(site: Site, *lines: tuple[int, int], modifiers: list[str] | None = None) -> int:
    with UnitOfWork(site.engine) as uow:
        items = [OrderItemIn(menu_item_id=item, quantity=qty, modifiers=modifiers or []) for item, qty in lines]
        order_id = orders.place_order(uow, site.rid, OrderIn(items=items, table_name="T4")).order.id
        uow.commit()
        assert order_id is not None
        return order_id


def edit(site: Site, order_id: int, **body: Any) -> orders.OrderView:
    with UnitOfWork(site.engine) as uow:
        view = order_edits.edit_order(uow, site.rid, order_id, OrderEditIn.model_validate(body))
        uow.commit()
        return view


def snapshot(site: Site, order_id: int) -> dict[str, Any]:
    """Everything an edit may write: the order, its lines, stock, tickets and the outbox."""
    with UnitOfWork(site.engine) as uow:
        order = uow.session.get(Order, order_id)
        assert order is not None
        lines = uow.session.exec(select(OrderItem).where(OrderItem.order_id == order_id).order_by(col(OrderItem.id)))
        stock = uow.session.exec(select(MenuItem.id, MenuItem.stock_quantity).order_by(col(MenuItem.id)))
        return {
            "order": (order.status, order.version, order.total_cents, order.notes),
            "lines": [(line.id, line.menu_item_id, line.quantity, tuple(line.modifiers), line.notes) for line in lines],
            "stock": list(stock),
            "tickets": len(uow.session.exec(select(Ticket.id)).all()),
            "outbox": len(uow.session.exec(select(OutboxEvent.id)).all()),
        }


def events_after(site: Site, outbox: int) -> list[dict[str, Any]]:
    with UnitOfWork(site.engine) as uow:
        rows = uow.session.exec(select(OutboxEvent).order_by(col(OutboxEvent.id)).offset(outbox))
        return [row.envelope for row in rows]


def stock(site: Site, item_id: int) -> int:
    with UnitOfWork(site.engine) as uow:
        row = uow.session.get(MenuItem, item_id)
        assert row is not None
        return row.stock_quantity


def test_an_edit_adds_reduces_changes_and_tells_each_touched_station_once(site: Site):
    order_id = place(site, (site.burger, 3), (site.spritz, 1), (site.bread, 1))
    before = snapshot(site, order_id)
    burger_line, spritz_line, bread_line = (line[0] for line in before["lines"])

    view = edit(
        site,
        order_id,
        add=[{"menu_item_id": site.spritz, "quantity": 2, "notes": "no ice"}],
        remove=[{"line_id": burger_line, "quantity": 1}],
        change=[{"line_id": bread_line, "modifiers": ["toasted"]}],
        notes="birthday",
    )

    after = snapshot(site, order_id)
    assert view.order.version == 2 and view.order.notes == "birthday"
    assert view.order.total_cents == 2 * 1200 + 700 + 300 + 2 * 700
    assert [(line[1], line[2], line[3]) for line in after["lines"]] == [
        (site.burger, 2, ()),
        (site.spritz, 1, ()),
        (site.bread, 1, ("toasted",)),
        (site.spritz, 2, ()),
    ]
    assert after["lines"][:3] == [
        (burger_line, site.burger, 2, (), ""),
        (spritz_line, site.spritz, 1, (), ""),
        (bread_line, site.bread, 1, ("toasted",), ""),
    ]
    assert stock(site, site.burger) == 10 - 3 + 1 and stock(site, site.spritz) == 5 - 1 - 2

    sent = events_after(site, before["outbox"])
    updated = [e for e in sent if e["type"] == "order_updated"]
    assert len(updated) == 1
    data = updated[0]["data"]
    assert data["change"] == "items" and data["order"]["version"] == 2 and len(data["order"]["items"]) == 4
    assert [(line["id"], line["quantity"], line["modifiers"]) for line in data["before"]] == [
        (burger_line, 3, []),
        (bread_line, 1, []),
    ]
    assert [(line["name"], line["quantity"], line["modifiers"]) for line in data["after"]] == [
        ("Burger", 2, []),
        ("Bread", 1, ["toasted"]),
        ("Spritz", 2, []),
    ]
    chits = [e["data"]["ticket"] for e in sent if e["type"] == "kitchen_ticket"]
    summary = sorted(
        (t["station"], t["kind"], t["version"], [(i["name"], i["quantity"], i["modifiers"]) for i in t["items"]])
        for t in chits
    )
    assert summary == [
        ("bar", "new", 2, [("Spritz", 2, [])]),
        ("grill", "void", 2, [("Burger", 1, [])]),
        ("kitchen", "new", 2, [("Bread", 1, ["toasted"])]),
        ("kitchen", "void", 2, [("Bread", 1, [])]),
    ]
    assert all(t["partial"] is True for t in chits)
    inventory = [e["data"]["item"]["id"] for e in sent if e["type"] == "inventory_updated"]
    assert sorted(inventory) == [site.burger, site.spritz]  # bread is not tracked
    seqs = [e["seq"] for e in sent]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_removing_a_whole_line_gives_its_stock_back_and_voids_it_alone(site: Site):
    order_id = place(site, (site.burger, 2), (site.spritz, 2))
    spritz_line = snapshot(site, order_id)["lines"][1][0]
    view = edit(
        site, order_id, remove=[{"line_id": spritz_line, "quantity": 1}, {"line_id": spritz_line, "quantity": 1}]
    )
    assert [line.name for line in view.lines] == ["Burger"] and view.order.total_cents == 2400
    assert stock(site, site.spritz) == 5
    with UnitOfWork(site.engine) as uow:
        rows = uow.session.exec(select(Ticket).where(Ticket.order_id == order_id).order_by(col(Ticket.id))).all()
        assert [(t.station, t.kind, t.partial, t.lines) for t in rows[2:]] == [
            ("bar", "void", True, [{"name": "Spritz", "quantity": 2, "modifiers": [], "notes": "", "course": None}])
        ]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"add": [{"menu_item_id": "spritz", "quantity": 5}]}, DomainError),  # 1 ordered + 5 > 5 in stock
        (
            {"add": [{"menu_item_id": "burger", "quantity": 1}], "remove": [{"line_id": "line", "quantity": 3}]},
            DomainError,
        ),
        ({"remove": [{"line_id": 999_999, "quantity": 1}]}, NotFound),
        ({"change": [{"line_id": 999_999, "notes": "x"}]}, NotFound),
        ({"add": [{"menu_item_id": 999_999, "quantity": 1}]}, NotFound),
        (
            {"remove": [{"line_id": "line", "quantity": 2}], "change": [{"line_id": "line", "notes": "rare"}]},
            DomainError,
        ),
        ({"notes": ""}, DomainError),  # changes nothing
    ],
)
def test_a_refused_edit_writes_nothing(site: Site, body: dict[str, Any], error: type[Exception]):
    order_id = place(site, (site.burger, 2), (site.spritz, 1))
    before = snapshot(site, order_id)
    line = before["lines"][0][0]
    names = {"spritz": site.spritz, "burger": site.burger, "line": line}
    for part in body.values():
        for entry in part if isinstance(part, list) else []:
            for key in ("menu_item_id", "line_id"):
                if isinstance(entry.get(key), str):
                    entry[key] = names[entry[key]]
    with pytest.raises(error):
        edit(site, order_id, **body)
    assert snapshot(site, order_id) == before


@pytest.mark.parametrize("status", [OrderStatus.COMPLETED, OrderStatus.CANCELLED])
def test_a_closed_order_is_not_edited(site: Site, status: OrderStatus):
    order_id = place(site, (site.burger, 1))
    with UnitOfWork(site.engine) as uow:
        for step in [OrderStatus.PREPARING, OrderStatus.READY, status] if status == OrderStatus.COMPLETED else [status]:
            orders.change_status(uow, site.rid, order_id, step)
        uow.commit()
    before = snapshot(site, order_id)
    with pytest.raises(DomainError, match="only open orders"):
        edit(site, order_id, add=[{"menu_item_id": site.bread, "quantity": 1}])
    assert snapshot(site, order_id) == before


def test_an_unprinted_chit_is_resent_with_its_own_lines_and_a_cancel_voids_what_the_order_has_now(site: Site):
    order_id = place(site, (site.burger, 2))
    burger_line = snapshot(site, order_id)["lines"][0][0]
    edit(
        site,
        order_id,
        remove=[{"line_id": burger_line, "quantity": 1}],
        add=[{"menu_item_id": site.burger, "quantity": 1, "modifiers": ["rare"]}],
    )
    with UnitOfWork(site.engine) as uow:
        mark = len(uow.session.exec(select(OutboxEvent.id)).all())
        assert tickets.resend_unprinted(uow, site.rid, "grill") == 3  # the first ticket, the VOID, the ADD
        orders.change_status(uow, site.rid, order_id, OrderStatus.CANCELLED)
        uow.commit()
    sent = [e["data"] for e in events_after(site, mark) if e["type"] == "kitchen_ticket"]
    assert [
        (t["ticket"]["kind"], t.get("resent", False), [(i["quantity"], i["modifiers"]) for i in t["ticket"]["items"]])
        for t in sent
    ] == [
        ("new", True, [(2, [])]),
        ("void", True, [(1, [])]),
        ("new", True, [(1, ["rare"])]),
        ("void", False, [(1, []), (1, ["rare"])]),  # the cancel: the whole order as it is now
    ]
    assert "partial" not in sent[0]["ticket"] and "partial" not in sent[3]["ticket"]
    assert stock(site, site.burger) == 10
    with UnitOfWork(site.engine) as uow:  # cancelled now: only the whole-order void is worth sending again
        assert tickets.resend_unprinted(uow, site.rid, "grill") == 1


def test_edits_at_once_never_sell_past_the_stock_and_bump_the_version_once_each(site: Site):
    """Ten edits of one order at once, each adding a spritz, against 4 left: the order row lock (and the item
    locks after it) lets exactly 4 through, on PostgreSQL as on SQLite; versions and seqs lose nothing."""
    order_id = place(site, (site.spritz, 1))
    start = snapshot(site, order_id)
    barrier = threading.Barrier(10)
    results: list[object] = [None] * 10

    def run(i: int) -> None:
        barrier.wait(10)
        try:
            with UnitOfWork(site.engine) as uow:
                body = OrderEditIn(add=[OrderItemIn(menu_item_id=site.spritz, quantity=1)])
                results[i] = order_edits.edit_order(uow, site.rid, order_id, body).order.version
                uow.commit()
        except DomainError as exc:
            results[i] = exc
        except BaseException as exc:  # shown by the assertion below
            results[i] = ("crashed", exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(isinstance(r, tuple) for r in results), results
    won = sorted(r for r in results if isinstance(r, int))
    assert won == [2, 3, 4, 5]
    assert all("not enough Spritz" in str(r) for r in results if isinstance(r, DomainError))
    after = snapshot(site, order_id)
    assert stock(site, site.spritz) == 0 and len(after["lines"]) == 5 and after["order"][1] == 5
    assert after["order"][2] == 5 * 700
    sent = events_after(site, start["outbox"])
    assert [e["seq"] for e in sent] == list(range(sent[0]["seq"], sent[0]["seq"] + len(sent)))
    assert len([e for e in sent if e["type"] == "order_updated"]) == 4

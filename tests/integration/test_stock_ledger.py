"""Write-offs and the stock ledger through the REST app and the services, on SQLite and PostgreSQL:
every stock change leaves one `stock_movement` line, and the lines sum to the item's figures."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import col, select

from config.settings import Settings
from core.commands import MenuIn, MenuItemIn, OrderIn, OrderItemIn
from core.domain import DomainError, OrderStatus
from core.models import Menu, MenuItem, Restaurant, StockMovement
from core.services import inventory, orders
from core.services import menu as menu_service
from core.unit_of_work import UnitOfWork
from tests.support import App, add_burger_and_fries


@pytest.fixture
def shop(db: Engine, tmp_path) -> dict[str, Any]:
    """A restaurant with a stock-tracked Burger (10) and untracked Fries, and its admin logged in."""
    app = App(Settings(data_dir=tmp_path / "app"), db)
    rid = app.add_restaurant("Ledger", "admin@ledger.example.com")
    login = app.http().post("/auth/login", json={"email": "admin@ledger.example.com", "password": "secret-pass"})
    assert login.status_code == 200, login.text
    admin = app.http(login.json()["access_token"])
    burger, fries = add_burger_and_fries(admin, rid, stock=10, low_stock=3)
    base = f"/restaurants/{rid}/inventory"
    return {"app": app, "rid": rid, "admin": admin, "burger": burger["id"], "fries": fries["id"], "base": base}


def events(shop: dict[str, Any]) -> list[dict]:
    reader = shop["app"].http(shop["app"].api_token("reader", "admin", shop["rid"]))
    return reader.get(f"/restaurants/{shop['rid']}/events", params={"limit": 1000}).json()


def ledger(shop: dict[str, Any], item_id: int, **params: Any) -> dict[str, Any]:
    response = shop["admin"].get(f"{shop['base']}/{item_id}/movements", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def state(shop: dict[str, Any]) -> tuple[Any, ...]:
    """Everything a refused write must leave alone: both items, their ledgers, the outbox."""
    admin, rid = shop["admin"], shop["rid"]
    items = [admin.get(f"/restaurants/{rid}/menu-items/{i}").json() for i in (shop["burger"], shop["fries"])]
    return items, ledger(shop, shop["burger"]), ledger(shop, shop["fries"]), events(shop)


def test_a_write_off_takes_damaged_units_out_of_stock_and_the_ledger_says_where_every_burger_went(shop):
    admin, base, burger = shop["admin"], shop["base"], shop["burger"]
    me = admin.get("/auth/me").json()["sub"]
    assert me.startswith("user-")  # a login's subject: user-<id>
    assert admin.post(f"{base}/{burger}/damage", json={"quantity": 4, "reason": "dropped"}).status_code == 200
    written = admin.post(f"{base}/{burger}/write-off", json={"quantity": 3, "reason": "binned"})
    assert written.status_code == 200, written.text
    body = written.json()
    assert (body["stock_quantity"], body["damaged_quantity"], body["available_quantity"]) == (7, 1, 6)
    update = [e for e in events(shop) if e["type"] == "inventory_updated"][-1]
    assert (update["data"]["kind"], update["data"]["reason"]) == ("written_off", "binned")
    assert update["data"]["item"]["stock_quantity"] == 7

    placed = admin.post(
        f"/restaurants/{shop['rid']}/orders", json={"items": [{"menu_item_id": burger, "quantity": 2}]}
    ).json()
    cancelled = admin.post(f"/restaurants/{shop['rid']}/orders/{placed['id']}/status", json={"status": "cancelled"})
    assert cancelled.status_code == 200
    assert admin.post(f"{base}/{burger}/receive", json={"quantity": 5, "reason": "delivery"}).status_code == 200
    assert admin.post(f"{base}/{burger}/adjust", json={"delta": -1, "reason": "recount"}).status_code == 200

    lines = ledger(shop, burger)
    assert lines["count"] == 7
    assert [
        (m["kind"], m["stock_delta"], m["damaged_delta"], m["stock_after"], m["damaged_after"]) for m in lines["data"]
    ] == [
        ("adjusted", -1, 0, 11, 1),
        ("received", 5, 0, 12, 1),
        ("returned", 2, 0, 7, 1),
        ("sold", -2, 0, 5, 1),
        ("written_off", -3, -3, 7, 1),
        ("damaged", 0, 4, 10, 4),
        ("counted", 10, 0, 10, 0),  # the opening stock of the new item
    ]
    assert [m["order_id"] for m in lines["data"]] == [None, None, placed["id"], placed["id"], None, None, None]
    assert [m["reason"] for m in lines["data"]][:5] == [
        "recount",
        "delivery",
        f"order {placed['id']} cancelled",
        f"order {placed['id']}",
        "binned",
    ]
    assert {m["actor"] for m in lines["data"]} == {me}  # the logged-in admin, by user id
    item = admin.get(f"/restaurants/{shop['rid']}/menu-items/{burger}").json()
    assert sum(m["stock_delta"] for m in lines["data"]) == item["stock_quantity"] == 11
    assert sum(m["damaged_delta"] for m in lines["data"]) == item["damaged_quantity"] == 1

    sold = ledger(shop, burger, kind="sold")
    assert sold["count"] == 1 and [m["kind"] for m in sold["data"]] == ["sold"]
    second_page = ledger(shop, burger, skip=3, limit=2)
    assert second_page["count"] == 7 and [m["kind"] for m in second_page["data"]] == ["sold", "written_off"]


def test_an_untracked_item_reports_no_available_quantity_and_its_opening_stock_is_in_the_ledger(shop):
    admin, rid = shop["admin"], shop["rid"]
    fries = admin.get(f"/restaurants/{rid}/menu-items/{shop['fries']}").json()
    assert fries["enable_stock_tracking"] is False and fries["available_quantity"] is None
    created = [e for e in events(shop) if e["data"].get("menu_item", {}).get("id") == fries["id"]]
    assert created[0]["data"]["menu_item"]["available_quantity"] is None
    menu_id = fries["menu_id"]
    water = admin.post(
        f"/restaurants/{rid}/menu-items",
        json={"menu_id": menu_id, "name": "Water", "price_cents": 0, "stock_quantity": 6},
    ).json()
    assert water["available_quantity"] is None
    on = admin.patch(f"/restaurants/{rid}/menu-items/{water['id']}", json={"enable_stock_tracking": True})
    assert on.json()["available_quantity"] == 6
    lines = ledger(shop, water["id"])
    assert [(m["kind"], m["stock_delta"]) for m in lines["data"]] == [
        ("counted", 6)
    ]  # turning tracking on moves nothing


def test_the_write_off_is_idempotent_like_its_neighbours(shop):
    admin, base, burger = shop["admin"], shop["base"], shop["burger"]
    admin.post(f"{base}/{burger}/damage", json={"quantity": 2})
    key = {"Idempotency-Key": "write-off-1"}
    first = admin.post(f"{base}/{burger}/write-off", json={"quantity": 1, "reason": "binned"}, headers=key)
    again = admin.post(f"{base}/{burger}/write-off", json={"quantity": 1, "reason": "binned"}, headers=key)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json() == first.json()
    assert ledger(shop, burger, kind="written_off")["count"] == 1
    assert admin.get(f"/restaurants/{shop['rid']}/menu-items/{burger}").json()["damaged_quantity"] == 1


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"quantity": 0, "reason": "x"}, [["body", "quantity"]]),
        ({"quantity": 10_001, "reason": "x"}, [["body", "quantity"]]),
        ({"quantity": "1", "reason": "x"}, [["body", "quantity"]]),
        ({"quantity": 1}, [["body", "reason"]]),
        ({"quantity": 1, "reason": "   "}, [["body", "reason"]]),
        ({"quantity": 1, "reason": "x" * 1000}, [["body", "reason"]]),
        ({"quantity": 1, "reason": "x", "extra": 1}, [["body", "extra"]]),
        ({}, [["body", "quantity"], ["body", "reason"]]),
    ],
)
def test_a_bad_write_off_body_is_422_with_its_fields_and_writes_nothing(shop, body, fields):
    admin, base, burger = shop["admin"], shop["base"], shop["burger"]
    admin.post(f"{base}/{burger}/damage", json={"quantity": 2})
    before = state(shop)
    response = admin.post(f"{base}/{burger}/write-off", json=body)
    assert response.status_code == 422
    assert sorted(error["loc"] for error in response.json()["detail"]) == fields
    assert state(shop) == before


def test_a_write_off_breaking_a_rule_is_409_and_writes_nothing(shop):
    admin, base, rid = shop["admin"], shop["base"], shop["rid"]
    admin.post(f"{base}/{shop['burger']}/damage", json={"quantity": 2})
    before = state(shop)
    more = admin.post(f"{base}/{shop['burger']}/write-off", json={"quantity": 3, "reason": "binned"})
    assert more.status_code == 409 and "only 2 damaged" in more.json()["detail"]
    untracked = admin.post(f"{base}/{shop['fries']}/write-off", json={"quantity": 1, "reason": "binned"})
    assert untracked.status_code == 409 and "tracking is off" in untracked.json()["detail"]
    delivered = admin.post(f"{base}/{shop['fries']}/receive", json={"quantity": 1})
    assert delivered.status_code == 409 and "tracking is off" in delivered.json()["detail"]
    bad_bodies = ({"quantity": 0}, {"quantity": -2}, {"quantity": "3"}, {"reason": "none"}, {"quantity": 1, "x": 1})
    for bad in bad_bodies:
        refused = admin.post(f"{base}/{shop['burger']}/receive", json=bad)
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][0] == "body", refused.text
    # the neighbours' refusals write no ledger line either
    assert admin.post(f"{base}/{shop['burger']}/adjust", json={"delta": -9}).status_code == 409
    assert admin.post(f"{base}/{shop['burger']}/damage", json={"quantity": 9}).status_code == 409
    over = {"items": [{"menu_item_id": shop["burger"], "quantity": 9}]}
    assert admin.post(f"/restaurants/{rid}/orders", json=over).status_code == 409
    missing = admin.post(f"{base}/999999/write-off", json={"quantity": 1, "reason": "binned"})
    assert missing.status_code == 404
    staff_token = shop["app"].api_token("staff-1", "staff", rid)
    staff = (
        shop["app"].http(staff_token).post(f"{base}/{shop['burger']}/write-off", json={"quantity": 1, "reason": "x"})
    )
    assert staff.status_code == 403  # admins only, like adjust and damage
    assert state(shop) == before


def test_the_ledger_refuses_bad_queries_and_other_restaurants(shop):
    admin, base, burger, app = shop["admin"], shop["base"], shop["burger"], shop["app"]
    for params, field in [({"kind": "stolen"}, "kind"), ({"limit": 0}, "limit"), ({"skip": -1}, "skip")]:
        response = admin.get(f"{base}/{burger}/movements", params=params)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", field]
    assert admin.get(f"{base}/0/movements").status_code == 422
    assert admin.get(f"{base}/999999/movements").status_code == 404
    other = app.add_restaurant("Other", "admin@other.example.com")
    stranger = app.http(app.api_token("user-x", "admin", other))
    assert stranger.get(f"{base}/{burger}/movements").status_code == 403
    assert stranger.get(f"/restaurants/{other}/inventory/{burger}/movements").status_code == 404
    staff = app.http(app.api_token("staff-1", "staff", shop["rid"]))
    assert staff.get(f"{base}/{burger}/movements").json()["count"] == 1  # staff may read it


def test_replaying_the_ledger_of_a_random_day_gives_the_items_row(db: Engine):
    """Services only, on the real database: sales, cancels, damage, write-offs, scale counts and
    adjustments in a seeded random order, refused ones included; the ledger sums to the row."""
    with UnitOfWork(db) as uow:
        restaurant = Restaurant(name="Replay")
        uow.session.add(restaurant)
        uow.session.flush()
        assert restaurant.id is not None
        rid = restaurant.id
        menu = menu_service.create_row(uow, Menu, rid, MenuIn(name="Menu"))
        assert menu.id is not None
        body = MenuItemIn(
            menu_id=menu.id, name="Burger", price_cents=100, enable_stock_tracking=True, stock_quantity=20
        )
        item_id = menu_service.create_item(uow, rid, body, actor="user-1").id
        uow.commit()
    assert item_id is not None
    rng = random.Random(16)
    open_orders: list[int] = []
    applied = refused = 0
    for _ in range(80):
        what, n = rng.choice(["sell", "cancel", "damage", "write_off", "count", "adjust"]), rng.randint(-5, 8)
        try:
            with UnitOfWork(db) as uow:
                if what == "sell":
                    line = OrderItemIn(menu_item_id=item_id, quantity=max(n, 1))
                    open_orders.append(
                        orders.place_order(uow, rid, OrderIn(items=[line]), actor="user-1").order.id or 0
                    )
                elif what == "cancel":
                    if not open_orders:
                        continue
                    orders.change_status(
                        uow, rid, open_orders.pop(rng.randrange(len(open_orders))), OrderStatus.CANCELLED
                    )
                elif what == "damage":
                    inventory.mark_damaged(uow, rid, item_id, n, "dropped", actor="user-1")
                elif what == "write_off":
                    inventory.write_off(uow, rid, item_id, n, "binned", actor="user-1")
                elif what == "count":
                    weighed = uow.session.get(MenuItem, item_id)
                    assert weighed is not None
                    inventory.count_stock(
                        uow, rid, item_id, max(0, weighed.stock_quantity + n), "scale", actor="device:s1"
                    )
                else:
                    inventory.adjust_stock(uow, rid, item_id, n, "fix", actor="user-1")
                uow.commit()
                applied += 1
        except DomainError:
            refused += 1
    assert applied > 20 and refused > 5  # the seed exercises both
    with UnitOfWork(db) as uow:
        row = uow.session.get(MenuItem, item_id)
        query = select(StockMovement).where(StockMovement.item_id == item_id).order_by(col(StockMovement.id))
        lines = [
            (m.kind, m.stock_delta, m.damaged_delta, m.stock_after, m.damaged_after, m.order_id)
            for m in uow.session.exec(query)
        ]
        assert row is not None
        figures = (row.stock_quantity, row.damaged_quantity)
    stock = damaged = 0
    for _kind, stock_delta, damaged_delta, stock_after, damaged_after, _order in lines:
        stock, damaged = stock + stock_delta, damaged + damaged_delta
        assert (stock_after, damaged_after) == (stock, damaged)  # each line's after is the running sum
        assert stock - damaged >= 0 and damaged >= 0
    assert (stock, damaged) == figures
    assert {line[0] for line in lines} >= {"counted", "sold", "returned", "damaged", "written_off", "adjusted"}
    assert all(line[5] is not None for line in lines if line[0] in ("sold", "returned"))

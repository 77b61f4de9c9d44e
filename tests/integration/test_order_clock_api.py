"""The restaurant's clock and the back office through REST: time zone and day start on a restaurant,
items that say whether they sell today, the filtered orders list and the day's totals; bad input is a
422 with the field named and nothing written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import func, select

from core import clock
from core.models import Order, Restaurant
from core.unit_of_work import UnitOfWork
from tests.support import App

TOKYO = "Asia/Tokyo"


def count(app: App, model: type[Order] | type[Restaurant]) -> int:
    with UnitOfWork(app.engine) as uow:
        return uow.session.exec(select(func.count()).select_from(model)).one()


def restaurant_row(app: App, rid: int) -> tuple[str, int]:
    with UnitOfWork(app.engine) as uow:
        row = uow.session.get(Restaurant, rid)
        assert row is not None
        return row.timezone, row.day_starts_at


def test_a_restaurant_is_made_with_its_clock_and_a_bad_one_is_refused(app: App, chain: dict[str, Any]):
    boss = chain["boss"]
    made = boss.post("/restaurants", json={"name": "Sushi", "timezone": TOKYO, "day_starts_at": 5})
    assert made.status_code == 201, made.text
    assert (made.json()["timezone"], made.json()["day_starts_at"]) == (TOKYO, 5)
    assert chain["Bistro"]["admin"].get("/restaurants").json()["data"][0]["timezone"] == "UTC"  # the default
    before = count(app, Restaurant)
    for bad, field in (
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"day_starts_at": 24}, "day_starts_at"),
        ({"day_starts_at": -1}, "day_starts_at"),
        ({"day_starts_at": "4"}, "day_starts_at"),
    ):
        answer = boss.post("/restaurants", json={"name": "Bad", **bad})
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["detail"][0]["loc"] == ["body", field]
    assert count(app, Restaurant) == before


def test_an_admin_sets_the_clock_and_bad_input_changes_nothing(app: App, chain: dict[str, Any]):
    rid, admin = chain["Bistro"]["rid"], chain["Bistro"]["admin"]
    changed = admin.patch(f"/restaurants/{rid}", json={"timezone": TOKYO, "day_starts_at": 6})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["timezone"], changed.json()["day_starts_at"]) == (TOKYO, 6)
    for bad, field in (
        ({"timezone": "Europe/Atlantis"}, "timezone"),
        ({"timezone": None}, None),
        ({"day_starts_at": 25}, "day_starts_at"),
        ({"colour": "red"}, "colour"),
    ):
        answer = admin.patch(f"/restaurants/{rid}", json=bad)
        assert answer.status_code == 422, (bad, answer.text)
        if field is not None:
            assert answer.json()["detail"][0]["loc"] == ["body", field]
    assert restaurant_row(app, rid) == (TOKYO, 6)
    other = chain["Cafe"]["admin"].patch(f"/restaurants/{rid}", json={"timezone": "UTC"})
    assert other.status_code == 403
    staff = app.http(app.api_token("user-staff", "staff", rid)).patch(f"/restaurants/{rid}", json={"timezone": "UTC"})
    assert staff.status_code == 403
    assert restaurant_row(app, rid) == (TOKYO, 6)
    boss = chain["boss"]
    assert boss.patch(f"/restaurants/{rid}", json={"day_starts_at": 5}).status_code == 200  # a super_admin may
    assert boss.post(f"/restaurants/{rid}/archive").status_code == 200
    archived = boss.patch(f"/restaurants/{rid}", json={"timezone": "UTC"})
    assert archived.status_code == 409 and "archived" in archived.json()["detail"]
    assert restaurant_row(app, rid) == (TOKYO, 5)
    assert boss.patch("/restaurants/999999", json={"timezone": "UTC"}).status_code == 404


def test_items_say_whether_they_sell_today_and_an_order_for_one_that_does_not_is_409(app: App, chain: dict[str, Any]):
    rid, admin = chain["Bistro"]["rid"], chain["Bistro"]["admin"]
    assert admin.patch(f"/restaurants/{rid}", json={"timezone": TOKYO}).status_code == 200
    today = clock.local_date(datetime.now(UTC), TOKYO).isoweekday()
    other_days = [day for day in range(1, 8) if day != today]
    daily = app.add_menu_item(rid, "Soup")
    special = app.add_menu_item(rid, "Special", available_days=other_days)
    off = app.add_menu_item(rid, "Off", available=False)
    listed = {item["name"]: item for item in admin.get(f"/restaurants/{rid}/menu-items").json()["data"]}
    assert [(listed[name]["availability"], listed[name]["available_now"]) for name in ("Soup", "Special", "Off")] == [
        ("available", True),
        ("not_today", False),
        ("off", False),
    ]
    assert admin.get(f"/restaurants/{rid}/menu-items/{special}").json()["availability"] == "not_today"
    before = count(app, Order)
    refused = admin.post(f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": special, "quantity": 1}]})
    assert refused.status_code == 409
    assert "Special is not available today" in refused.json()["detail"]
    switched_off = admin.post(f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": off, "quantity": 1}]})
    assert switched_off.status_code == 409 and switched_off.json()["detail"] == "Off is not available"
    assert count(app, Order) == before
    placed = admin.post(f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": daily, "quantity": 1}]})
    assert placed.status_code == 201, placed.text
    business_day = clock.business_date(datetime.now(UTC), TOKYO, 4)
    assert placed.json()["business_date"] in {str(business_day), str(business_day + timedelta(days=1))}


def test_the_orders_list_filters_and_the_days_totals(app: App, chain: dict[str, Any]):
    rid, admin = chain["Bistro"]["rid"], chain["Bistro"]["admin"]
    soup = app.add_menu_item(rid, "Pumpkin Soup")  # 500
    tea = app.add_menu_item(rid, "Green Tea")
    first = admin.post(
        f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": soup, "quantity": 2}], "table_name": "T1"}
    ).json()
    second = admin.post(
        f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": tea, "quantity": 1}], "pickup_name": "Ann"}
    ).json()
    assert admin.post(f"/restaurants/{rid}/orders/{second['id']}/status", json={"status": "cancelled"}).is_success
    assert admin.post(f"/restaurants/{rid}/orders/{first['id']}/pay").is_success  # only a paid order is refunded
    assert admin.post(f"/restaurants/{rid}/orders/{first['id']}/refunds", json={"amount_cents": 300}).is_success

    def ids(**params: Any) -> tuple[list[int], int]:
        answer = admin.get(f"/restaurants/{rid}/orders", params=params)
        assert answer.status_code == 200, answer.text
        return [order["id"] for order in answer.json()["data"]], answer.json()["count"]

    assert ids() == ([second["id"], first["id"]], 2)
    assert ids(sort="oldest", limit=1) == ([first["id"]], 2)
    assert ids(status=["pending", "cancelled"]) == ([second["id"], first["id"]], 2)
    assert ids(status="cancelled") == ([second["id"]], 1)
    assert ids(q="PUMPKIN") == ([first["id"]], 1)
    assert ids(table="t1") == ([first["id"]], 1)
    day = first["business_date"]
    assert ids(**{"from": day, "to": day, "sort": "total"}) == ([first["id"], second["id"]], 2)

    summary = admin.get(f"/restaurants/{rid}/orders/summary")
    assert summary.status_code == 200, summary.text
    totals = summary.json()
    assert (totals["business_date"], totals["orders"]) == (day, 2)
    assert (totals["revenue_cents"], totals["refunds_cents"], totals["net_cents"]) == (1000, 300, 700)
    assert totals["by_status"]["cancelled"] == 1 and totals["by_status"]["pending"] == 1
    assert admin.get(f"/restaurants/{rid}/orders/summary", params={"date": "2020-01-01"}).json()["orders"] == 0
    assert chain["Cafe"]["admin"].get(f"/restaurants/{rid}/orders/summary").status_code == 403


def test_bad_list_and_summary_parameters_are_422_with_the_field_named(app: App, chain: dict[str, Any]):
    rid, admin = chain["Bistro"]["rid"], chain["Bistro"]["admin"]
    for params, field in (
        ({"from": "2026-02-30"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"sort": "cheapest"}, "sort"),
        ({"status": "eaten"}, "status"),
        ({"q": "x" * 101}, "q"),
        ({"from": "2026-06-02", "to": "2026-06-01"}, None),
    ):
        answer = admin.get(f"/restaurants/{rid}/orders", params=params)
        assert answer.status_code == 422, (params, answer.text)
        loc = answer.json()["detail"][0]["loc"]
        assert loc[0] == "query" and (field is None or field in loc), loc
    for bad in ("2026-13-01", "today", "2026-06-01T00:00:00"):
        answer = admin.get(f"/restaurants/{rid}/orders/summary", params={"date": bad})
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["detail"][0]["loc"] == ["query", "date"]

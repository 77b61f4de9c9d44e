"""`PATCH /restaurants/{rid}/orders/{id}` through the whole app: who may edit, bad input (422 with the field),
broken rules (409, 404), and that a refused edit writes nothing: stock, total, version, lines, outbox."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import App, add_burger_and_fries


@pytest.fixture
def shop(app: App) -> dict[str, Any]:
    rid = app.add_restaurant("A", "a@example.com")
    other = app.add_restaurant("B", "b@example.com")
    admin = app.http(app.api_token("admin-a", "admin", rid))
    category = admin.post(f"/restaurants/{rid}/categories", json={"name": "Burgers", "station": "grill"}).json()
    burger, fries = add_burger_and_fries(admin, rid, stock=5, low_stock=0, category_id=category["id"])
    staff = app.http(app.api_token("staff-a", "staff", rid))
    placed = staff.post(
        f"/restaurants/{rid}/orders",
        json={"items": [{"menu_item_id": burger["id"], "quantity": 2}, {"menu_item_id": fries["id"], "quantity": 1}]},
    )
    assert placed.status_code == 201, placed.text
    return {
        "rid": rid,
        "other": other,
        "admin": admin,
        "staff": staff,
        "burger": burger,
        "fries": fries,
        "order": placed.json(),
    }


def state(app: App, shop: dict[str, Any]) -> dict[str, Any]:
    """What an edit writes, read back through the API."""
    rid, admin = shop["rid"], shop["admin"]
    order = admin.get(f"/restaurants/{rid}/orders/{shop['order']['id']}").json()
    burger = admin.get(f"/restaurants/{rid}/menu-items/{shop['burger']['id']}").json()
    outbox = admin.get(f"/restaurants/{rid}/events", params={"after": 0, "limit": 1000}).json()
    return {"order": order, "burger_stock": burger["stock_quantity"], "events": len(outbox)}


def url(shop: dict[str, Any], order_id: int | None = None) -> str:
    return f"/restaurants/{shop['rid']}/orders/{order_id or shop['order']['id']}"


def test_staff_edits_an_order_once_per_idempotency_key(app: App, shop):
    line = shop["order"]["items"][0]["id"]
    body = {
        "remove": [{"line_id": line, "quantity": 1}],
        "add": [{"menu_item_id": shop["burger"]["id"], "quantity": 3}],
    }
    headers = {"Idempotency-Key": "edit-1"}
    first = shop["staff"].patch(url(shop), json=body, headers=headers)
    assert first.status_code == 200, first.text
    edited = first.json()
    assert edited["version"] == 2 and edited["total_cents"] == (1 + 3) * 1200 + 400
    assert [(item["name"], item["quantity"]) for item in edited["items"]] == [
        ("Burger", 1),
        ("Fries", 1),
        ("Burger", 3),
    ]
    after = state(app, shop)
    assert after["burger_stock"] == 5 - 2 + 1 - 3
    again = shop["staff"].patch(url(shop), json=body, headers=headers)
    assert again.status_code == 200 and again.json() == edited
    assert state(app, shop) == after  # the repeat wrote nothing
    assert shop["admin"].patch(url(shop), json={"notes": "by the window"}).json()["notes"] == "by the window"


def test_a_tablet_or_another_restaurant_may_not_edit(app: App, shop):
    tablet_token = app.add_device(shop["rid"], "tablet-1", "tablet")
    before = state(app, shop)
    body = {"notes": "x"}
    assert app.http(tablet_token).patch(url(shop), json=body).status_code == 401  # a broker token is not an API one
    as_tablet = app.http(app.api_token("tablet-1", "tablet", shop["rid"]))
    assert as_tablet.patch(url(shop), json=body).status_code == 403
    other = app.http(app.api_token("admin-b", "admin", shop["other"]))
    assert other.patch(url(shop), json=body).status_code == 403
    assert app.http().patch(url(shop), json=body).status_code == 401
    assert state(app, shop) == before


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body"]),  # changes nothing
        ({"add": [], "remove": [], "change": []}, ["body"]),
        ({"remove": [{"line_id": 1, "quantity": 0}]}, ["body", "remove", 0, "quantity"]),
        ({"remove": [{"line_id": "1", "quantity": 1}]}, ["body", "remove", 0, "line_id"]),
        ({"remove": [{"line_id": 1}]}, ["body", "remove", 0, "quantity"]),
        ({"change": [{"line_id": 1}]}, ["body", "change", 0]),  # neither modifiers nor notes
        ({"change": [{"line_id": 1, "modifiers": [""]}]}, ["body", "change", 0, "modifiers", 0]),
        ({"add": [{"menu_item_id": 1, "quantity": 1000}]}, ["body", "add", 0, "quantity"]),
        ({"add": [{"menu_item_id": 1, "quantity": 1, "price_cents": 1}]}, ["body", "add", 0, "price_cents"]),
        ({"notes": None}, ["body", "notes"]),
        ({"change": [{"line_id": 1, "notes": None}]}, ["body", "change", 0, "notes"]),
        ({"status": "ready"}, ["body", "status"]),
        ({"notes": "a\x1bb"}, ["body", "notes"]),
    ],
)
def test_bad_input_is_422_with_the_field_and_writes_nothing(app: App, shop, body, loc):
    before = state(app, shop)
    response = shop["staff"].patch(url(shop), json=body)
    assert response.status_code == 422, response.text
    assert loc in [error["loc"][: len(loc)] for error in response.json()["detail"]], response.json()
    assert state(app, shop) == before


def test_broken_rules_are_409_or_404_and_write_nothing(app: App, shop):
    staff, line = shop["staff"], shop["order"]["items"][0]["id"]
    before = state(app, shop)
    over = staff.patch(url(shop), json={"add": [{"menu_item_id": shop["burger"]["id"], "quantity": 4}]})
    assert over.status_code == 409 and "not enough Burger" in over.json()["detail"]
    # the over-order is decided before the removal in the same edit is written
    mixed = {
        "remove": [{"line_id": line, "quantity": 2}],
        "add": [{"menu_item_id": shop["burger"]["id"], "quantity": 6}],
    }
    assert staff.patch(url(shop), json=mixed).status_code == 409
    too_many = staff.patch(url(shop), json={"remove": [{"line_id": line, "quantity": 3}]})
    assert too_many.status_code == 409
    assert staff.patch(url(shop), json={"remove": [{"line_id": 999_999, "quantity": 1}]}).status_code == 404
    assert staff.patch(url(shop), json={"change": [{"line_id": 999_999, "notes": "rare"}]}).status_code == 404
    assert staff.patch(url(shop), json={"add": [{"menu_item_id": 999_999, "quantity": 1}]}).status_code == 404
    assert staff.patch(url(shop, 999_999), json={"notes": "x"}).status_code == 404
    assert state(app, shop) == before


@pytest.mark.parametrize("steps", [["cancelled"], ["preparing", "ready", "completed"]])
def test_a_closed_order_is_409_and_nothing_moves(app: App, shop, steps):
    for step in steps:
        moved = shop["staff"].post(f"{url(shop)}/status", json={"status": step})
        assert moved.status_code == 200, moved.text
    before = state(app, shop)
    response = shop["staff"].patch(url(shop), json={"add": [{"menu_item_id": shop["fries"]["id"], "quantity": 1}]})
    assert response.status_code == 409 and "only open orders" in response.json()["detail"]
    assert state(app, shop) == before


def test_a_paid_order_is_not_edited_its_refunds_name_its_lines(app: App, shop):
    """A paid bill changes by refunds (which record the lines they give back), never by an edit."""
    assert shop["staff"].post(f"{url(shop)}/pay").status_code == 200
    before = state(app, shop)
    response = shop["staff"].patch(url(shop), json={"add": [{"menu_item_id": shop["fries"]["id"], "quantity": 1}]})
    assert response.status_code == 409 and "paid" in response.json()["detail"]
    assert state(app, shop) == before

"""Payments and refunds through the REST app, on SQLite and on PostgreSQL (the `db` fixture): each
refund is a record (amount, reason, who, when, lines) listed oldest first and carried by its event,
the order's refunded total is their sum, and an order that was never paid is never refunded.
Bad input to each route is 422 with the field named, a broken rule 409, and neither writes anything."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, text

from config.settings import Settings
from tests.integration.accounts import login
from tests.support import App, add_burger_and_fries

ADMIN = "ann@bistro.example"


@pytest.fixture
def shop(db: Engine, tmp_path) -> dict[str, Any]:
    app = App(Settings(data_dir=tmp_path / "data"), db)
    rid = app.add_restaurant("Bistro", ADMIN)
    admin = login(app, ADMIN, "secret-pass")  # a login's token: the refund records the user
    burger, fries = add_burger_and_fries(admin, rid, stock=10, low_stock=0)
    staff = app.http(app.api_token("user-staff", "staff", rid))
    return {"app": app, "rid": rid, "admin": admin, "staff": staff, "burger": burger, "fries": fries}


def place(shop: dict[str, Any], burgers: int = 2, fries: int = 1) -> dict[str, Any]:
    items = [{"menu_item_id": shop["burger"]["id"], "quantity": burgers}]
    items.append({"menu_item_id": shop["fries"]["id"], "quantity": fries})
    answer = shop["admin"].post(f"/restaurants/{shop['rid']}/orders", json={"items": items})
    assert answer.status_code == 201, answer.text
    return answer.json()  # total 2 x 1200 + 400 = 2800


def events(shop: dict[str, Any]) -> list[dict[str, Any]]:
    answer = shop["admin"].get(f"/restaurants/{shop['rid']}/events", params={"after": 0, "limit": 1000})
    return answer.json()


def written(shop: dict[str, Any], order_id: int) -> tuple[Any, ...]:
    """Everything a refused request could have written: refund rows, events, the order's figures."""
    with shop["app"].engine.connect() as connection:
        refunds = connection.execute(text("SELECT count(*) FROM refund")).scalar_one()
        outbox = connection.execute(text("SELECT count(*) FROM outbox_event")).scalar_one()
        order = connection.execute(
            text("SELECT version, refunded_cents, paid_at FROM orders WHERE id = :id"), {"id": order_id}
        ).one()
    return refunds, outbox, tuple(order)


def test_refunds_are_records_listed_oldest_first_and_the_order_refunded_is_their_sum(shop):
    rid, admin = shop["rid"], shop["admin"]
    order = place(shop)
    path = f"/restaurants/{rid}/orders/{order['id']}"
    burger_line = order["items"][0]["id"]
    assert order["payment_status"] == "unpaid" and order["paid_at"] is None

    paid = admin.post(f"{path}/pay")
    assert paid.status_code == 200, paid.text
    assert paid.json()["payment_status"] == "paid" and paid.json()["paid_at"] is not None
    assert admin.post(f"{path}/refunds", json={"amount_cents": 300, "reason": "cold"}).status_code == 200
    by_line = admin.post(f"{path}/refunds", json={"lines": [{"order_item_id": burger_line, "quantity": 1}]})
    assert by_line.status_code == 200, by_line.text
    assert (by_line.json()["refunded_cents"], by_line.json()["payment_status"]) == (1500, "partially_refunded")

    listed = admin.get(f"{path}/refunds").json()
    assert listed["count"] == 2
    first, second = listed["data"]
    assert (first["amount_cents"], first["reason"], first["lines"]) == (300, "cold", [])
    assert (second["amount_cents"], second["lines"]) == (1200, [{"order_item_id": burger_line, "quantity": 1}])
    assert first["by"]["email"] == ADMIN and first["by"]["user_id"] is not None
    assert first["by"]["sub"] == f"user-{first['by']['user_id']}"
    assert first["id"] < second["id"] and first["created_at"] <= second["created_at"]
    assert admin.get(f"{path}/refunds", params={"skip": 1, "limit": 1}).json() == {"data": [second], "count": 2}
    assert admin.get(path).json()["refunded_cents"] == first["amount_cents"] + second["amount_cents"]
    assert shop["staff"].get(f"{path}/refunds").json()["count"] == 2  # staff may read the history

    updates = [e["data"] for e in events(shop) if e["type"] == "order_updated"]
    assert [u["change"] for u in updates] == ["paid", "refund", "refund"]
    assert [u["refund"] for u in updates[1:]] == [first, second]  # the event carries the record as listed
    assert updates[0]["order"]["payment_status"] == "paid"
    assert updates[-1]["order"]["payment_status"] == "partially_refunded"

    rest = admin.post(f"{path}/refunds", json={"amount_cents": 1300, "reason": "closing"})
    assert (rest.json()["refunded_cents"], rest.json()["payment_status"]) == (2800, "refunded")
    assert admin.post(f"{path}/refunds", json={"amount_cents": 1}).status_code == 409


def test_an_order_never_paid_is_never_refunded_even_once_cancelled(shop):
    rid, admin = shop["rid"], shop["admin"]
    order = place(shop)
    path = f"/restaurants/{rid}/orders/{order['id']}"
    assert admin.post(f"{path}/status", json={"status": "cancelled"}).status_code == 200
    before = written(shop, order["id"])
    refused = admin.post(f"{path}/refunds", json={"amount_cents": 100})
    assert refused.status_code == 409 and "never paid" in refused.json()["detail"]
    unpaid = admin.post(f"{path}/pay")
    assert unpaid.status_code == 409 and "cancelled" in unpaid.json()["detail"]
    assert written(shop, order["id"]) == before


def test_a_paid_order_that_is_cancelled_can_be_refunded(shop):
    rid, admin = shop["rid"], shop["admin"]
    order = place(shop)
    path = f"/restaurants/{rid}/orders/{order['id']}"
    assert admin.post(f"{path}/pay").status_code == 200
    assert admin.post(f"{path}/status", json={"status": "cancelled"}).status_code == 200
    refunded = admin.post(f"{path}/refunds", json={"amount_cents": 2800, "reason": "cancelled"})
    assert refunded.status_code == 200 and refunded.json()["payment_status"] == "refunded"


def test_paying_twice_is_refused_and_writes_nothing(shop):
    """Paying is not idempotent by itself: the first stamp is the record (retry with an Idempotency-Key)."""
    rid, staff = shop["rid"], shop["staff"]
    order = place(shop)
    path = f"/restaurants/{rid}/orders/{order['id']}/pay"
    first = staff.post(path)  # staff may take a payment
    assert first.status_code == 200
    before = written(shop, order["id"])
    again = staff.post(path)
    assert again.status_code == 409 and "paid already" in again.json()["detail"]
    assert written(shop, order["id"]) == before
    keyed = staff.post(f"/restaurants/{rid}/orders/{place(shop)['id']}/pay", headers={"Idempotency-Key": "pay-1"})
    replayed = staff.post(f"/restaurants/{rid}/orders/{keyed.json()['id']}/pay", headers={"Idempotency-Key": "pay-1"})
    assert (replayed.status_code, replayed.json()) == (200, keyed.json())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, []),  # neither an amount nor lines
        ({"amount_cents": 0}, ["amount_cents"]),
        ({"amount_cents": "100"}, ["amount_cents"]),
        ({"amount_cents": 100, "tip": 1}, ["tip"]),
        ({"amount_cents": 100, "reason": "x" * 501}, ["reason"]),
        ({"lines": [{"order_item_id": 0, "quantity": 1}]}, ["lines", 0, "order_item_id"]),
        ({"lines": [{"order_item_id": 1, "quantity": 0}]}, ["lines", 0, "quantity"]),
        ({"lines": [{"order_item_id": 1}]}, ["lines", 0, "quantity"]),
        ({"lines": [{"order_item_id": 1, "quantity": 1}] * 101}, ["lines"]),
    ],
)
def test_a_bad_refund_body_is_422_naming_the_field_and_writes_nothing(shop, body, field):
    rid, admin = shop["rid"], shop["admin"]
    order = place(shop)
    assert admin.post(f"/restaurants/{rid}/orders/{order['id']}/pay").status_code == 200
    before = written(shop, order["id"])
    answer = admin.post(f"/restaurants/{rid}/orders/{order['id']}/refunds", json=body)
    assert answer.status_code == 422, answer.text
    assert any(error["loc"][1 : 1 + len(field)] == field for error in answer.json()["detail"]), answer.json()
    assert written(shop, order["id"]) == before


def test_a_refund_that_breaks_a_rule_is_409_and_writes_nothing(shop):
    rid, admin = shop["rid"], shop["admin"]
    order, other = place(shop), place(shop)
    path = f"/restaurants/{rid}/orders/{order['id']}"
    burger_line, fries_line = order["items"][0]["id"], order["items"][1]["id"]
    assert admin.post(f"{path}/pay").status_code == 200
    assert (
        admin.post(f"{path}/refunds", json={"lines": [{"order_item_id": fries_line, "quantity": 1}]}).status_code == 200
    )
    before = written(shop, order["id"])
    broken = {
        "past the total": {"amount_cents": 2401},
        "not a line of this order": {"lines": [{"order_item_id": other["items"][0]["id"], "quantity": 1}]},
        "only 2 not refunded yet": {"lines": [{"order_item_id": burger_line, "quantity": 3}]},
        "only 0 not refunded yet": {"lines": [{"order_item_id": fries_line, "quantity": 1}]},
        "of the lines refunded": {"amount_cents": 1201, "lines": [{"order_item_id": burger_line, "quantity": 1}]},
    }
    for why, body in broken.items():
        answer = admin.post(f"{path}/refunds", json=body)
        assert answer.status_code == 409, (why, answer.text)
        detail = answer.json()["detail"]
        assert why in detail or (why == "past the total" and "exceeds the 2400 cents left" in detail), detail
    assert written(shop, order["id"]) == before


def test_the_refund_and_pay_routes_refuse_bad_paths_and_other_restaurants(shop):
    app, rid, admin = shop["app"], shop["rid"], shop["admin"]
    order = place(shop)
    other_rid = app.add_restaurant("Other", "o@other.example")
    other_admin = app.http(app.api_token("user-other", "admin", other_rid))
    before = written(shop, order["id"])
    for route in ("pay", "refunds"):
        assert admin.post(f"/restaurants/{rid}/orders/abc/{route}", json={"amount_cents": 1}).status_code == 422
        assert admin.post(f"/restaurants/{rid}/orders/0/{route}", json={"amount_cents": 1}).status_code == 422
        assert admin.post(f"/restaurants/{rid}/orders/99999/{route}", json={"amount_cents": 1}).status_code == 404
        path = f"/restaurants/{other_rid}/orders/{order['id']}/{route}"
        assert other_admin.post(path, json={"amount_cents": 1}).status_code == 404  # not theirs
        assert other_admin.post(f"/restaurants/{rid}/orders/{order['id']}/{route}").status_code == 403
    assert (
        shop["staff"].post(f"/restaurants/{rid}/orders/{order['id']}/refunds", json={"amount_cents": 1}).status_code
        == 403
    )
    listing = f"/restaurants/{rid}/orders/{order['id']}/refunds"
    assert admin.get(listing, params={"limit": 0}).status_code == 422
    assert admin.get(listing, params={"skip": -1}).status_code == 422
    assert admin.get(f"/restaurants/{rid}/orders/99999/refunds").status_code == 404
    assert other_admin.get(f"/restaurants/{other_rid}/orders/{order['id']}/refunds").status_code == 404
    assert admin.get(listing).json() == {"data": [], "count": 0}
    assert written(shop, order["id"]) == before

"""REST through the whole app, in-process, on a real SQLite file: scoping, bad input, stock rules, events.

No broker and no server: what the API promises ends at the commit, and `/events` reads the outbox."""

from __future__ import annotations

import pytest

from tests.support import App, add_burger_and_fries


@pytest.fixture
def bistro(app: App):
    """Restaurant A with a menu; restaurant B beside it; admin clients for both."""
    rid = app.add_restaurant("A", "a@example.com")
    other = app.add_restaurant("B", "b@example.com")
    login = app.http().post("/auth/login", json={"email": "a@example.com", "password": "secret-pass"})
    assert login.status_code == 200, login.text
    admin = app.http(login.json()["access_token"])
    other_admin = app.http(app.api_token("user-b", "admin", other))
    category = admin.post(f"/restaurants/{rid}/categories", json={"name": "Burgers", "station": "grill"}).json()
    burger, fries = add_burger_and_fries(admin, rid, stock=10, low_stock=3, category_id=category["id"])
    return {"rid": rid, "other": other, "admin": admin, "other_admin": other_admin, "burger": burger, "fries": fries}


def events(app: App, rid: int, after: int = 0) -> list[dict]:
    client = app.http(app.api_token("reader", "admin", rid))
    return client.get(f"/restaurants/{rid}/events", params={"after": after, "limit": 1000}).json()


def test_login_refuses_wrong_password_and_bad_email(app: App):
    app.add_restaurant("A", "a@example.com")
    http = app.http()
    assert http.post("/auth/login", json={"email": "a@example.com", "password": "nope"}).status_code == 401
    bad = http.post("/auth/login", json={"email": "not-an-email", "password": "x"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "email"]


def test_routes_need_a_valid_api_token(app: App, bistro):
    rid = bistro["rid"]
    assert app.http().get(f"/restaurants/{rid}/orders").status_code == 401
    assert app.http("garbage").get(f"/restaurants/{rid}/orders").status_code == 401
    mqtt_token = app.mqtt_token("user-1", "admin", rid)
    assert app.http(mqtt_token).get(f"/restaurants/{rid}/orders").status_code == 401


def test_an_admin_cannot_read_or_change_another_restaurant(app: App, bistro):
    rid, other_admin = bistro["rid"], bistro["other_admin"]
    before = events(app, rid)
    assert other_admin.get(f"/restaurants/{rid}/orders").status_code == 403
    assert other_admin.get(f"/restaurants/{rid}/menu-items").status_code == 403
    assert other_admin.get(f"/restaurants/{rid}/events").status_code == 403
    order = {"items": [{"menu_item_id": bistro["fries"]["id"], "quantity": 1}]}
    assert other_admin.post(f"/restaurants/{rid}/orders", json=order).status_code == 403
    # B's admin using A's item id on B's own restaurant: not found, nothing written
    assert other_admin.post(f"/restaurants/{bistro['other']}/orders", json=order).status_code == 404
    damage = {"quantity": 1}
    assert (
        other_admin.post(f"/restaurants/{rid}/inventory/{bistro['burger']['id']}/damage", json=damage).status_code
        == 403
    )
    assert events(app, rid) == before
    assert events(app, bistro["other"]) == []


def test_staff_may_take_orders_but_not_change_the_menu(app: App, bistro):
    rid = bistro["rid"]
    staff = app.http(app.api_token("user-s", "staff", rid))
    order = staff.post(
        f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": bistro["fries"]["id"], "quantity": 2}]}
    )
    assert order.status_code == 201
    assert staff.post(f"/restaurants/{rid}/categories", json={"name": "X"}).status_code == 403
    refund = staff.post(f"/restaurants/{rid}/orders/{order.json()['id']}/refunds", json={"amount_cents": 100})
    assert refund.status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": []}, "items"),
        ({"items": [{"menu_item_id": 1, "quantity": 0}]}, "quantity"),
        ({"items": [{"menu_item_id": 1, "quantity": -3}]}, "quantity"),
        ({"items": [{"menu_item_id": "x", "quantity": 1}]}, "menu_item_id"),
        ({"items": [{"menu_item_id": 1, "quantity": 1}], "surprise": True}, "surprise"),
        ({"items": [{"menu_item_id": 1, "quantity": 1, "modifiers": [""]}]}, "modifiers"),
        ({}, "items"),
    ],
)
def test_bad_orders_get_422_with_the_field_and_write_nothing(app: App, bistro, body, field):
    rid = bistro["rid"]
    before = events(app, rid)
    response = bistro["admin"].post(f"/restaurants/{rid}/orders", json=body)
    assert response.status_code == 422
    assert any(field in [str(part) for part in error["loc"]] for error in response.json()["detail"])
    assert bistro["admin"].get(f"/restaurants/{rid}/orders").json() == {"data": [], "count": 0}
    assert events(app, rid) == before


def test_malformed_json_is_a_422(app: App, bistro):
    response = bistro["admin"].post(
        f"/restaurants/{bistro['rid']}/orders", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_an_order_for_more_than_is_available_is_refused_whole(app: App, bistro):
    rid, admin = bistro["rid"], bistro["admin"]
    before = events(app, rid)
    body = {
        "items": [
            {"menu_item_id": bistro["fries"]["id"], "quantity": 1},
            {"menu_item_id": bistro["burger"]["id"], "quantity": 6},
            {"menu_item_id": bistro["burger"]["id"], "quantity": 5},  # 11 burgers in all, 10 in stock
        ]
    }
    response = admin.post(f"/restaurants/{rid}/orders", json=body)
    assert response.status_code == 409
    assert "not enough Burger" in response.json()["detail"]
    burger = admin.get(f"/restaurants/{rid}/menu-items/{bistro['burger']['id']}").json()
    assert (burger["stock_quantity"], burger["available_quantity"]) == (10, 10)
    assert admin.get(f"/restaurants/{rid}/orders").json() == {"data": [], "count": 0}
    assert events(app, rid) == before


def test_an_order_takes_stock_and_alerts_once_when_crossing_the_threshold(app: App, bistro):
    rid, admin, burger_id = bistro["rid"], bistro["admin"], bistro["burger"]["id"]
    start = events(app, rid)[-1]["seq"]

    def order(quantity: int) -> dict:
        response = admin.post(
            f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": burger_id, "quantity": quantity}]}
        )
        assert response.status_code == 201, response.text
        return response.json()

    placed = order(6)  # 10 -> 4: above threshold 3
    assert placed["total_cents"] == 7200 and placed["status"] == "pending"
    order(1)  # 4 -> 3: crosses to at-or-below 3: alert
    order(1)  # 3 -> 2: still low: no new alert
    new = events(app, rid, after=start)
    types = [event["type"] for event in new]
    assert types.count("new_order") == 3
    assert types.count("low_stock") == 1
    low = next(event for event in new if event["type"] == "low_stock")
    assert low["data"]["available_quantity"] == 3
    assert [event["seq"] for event in new] == list(range(start + 1, start + 1 + len(new)))
    notes = admin.get(f"/restaurants/{rid}/notifications").json()
    assert notes["count"] == 1 and [note["kind"] for note in notes["data"]] == ["low_stock"]


def test_damaged_items_reduce_available_but_never_stock(app: App, bistro):
    rid, admin, burger_id = bistro["rid"], bistro["admin"], bistro["burger"]["id"]
    item = admin.post(
        f"/restaurants/{rid}/inventory/{burger_id}/damage", json={"quantity": 4, "reason": "dropped"}
    ).json()
    assert (item["stock_quantity"], item["damaged_quantity"], item["available_quantity"]) == (10, 4, 6)
    too_many = admin.post(f"/restaurants/{rid}/inventory/{burger_id}/damage", json={"quantity": 7})
    assert too_many.status_code == 409
    assert admin.post(f"/restaurants/{rid}/inventory/{burger_id}/damage", json={"quantity": 0}).status_code == 422
    order = admin.post(f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": burger_id, "quantity": 7}]})
    assert order.status_code == 409  # only 6 available


def test_adjust_and_threshold_and_untracked_items(app: App, bistro):
    rid, admin = bistro["rid"], bistro["admin"]
    burger_id, fries_id = bistro["burger"]["id"], bistro["fries"]["id"]
    assert (
        admin.post(f"/restaurants/{rid}/inventory/{burger_id}/adjust", json={"delta": 5}).json()["stock_quantity"] == 15
    )
    assert admin.post(f"/restaurants/{rid}/inventory/{burger_id}/adjust", json={"delta": -16}).status_code == 409
    assert admin.post(f"/restaurants/{rid}/inventory/{fries_id}/adjust", json={"delta": 5}).status_code == 409
    assert admin.post(f"/restaurants/{rid}/inventory/9999/adjust", json={"delta": 5}).status_code == 404
    raised = admin.put(f"/restaurants/{rid}/inventory/{burger_id}/threshold", json={"low_stock_threshold": 15})
    assert raised.status_code == 200
    assert [event["type"] for event in events(app, rid)][-2:] == ["low_stock", "notification"]
    tracked = admin.get(f"/restaurants/{rid}/inventory").json()
    assert [item["id"] for item in tracked["data"]] == [burger_id] and tracked["count"] == 1


def test_order_lifecycle_transitions_and_refunds(app: App, bistro):
    rid, admin = bistro["rid"], bistro["admin"]
    order = admin.post(
        f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": bistro["burger"]["id"], "quantity": 2}]}
    ).json()
    path = f"/restaurants/{rid}/orders/{order['id']}"
    assert admin.post(f"{path}/status", json={"status": "ready"}).status_code == 409  # pending -> ready skips a step
    assert admin.post(f"{path}/status", json={"status": "eaten"}).status_code == 422
    for status in ("preparing", "ready", "completed"):
        moved = admin.post(f"{path}/status", json={"status": status})
        assert moved.status_code == 200 and moved.json()["status"] == status
    assert admin.post(f"{path}/status", json={"status": "cancelled"}).status_code == 409
    assert admin.post(f"{path}/refunds", json={"amount_cents": 100}).status_code == 409  # not paid yet
    assert admin.post(f"{path}/pay").json()["payment_status"] == "paid"
    assert admin.post(f"{path}/refunds", json={"amount_cents": 2401}).status_code == 409
    assert admin.post(f"{path}/refunds", json={"amount_cents": -1}).status_code == 422
    refunded = admin.post(f"{path}/refunds", json={"amount_cents": 1000, "reason": "cold"}).json()
    assert (refunded["refunded_cents"], refunded["payment_status"]) == (1000, "partially_refunded")
    assert admin.get(path).json()["version"] == 6
    assert admin.get(f"/restaurants/{rid}/orders/99999").status_code == 404


def test_cancelling_gives_the_stock_back(app: App, bistro):
    rid, admin, burger_id = bistro["rid"], bistro["admin"], bistro["burger"]["id"]
    order = admin.post(
        f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": burger_id, "quantity": 4}]}
    ).json()
    assert admin.get(f"/restaurants/{rid}/menu-items/{burger_id}").json()["stock_quantity"] == 6
    admin.post(f"/restaurants/{rid}/orders/{order['id']}/status", json={"status": "cancelled"})
    assert admin.get(f"/restaurants/{rid}/menu-items/{burger_id}").json()["stock_quantity"] == 10


def test_items_not_available_today_are_refused(app: App, bistro):
    rid, admin = bistro["rid"], bistro["admin"]
    import datetime

    not_today = [day for day in range(1, 8) if day != datetime.date.today().isoweekday()][:1]
    item = admin.patch(f"/restaurants/{rid}/menu-items/{bistro['fries']['id']}", json={"available_days": not_today})
    assert item.status_code == 200
    response = admin.post(
        f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": bistro["fries"]["id"], "quantity": 1}]}
    )
    assert response.status_code == 409
    assert (
        admin.patch(f"/restaurants/{rid}/menu-items/{bistro['fries']['id']}", json={"available_days": [0]}).status_code
        == 422
    )
    assert (
        admin.patch(f"/restaurants/{rid}/menu-items/{bistro['fries']['id']}", json={"available_days": []}).status_code
        == 200
    )


def test_menu_crud_and_delete_rules(app: App, bistro):
    rid, admin, other_admin = bistro["rid"], bistro["admin"], bistro["other_admin"]
    categories = admin.get(f"/restaurants/{rid}/categories").json()["data"]
    category_id = categories[0]["id"]
    assert admin.patch(f"/restaurants/{rid}/categories/{category_id}", json={"name": "Grill"}).json()["name"] == "Grill"
    assert admin.patch(f"/restaurants/{rid}/categories/{category_id}", json={"name": ""}).status_code == 422
    assert admin.delete(f"/restaurants/{rid}/categories/{category_id}").status_code == 409  # still has items
    assert other_admin.get(f"/restaurants/{bistro['other']}/categories/{category_id}").status_code == 404
    foreign_menu = other_admin.post(f"/restaurants/{bistro['other']}/menus", json={"name": "B"}).json()
    cross = admin.post(
        f"/restaurants/{rid}/menu-items", json={"menu_id": foreign_menu["id"], "name": "X", "price_cents": 1}
    )
    assert cross.status_code == 404
    admin.post(f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": bistro["fries"]["id"], "quantity": 1}]})
    assert admin.delete(f"/restaurants/{rid}/menu-items/{bistro['fries']['id']}").status_code == 409
    empty = admin.post(f"/restaurants/{rid}/categories", json={"name": "Empty"}).json()
    assert admin.delete(f"/restaurants/{rid}/categories/{empty['id']}").status_code == 204
    assert admin.get(f"/restaurants/{rid}/categories/{empty['id']}").status_code == 404
    kinds = [event["type"] for event in events(app, rid)]
    assert "category_updated" in kinds and "menu_updated" in kinds


def test_events_endpoint_pages_by_seq(app: App, bistro):
    rid, admin = bistro["rid"], bistro["admin"]
    every = events(app, rid)
    assert [event["seq"] for event in every] == list(range(1, len(every) + 1))
    page = admin.get(f"/restaurants/{rid}/events", params={"after": 2, "limit": 2}).json()
    assert [event["seq"] for event in page] == [3, 4]
    for event in page:
        assert set(event) == {"v", "id", "seq", "type", "restaurant_id", "ts", "data"}
        assert event["restaurant_id"] == rid and event["ts"].endswith("Z")
    assert admin.get(f"/restaurants/{rid}/events", params={"after": -1}).status_code == 422
    assert admin.get(f"/restaurants/{rid}/events", params={"limit": 0}).status_code == 422
    assert admin.get(f"/restaurants/{rid}/events", params={"limit": 100000}).status_code == 422


def test_mqtt_token_exchange(app: App, bistro):
    rid, admin = bistro["rid"], bistro["admin"]
    issued = admin.post("/auth/mqtt-token").json()
    claims = app.tokens.verify(issued["token"], audience="mqtt")
    assert claims["rid"] == rid and claims["role"] == "admin" and claims["sub"] == issued["client_id_prefix"]
    assert issued["expires_in"] == 900


def test_openapi_docs_are_served(app: App):
    spec = app.http().get("/openapi.json").json()
    assert "/api/v1/restaurants/{restaurant_id}/events" in spec["paths"]


def test_only_a_super_admin_adds_restaurants_and_admins_see_their_own(app: App, bistro):
    operator = app.http(app.api_token("operator", "super_admin", None))
    created = operator.post("/restaurants", json={"name": "  Chain 3  "})
    assert created.status_code == 201 and created.json()["name"] == "Chain 3"
    for bad in ({}, {"name": ""}, {"name": "x" * 121}, {"name": 7}, {"name": "ok", "extra": 1}):
        assert operator.post("/restaurants", json=bad).status_code == 422, bad
    assert bistro["admin"].post("/restaurants", json={"name": "Mine"}).status_code == 403
    assert [r["id"] for r in bistro["admin"].get("/restaurants").json()["data"]] == [bistro["rid"]]
    assert created.json()["id"] in [r["id"] for r in operator.get("/restaurants").json()["data"]]

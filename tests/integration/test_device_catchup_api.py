"""The devices' catch-up routes through the real app: who may call them, and what each device sees.

In-process over a real SQLite file; the topic ACL is config/acl.toml, the broker's own policy.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from bridge.routing import publications
from core.services.outbox import event_topics
from tests.support import App

PRINTER, TABLET = "printer-grill", "kds-1"


@pytest.fixture
def kitchen(app: App) -> dict[str, Any]:
    """Restaurant A with a grill printer, a bar printer and a tablet; restaurant B beside it."""
    rid = app.add_restaurant("A", "a@example.com")
    other = app.add_restaurant("B", "b@example.com")
    burger = app.add_menu_item(rid, "Burger", station="grill")
    beer = app.add_menu_item(rid, "Beer", station="bar", enable_stock_tracking=True, stock_quantity=50)
    return {
        "rid": rid,
        "other": other,
        "burger": burger,
        "beer": beer,
        "admin": app.http(app.api_token("admin-a", "admin", rid)),
        "printer": app.add_device(rid, PRINTER, "printer", station="grill"),
        "bar": app.add_device(rid, "printer-bar", "printer", station="bar"),
        "tablet": app.add_device(rid, TABLET, "tablet"),
        "other_tablet": app.add_device(other, "kds-b", "tablet"),
    }


def place(kitchen: dict[str, Any], *item_ids: int) -> dict[str, Any]:
    body = {"items": [{"menu_item_id": item_id, "quantity": 1} for item_id in item_ids], "table_name": "T1"}
    response = kitchen["admin"].post(f"/restaurants/{kitchen['rid']}/orders", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def read(app: App, token: str, rid: int, did: str, path: str = "events", **params: Any):
    return app.http(token).get(f"/restaurants/{rid}/devices/{did}/{path}", params=params)


def test_a_printer_reads_its_stations_tickets_and_a_tablet_its_orders_and_tickets(app: App, kitchen):
    rid = kitchen["rid"]
    first = place(kitchen, kitchen["burger"], kitchen["beer"])  # a grill ticket and a bar ticket
    stock = kitchen["admin"].patch(f"/restaurants/{rid}/menu-items/{kitchen['beer']}", json={"price_cents": 600})
    assert stock.status_code == 200, stock.text
    second = place(kitchen, kitchen["beer"])

    page = read(app, kitchen["printer"], rid, PRINTER, type="kitchen_ticket").json()
    tickets = [event["data"]["ticket"] for event in page["events"]]
    assert [(t["order_id"], t["station"]) for t in tickets] == [(first["id"], "grill")]
    assert page["next_after"] == page["head"] > 0

    # without a type filter the printer also gets what its ACL lets it read: open-order state, not menus
    everything = read(app, kitchen["printer"], rid, PRINTER).json()["events"]
    assert {event["type"] for event in everything} == {"new_order", "kitchen_ticket"}
    assert all(
        event["type"] != "kitchen_ticket" or event["data"]["ticket"]["station"] == "grill" for event in everything
    )

    tablet = read(app, kitchen["tablet"], rid, TABLET, limit=1000).json()["events"]
    assert {event["type"] for event in tablet} == {"new_order", "kitchen_ticket"}
    assert {event["data"]["ticket"]["station"] for event in tablet if event["type"] == "kitchen_ticket"} == {
        "grill",
        "bar",
    }
    seqs = [event["seq"] for event in tablet]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert second["id"] in {event["data"]["order"]["id"] for event in tablet if event["type"] == "new_order"}


def test_pages_go_on_from_next_after_until_the_head(app: App, kitchen):
    rid = kitchen["rid"]
    orders = [place(kitchen, kitchen["burger"])["id"] for _ in range(5)]
    seen: list[int] = []
    after, pages = 0, 0
    while True:
        page = read(app, kitchen["printer"], rid, PRINTER, after=after, limit=2, type="kitchen_ticket").json()
        seen += [event["data"]["ticket"]["order_id"] for event in page["events"]]
        assert page["next_after"] > after
        after, pages = page["next_after"], pages + 1
        if after == page["head"]:
            break
    assert seen == orders and pages == 3
    caught_up = read(app, kitchen["printer"], rid, PRINTER, after=after).json()
    assert caught_up == {"events": [], "next_after": after, "head": after}


def test_the_snapshot_lists_open_orders_with_the_seq_to_go_on_from(app: App, kitchen):
    rid = kitchen["rid"]
    kept = place(kitchen, kitchen["burger"])
    closed = place(kitchen, kitchen["burger"])
    cancel = kitchen["admin"].post(f"/restaurants/{rid}/orders/{closed['id']}/status", json={"status": "cancelled"})
    assert cancel.status_code == 200, cancel.text
    snapshot = read(app, kitchen["tablet"], rid, TABLET, "snapshot").json()
    assert [order["id"] for order in snapshot["open_orders"]] == [kept["id"]]
    assert snapshot["open_orders"][0]["items"][0]["station"] == "grill"
    assert snapshot["seq"] == read(app, kitchen["tablet"], rid, TABLET).json()["head"]
    assert read(app, kitchen["other_tablet"], kitchen["other"], "kds-b", "snapshot").json()["open_orders"] == []


def test_a_seq_the_bus_cannot_continue_answers_410_with_the_snapshot(app: App, kitchen):
    rid = kitchen["rid"]
    place(kitchen, kitchen["burger"])
    head = read(app, kitchen["tablet"], rid, TABLET).json()["head"]
    gone = read(app, kitchen["tablet"], rid, TABLET, after=head + 1)
    assert gone.status_code == 410, gone.text
    assert gone.json()["snapshot"] == f"/api/v1/restaurants/{rid}/devices/{TABLET}/snapshot"


def forged(app: App, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": PRINTER, "role": "printer", "aud": "mqtt", "iat": now, "nbf": now, "exp": now + 60, "jti": "x"}
    return jwt.encode({**body, **claims}, app.tokens.key, algorithm="HS256")


def test_only_the_device_itself_with_a_valid_broker_token(app: App, kitchen):
    rid, other = kitchen["rid"], kitchen["other"]
    ok = read(app, kitchen["printer"], rid, PRINTER)
    assert ok.status_code == 200, ok.text
    cases = {
        "no token": (app.http().get(f"/restaurants/{rid}/devices/{PRINTER}/events"), 401),
        "an API token": (read(app, app.api_token("admin-a", "admin", rid), rid, PRINTER), 401),
        "an API token of the device": (read(app, app.api_token(PRINTER, "printer", rid), rid, PRINTER), 401),
        "expired": (read(app, forged(app, rid=rid, exp=int(time.time()) - 1), rid, PRINTER), 401),
        "another key": (read(app, jwt.encode({"sub": PRINTER}, "k" * 32, algorithm="HS256"), rid, PRINTER), 401),
        "garbage": (read(app, "not-a-jwt", rid, PRINTER), 401),
        "another device's path": (read(app, kitchen["printer"], rid, TABLET), 403),
        "another restaurant's path": (read(app, kitchen["printer"], other, PRINTER), 403),
        "another restaurant's device": (read(app, kitchen["other_tablet"], rid, "kds-b"), 403),
        "a service token": (read(app, app.mqtt_token("orderbus-relay", "service", None), rid, PRINTER), 403),
        "a dashboard's broker token": (read(app, app.mqtt_token(PRINTER, "admin", rid), rid, PRINTER), 403),
        "a superseded token": (read(app, forged(app, rid=rid, station="grill"), rid, PRINTER), 401),
        "a bad rid": (read(app, kitchen["printer"], 2**64, PRINTER), 422),
        "a bad after": (read(app, kitchen["printer"], rid, PRINTER, after=2**64), 422),
        "a bad type": (read(app, kitchen["printer"], rid, PRINTER, type="everything"), 422),
    }
    wrong = {name: (got.status_code, want) for name, (got, want) in cases.items() if got.status_code != want}
    assert wrong == {}
    snapshot = read(app, kitchen["printer"], rid, TABLET, "snapshot")
    assert snapshot.status_code == 403


def test_a_revoked_device_is_refused(app: App, kitchen):
    rid = kitchen["rid"]
    assert kitchen["admin"].delete(f"/restaurants/{rid}/devices/{PRINTER}").status_code == 204
    for path in ("events", "snapshot"):
        refused = read(app, kitchen["printer"], rid, PRINTER, path)
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"], refused.text
    assert read(app, kitchen["tablet"], rid, TABLET).status_code == 200


def test_a_reissued_token_replaces_the_old_one(app: App, kitchen):
    rid = kitchen["rid"]
    reissued = kitchen["admin"].post(f"/restaurants/{rid}/devices/{PRINTER}/token", json={"ttl_days": 30})
    assert reissued.status_code == 200, reissued.text
    assert read(app, kitchen["printer"], rid, PRINTER).status_code == 401
    assert read(app, reissued.json()["token"], rid, PRINTER).status_code == 200


def test_event_topics_are_the_topics_the_relay_publishes_on(app: App, kitchen):
    """The API filters by `event_topics`; the relay publishes by `bridge.routing`: they must agree."""
    rid = kitchen["rid"]
    order = place(kitchen, kitchen["burger"], kitchen["beer"])
    admin = kitchen["admin"]
    assert admin.post(f"/restaurants/{rid}/orders/{order['id']}/status", json={"status": "cancelled"}).is_success
    assert admin.post(f"/restaurants/{rid}/inventory/{kitchen['beer']}/adjust", json={"delta": 3}).is_success
    salad = app.add_menu_item(rid, "Salad")  # never ordered, so it can be deleted
    assert admin.delete(f"/restaurants/{rid}/menu-items/{salad}").is_success
    envelopes = app.http(app.api_token("r", "admin", rid)).get(f"/restaurants/{rid}/events?limit=1000").json()
    assert len({envelope["type"] for envelope in envelopes}) >= 5
    for envelope in envelopes:
        assert event_topics(envelope) == [p.topic for p in publications(envelope)], envelope["type"]

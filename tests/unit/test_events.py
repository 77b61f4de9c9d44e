"""The payloads on the bus, pinned key by key: they are the contract with dashboards and devices,
typed apart from the REST schemas, so a change to either must show up here before it ships."""

from __future__ import annotations

from datetime import UTC, date, datetime

from core import events
from core.domain import OrderStatus, Stock
from core.models import Category, Device, Menu, MenuItem, Notification, Order, OrderItem, Refund, Ticket

MOMENT = datetime(2026, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC)
ORDER = Order(
    id=7,
    restaurant_id=1,
    number=3,
    business_date=date(2026, 3, 4),
    status=OrderStatus.READY,
    table_name="T4",
    created_at=MOMENT,
    updated_at=MOMENT,
)
LINE = OrderItem(id=3, order_id=7, menu_item_id=2, name="Fries", quantity=2, unit_price_cents=450, station="grill")
ITEM = MenuItem(
    id=2,
    restaurant_id=1,
    menu_id=1,
    name="Fries",
    price_cents=450,
    enable_stock_tracking=True,
    stock_quantity=9,
    damaged_quantity=2,
)
ORDER_KEYS = [
    "id",
    "restaurant_id",
    "number",
    "business_date",
    "status",
    "table_name",
    "pickup_name",
    "server_name",
    "notes",
    "total_cents",
    "refunded_cents",
    "version",
    "created_at",
    "updated_at",
    "paid_at",
    "payment_status",
    "items",
]
ITEM_KEYS = [
    "id",
    "restaurant_id",
    "menu_id",
    "category_id",
    "name",
    "description",
    "price_cents",
    "available",
    "available_days",
    "enable_stock_tracking",
    "stock_quantity",
    "damaged_quantity",
    "low_stock_threshold",
    "low_stock_clear_level",
    "low_stock_alerted",
    "unit_weight_grams",
    "available_quantity",
]


def test_order_events_carry_the_order_with_its_lines():
    new = events.new_order(ORDER, [LINE])
    assert new.type == "new_order" and list(new.data) == ["order"]
    order = new.data["order"]
    assert list(order) == ORDER_KEYS
    assert order["status"] == "ready" and order["created_at"] == "2026-03-04T05:06:07.890000Z"
    assert order["items"] == [
        {
            "id": 3,
            "menu_item_id": 2,
            "name": "Fries",
            "quantity": 2,
            "unit_price_cents": 450,
            "modifiers": [],
            "notes": "",
            "course": None,
            "station": "grill",
        }
    ]
    assert (order["paid_at"], order["payment_status"]) == (None, "unpaid")
    record = Refund(
        id=5, order_id=7, amount_cents=100, reason="cold", created_at=MOMENT.replace(tzinfo=None), by_sub="user-2",
        by_user_id=2, by_email="ann@example.com", lines=[{"order_item_id": 3, "quantity": 1}],
    )  # fmt: skip
    refund = events.order_updated(ORDER, [LINE], "refund", refund=record)
    assert refund.type == "order_updated" and list(refund.data) == ["order", "change", "refund"]
    assert refund.data["refund"] == {
        "id": 5,
        "order_id": 7,
        "amount_cents": 100,
        "reason": "cold",
        "by": {"sub": "user-2", "user_id": 2, "email": "ann@example.com"},
        "created_at": "2026-03-04T05:06:07.890000Z",  # UTC even when SQLite hands it back without a zone
        "lines": [{"order_item_id": 3, "quantity": 1}],
    }
    assert list(events.order_updated(ORDER, [], "status").data) == ["order", "change"]


def test_stock_events_carry_the_item_and_what_is_available():
    updated = events.inventory_updated(ITEM, "dropped", "written_off")
    assert updated.type == "inventory_updated" and list(updated.data) == ["item", "reason", "kind"]
    assert (updated.data["reason"], updated.data["kind"]) == ("dropped", "written_off")
    assert list(updated.data["item"]) == ITEM_KEYS and updated.data["item"]["available_quantity"] == 7
    low = events.low_stock(ITEM, Stock(9, 2, 8))
    assert low.type == "low_stock"
    assert low.data == {"item": updated.data["item"], "available_quantity": 7, "low_stock_threshold": 8}


def test_an_untracked_item_has_no_available_quantity_rather_than_none_left():
    """0 would read as sold out on every screen; an item whose stock is not counted is never short."""
    untracked = MenuItem(id=3, restaurant_id=1, menu_id=1, name="Water", price_cents=0, stock_quantity=5)
    assert events.item_state(untracked)["available_quantity"] is None
    assert events.item_state(ITEM)["available_quantity"] == 7


def test_menu_and_category_events_say_what_happened_to_which_row():
    assert events.menu_item_changed("deleted", ITEM).data == {"action": "deleted", "menu_item": events.item_state(ITEM)}
    menu = events.menu_changed("created", Menu(id=1, restaurant_id=1, name="Dinner"))
    assert (menu.type, menu.data) == (
        "menu_updated",
        {"action": "created", "menu": {"id": 1, "restaurant_id": 1, "name": "Dinner", "active": True}},
    )
    category = events.category_changed("updated", Category(id=4, restaurant_id=1, name="Bar", station="bar"))
    assert category.type == "category_updated"
    assert category.data["category"] == {"id": 4, "restaurant_id": 1, "name": "Bar", "position": 0, "station": "bar"}


def test_notification_kitchen_ticket_and_device_events():
    note = events.notification(Notification(id=9, restaurant_id=1, kind="low_stock", title="Low", created_at=MOMENT))
    assert note.data == {
        "notification": {
            "id": 9,
            "kind": "low_stock",
            "title": "Low",
            "body": "",
            "read": False,
            "created_at": "2026-03-04T05:06:07.890000Z",
            "read_at": None,
            "dismissed_at": None,
        }
    }
    read = events.notification_updated("read", [9, 10], MOMENT)
    assert read.type == "notification_updated"
    assert read.data == {"action": "read", "ids": [9, 10], "at": "2026-03-04T05:06:07.890Z"}
    ticket = Ticket(id=5, restaurant_id=1, order_id=7, version=1, station="grill", kind="new", created_at=MOMENT)
    sent = events.kitchen_ticket(ticket, ORDER, events.ticket_items([LINE]))
    assert sent.type == "kitchen_ticket" and list(sent.data) == ["ticket"]
    assert sent.data["ticket"]["created_at"] == "2026-03-04T05:06:07.890Z"
    assert sent.data["ticket"]["items"] == [
        {"name": "Fries", "quantity": 2, "modifiers": [], "notes": "", "course": None}
    ]
    assert events.kitchen_ticket(ticket, ORDER, events.ticket_items([LINE]), resent=True).data["resent"] is True
    naive = MOMENT.replace(tzinfo=None)  # as SQLite hands it back
    device = Device(id="p1", restaurant_id=1, kind="printer", name="P", station="grill", created_at=naive)
    updated = events.device_updated("revoked", device)
    assert updated.type == "device_updated" and updated.data["action"] == "revoked"
    assert updated.data["device"]["created_at"] == "2026-03-04T05:06:07.890000Z"
    assert "token_jti" not in updated.data["device"]


def test_the_envelope():
    env = events.envelope(event_id="e1", seq=3, type_="new_order", restaurant_id=1, data={"order": {}})
    assert list(env) == ["v", "id", "seq", "type", "restaurant_id", "ts", "data"]
    assert env["v"] == 1 and env["ts"].endswith("Z")

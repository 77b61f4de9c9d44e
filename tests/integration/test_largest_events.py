"""The largest valid input still travels as one MQTT packet.

An event the broker refuses (`packet_too_large`) would hold up the relay, so the input limits are
derived from the packet limit (core/sizes.py). This builds the largest input the REST API accepts
(every list at its longest, every string at its longest of astral characters, 4 bytes each in the
relay's UTF-8 JSON) on a running stack, and receives every event it makes over MQTT: the order's
`new_order`, its retained open-order state, its kitchen ticket (all lines at one station), the
refund's `order_updated` (its record naming every line), and the menu item, stock, low-stock,
notification and device events.
"""

from __future__ import annotations

from typing import Any

from core import sizes
from devices.ticket import parse_envelope
from tests.support import Received, Stack, Subscriber, wait_for

WIDE = "\N{GRINNING FACE}"  # astral: 4 bytes in UTF-8, the widest character


def wide(chars: int) -> str:
    return WIDE * chars


def packet_bytes(message: Received) -> int:
    """The PUBLISH packet's remaining length (what the broker bounds) as it was carried: topic length
    and topic, packet id, payload."""
    return 2 + len(message.topic.encode()) + 2 + len(message.payload)


def largest_order(item_id: int) -> dict[str, Any]:
    line = {
        "menu_item_id": item_id,
        "quantity": sizes.MAX_LINE_QUANTITY,
        "modifiers": [wide(sizes.MODIFIER_CHARS)] * sizes.MODIFIERS_PER_LINE,
        "notes": wide(sizes.LINE_NOTES_CHARS),
        "course": wide(sizes.COURSE_CHARS),
    }
    return {
        "items": [line] * sizes.MAX_ORDER_LINES,
        "table_name": wide(sizes.TABLE_CHARS),
        "pickup_name": wide(sizes.PERSON_CHARS),
        "server_name": wide(sizes.PERSON_CHARS),
        "notes": wide(sizes.ORDER_NOTES_CHARS),
    }


def test_the_largest_valid_input_makes_events_the_broker_carries(stack: Stack, subscribers: list[Subscriber]) -> None:
    rid = stack.add_restaurant("Big", "big@example.com")
    admin = stack.http(stack.api_token("big-admin", "admin", rid))
    watcher = Subscriber(stack.settings.mqtt_port, "watcher", stack.mqtt_token("watcher", "admin", rid))
    subscribers.append(watcher)
    assert watcher.connect() == 0
    assert watcher.subscribe(f"restaurant/{rid}/#") == 1
    station = "s" * 32

    menu = admin.post(f"/restaurants/{rid}/menus", json={"name": wide(sizes.NAME_CHARS)})
    category = admin.post(f"/restaurants/{rid}/categories", json={"name": wide(sizes.NAME_CHARS), "station": station})
    assert menu.status_code == category.status_code == 201, (menu.text, category.text)
    stock = sizes.MAX_ORDER_LINES * sizes.MAX_LINE_QUANTITY + 10
    item = admin.post(
        f"/restaurants/{rid}/menu-items",
        json={
            "menu_id": menu.json()["id"],
            "category_id": category.json()["id"],
            "name": wide(sizes.NAME_CHARS),
            "description": wide(sizes.DESCRIPTION_CHARS),
            "price_cents": 10_000_000,
            "available_days": [1, 2, 3, 4, 5, 6, 7],
            "enable_stock_tracking": True,
            "stock_quantity": stock,
            "low_stock_threshold": 100,
            "low_stock_clear_level": 1_000_000,
            "unit_weight_grams": 99_999.5,
        },
    )
    assert item.status_code == 201, item.text
    item_id = item.json()["id"]

    order = admin.post(f"/restaurants/{rid}/orders", json=largest_order(item_id))
    assert order.status_code == 201, order.text[:300]
    order_id = order.json()["id"]
    assert admin.post(f"/restaurants/{rid}/orders/{order_id}/pay").status_code == 200
    every_line = [{"order_item_id": line["id"], "quantity": line["quantity"]} for line in order.json()["items"]]
    refund = admin.post(  # the largest refund record: every line, the longest reason
        f"/restaurants/{rid}/orders/{order_id}/refunds",
        json={"amount_cents": 10_000_000, "reason": wide(sizes.REASON_CHARS), "lines": every_line},
    )
    assert refund.status_code == 200, refund.text[:300]
    device = admin.post(
        f"/restaurants/{rid}/devices",
        json={"id": "p" * 64, "kind": "printer", "name": wide(sizes.DEVICE_NAME_CHARS), "station": station},
    )
    assert device.status_code == 201, device.text[:300]

    got: list[Received] = []

    def everything_arrived() -> bool:
        got.extend(watcher.drain(quiet=0.2))
        kinds = {message.json().get("type") for message in got if message.payload}
        wanted = {"new_order", "order_updated", "kitchen_ticket", "low_stock", "notification", "device_updated"}
        return wanted <= kinds and any("/orders/open/" in message.topic for message in got)

    wait_for(everything_arrived, timeout=20)
    for message in got:
        if message.payload:
            assert packet_bytes(message) <= sizes.MAX_PACKET_BYTES, (message.topic, packet_bytes(message))

    by_type = {
        message.json()["type"]: message for message in got if message.payload and "/orders/open/" not in message.topic
    }
    new_order = by_type["new_order"].json()["data"]["order"]
    assert len(new_order["items"]) == sizes.MAX_ORDER_LINES
    assert new_order["items"][0]["modifiers"] == [wide(sizes.MODIFIER_CHARS)] * sizes.MODIFIERS_PER_LINE
    assert new_order["notes"] == wide(sizes.ORDER_NOTES_CHARS)
    refunded = [m.json()["data"] for m in got if m.payload and m.json()["type"] == "order_updated"]
    record = next(data["refund"] for data in refunded if data["change"] == "refund")
    assert record["reason"] == wide(sizes.REASON_CHARS) and len(record["lines"]) == sizes.MAX_ORDER_LINES
    open_states = [m for m in got if m.topic == f"restaurant/{rid}/orders/open/{order_id}" and m.payload]
    assert open_states and len(open_states[0].json()["data"]["order"]["items"]) == sizes.MAX_ORDER_LINES
    ticket = parse_envelope(by_type["kitchen_ticket"].payload)  # a printer takes it
    assert len(ticket.items) == sizes.MAX_ORDER_LINES and ticket.station == station
    menu_items = [m.json()["data"] for m in got if m.payload and m.json()["type"] == "menu_updated"]
    assert any(data.get("menu_item", {}).get("description") == wide(sizes.DESCRIPTION_CHARS) for data in menu_items)
    assert WIDE * sizes.NAME_CHARS in by_type["notification"].json()["data"]["notification"]["title"]
    assert by_type["device_updated"].json()["data"]["device"]["name"] == wide(sizes.DEVICE_NAME_CHARS)


def test_one_line_more_than_the_largest_order_is_refused(stack: Stack) -> None:
    rid = stack.add_restaurant("Big", "big@example.com")
    admin = stack.http(stack.api_token("big-admin", "admin", rid))
    item_id = stack.add_menu_item(rid, "Soup")
    body = largest_order(item_id)
    body["items"].append(body["items"][0])
    assert admin.post(f"/restaurants/{rid}/orders", json=body).status_code == 422
    body = largest_order(item_id)
    body["items"][0] = body["items"][0] | {"notes": wide(sizes.LINE_NOTES_CHARS + 1)}
    assert admin.post(f"/restaurants/{rid}/orders", json=body).status_code == 422


def test_the_limits_leave_a_usable_order() -> None:
    """Widening a per-line limit costs lines: an order shorter than this would be too short to take."""
    assert sizes.MAX_ORDER_LINES >= 60  # a large party's order, every line at its longest
    line_bytes = sizes.BYTES_PER_CHAR * (
        sizes.NAME_CHARS + sizes.MODIFIERS_PER_LINE * sizes.MODIFIER_CHARS + sizes.LINE_NOTES_CHARS + sizes.COURSE_CHARS
    )
    assert sizes.MAX_ORDER_LINES * line_bytes < sizes.MAX_PACKET_BYTES
